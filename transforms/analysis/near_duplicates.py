"""Groups of near-identical pictures (the same photo re-encoded, resized, cropped by a few pixels,
under another name), found from the perceptual hashes the conversion computed
(``transforms.image.image_measures``), in a cost that grows with the number of images, not its
square.

Locality-sensitive hashing by bands: the 64-bit hash is cut into ``NUM_BANDS`` bands of
``BAND_BITS`` bits; two hashes within 3 bits of each other agree on at least one whole band
(pigeonhole), and most pairs within ``--near_duplicate_distance`` (default
``DEFAULT_DISTANCE``) do too (the recall measured by ``bench/near_duplicates.py`` is in
docs/images.md). Only images sharing a band value are ever compared::

    ConvertedExample (with measures)
      -> ((band, top PREFIX_BITS of its value), [(band value, phash as int64, node), ...])
                                                  NUM_BANDS entries per image, batched per bundle
      -> GroupByKey -> buckets by whole band value                     candidates
      -> confirmed links: Hamming distance <= distance       (node, node), or (node, ...)
                                                              for a set of equal hashes
      -> all links, one list -> connected components (union-find)      DuplicateGroup('near')

With 16-bit bands a bucket holds N / 65,536 unrelated images on average, so the candidate pairs
grow as N^2 / 2^17 per band: 30 million Hamming distances at a million images, a few per image.
The GroupByKey keys are coarser (4 x 2^PREFIX_BITS) and batched per bundle, so that the shuffle
carries no element per image; a key holds N / 256 images per band.
The edges are only those between near-identical files, so the one worker that joins them into
groups holds state for the duplicated files, not for every image. Identical hashes in a bucket
(byte-identical copies, blank frames, copies re-saved with other metadata) are one link of
all of them rather than pairs, so a thousand blank frames cost one element of a thousand
nodes, not half a million pairs (nor a chain of 999 pairs, each node twice).

A group is reported as ``near`` when it holds at least two different contents (SHA-256): a set
of byte-identical files alone is an ``exact`` group (``transforms.analysis.dedup``). Flips and
rotations change the hash completely and are not found.
"""

import collections
import itertools
from typing import Dict, Iterable, List, Optional, Tuple

import apache_beam as beam

from transforms.analysis.dedup import NEAR, DuplicateFile, DuplicateGroup, group_of
from transforms.batches import BatchPerKeyFn, entries_in
from transforms.elements import FAILURES_TAG, METRICS_NAMESPACE, STAGE_DUPLICATE, Failure
from transforms.image.image_measures import ImageMeasures, hamming

DEFAULT_DISTANCE = 10
"""Hashes at most this many bits apart (of 64) are the same picture. Validated by
``bench/near_duplicates.py`` on the 397 hymenoptera JPEG photos: no two distinct photos are
within 12 bits, re-encoded or halved copies are within 4, copies cropped by 2% per side within
12 (recall and false matches per edit in docs/images.md)."""

MAX_DISTANCE = 16
"""The largest ``--near_duplicate_distance`` accepted: beyond it distinct photos match
(13 bits apart at the closest among the 78,606 pairs of hymenoptera photos)."""

NUM_BANDS = 4
BAND_BITS = 16
_BAND_MASK = (1 << BAND_BITS) - 1

Node = Tuple[str, str, Optional[str], bytes]
"""A file of the graph: (relative path, split, class name, SHA-256 of its source: the 32-byte
digest in the job, any value that tells two contents apart); a plain tuple, which Beam's coder
encodes natively (a NamedTuple it would pickle)."""


def band_keys(phash: int) -> List[Tuple[int, int]]:
  """The LSH keys of a 64-bit hash: ``[(band index, band value)]``, ``NUM_BANDS`` of them."""
  return [(band, (phash >> (band * BAND_BITS)) & _BAND_MASK) for band in range(NUM_BANDS)]


PREFIX_BITS = 8
"""The GroupByKey key of a band is its index and the top ``PREFIX_BITS`` bits of its value
(4 x 256 keys): each worker batches the images of a bundle by key before the shuffle, so a
bundle sends at most 1,024 elements whatever its size (a key per band value would cost four
shuffled elements per image, measured at about 7% of the job), and the grouped step splits a
key's images by their whole band value again."""

_HASH_MASK = (1 << 64) - 1


def _as_int64(phash: int) -> int:
  """A 64-bit hash as the signed int64 of the same bits (``& _HASH_MASK`` gives it back):
  Beam's coder writes an int64 as a varint, and pickles a larger int (half of all hashes)."""
  return phash - (1 << 64) if phash >> 63 else phash


def _band_entries(example):
  """ConvertedExample -> ((band, value prefix), (band value, phash as a signed int64, node)) for
  each of its bands; none without measures."""
  if example.measures is None:
    return
  phash = ImageMeasures.of(example).phash
  # the digest's 32 bytes rather than its 64 hex digits: each node travels four times
  node = (example.relpath, example.split, example.label, bytes.fromhex(example.source_sha256))
  carried = _as_int64(phash)
  for band, value in band_keys(phash):
    yield (band, value >> (BAND_BITS - PREFIX_BITS)), (value, carried, node)


def _edges_of_key(element, distance: int) -> Iterable[Tuple[Node, ...]]:
  """((band, prefix), [batches]) -> the confirmed links of each bucket (whole band value)."""
  (band, _), batches = element
  buckets: Dict[int, list] = collections.defaultdict(list)
  for value, carried, node in entries_in(batches):
    buckets[value].append((carried & _HASH_MASK, node))
  for members in buckets.values():
    if len(members) > 1:
      yield from bucket_edges(members, distance, band)


def _shared_earlier_band(hash_a: int, hash_b: int, band: int) -> bool:
  """True when two hashes agree on a band before ``band`` (whose bucket finds the pair)."""
  differing = hash_a ^ hash_b
  return any(not (differing >> (earlier * BAND_BITS)) & _BAND_MASK for earlier in range(band))


def bucket_edges(members: Iterable[Tuple[int, Node]], distance: int, band: int = 0
                 ) -> Iterable[Tuple[Node, ...]]:
  """The confirmed links of one bucket of band ``band``: tuples of nodes that belong to one
  group. Members with the same hash are one link of all of them (sorted; n nodes, not n - 1
  pairs: a million copies of one picture cost one element, each node once); one member per
  distinct hash is compared with the others', and a pair whose hashes are at most
  ``distance`` bits apart is a ``(node, node)`` link. A pair whose hashes also agree on an
  earlier band is left to that band's bucket, so each pair is found once."""
  by_hash: Dict[int, List[Node]] = collections.defaultdict(list)
  for phash, node in members:
    by_hash[phash].append(node)
  for nodes in by_hash.values():
    if band == 0 and len(nodes) > 1:  # equal hashes agree on every band: band 0 links them
      yield tuple(sorted(nodes))
  for (hash_a, nodes_a), (hash_b, nodes_b) in itertools.combinations(sorted(by_hash.items()), 2):
    if (hamming(hash_a, hash_b) <= distance
        and not _shared_earlier_band(hash_a, hash_b, band)):
      yield nodes_a[0], nodes_b[0]


def components(edges: Iterable[Tuple[Node, ...]]) -> List[List[Node]]:
  """Connected components of an undirected graph given by its links (each a tuple of two or
  more nodes that are connected: a pair is an edge), by union-find with path halving; each
  component sorted, components sorted by their first node."""
  parent: Dict[Node, Node] = {}

  def root(node):
    parent.setdefault(node, node)
    while parent[node] != node:
      parent[node] = parent[parent[node]]
      node = parent[node]
    return node

  for link in edges:
    root_a = root(link[0])
    for other in link[1:]:
      root_b = root(other)
      if root_a != root_b:
        low, high = min(root_a, root_b), max(root_a, root_b)
        parent[high] = low
        root_a = low
  grouped = collections.defaultdict(list)
  for node in parent:
    grouped[root(node)].append(node)
  return sorted(sorted(nodes) for nodes in grouped.values())


def near_groups(edges: Iterable[Tuple[Node, ...]], keep_first: bool = False
                ) -> Iterable[DuplicateGroup]:
  """The ``near`` DuplicateGroups of the links: components holding two or more contents.
  ``keep_first``: each names its first file by path as ``kept``."""
  for nodes in components(edges):
    if len({node[3] for node in nodes}) < 2:
      continue  # byte-identical copies only: an exact group
    files = [DuplicateFile(*node[:3]) for node in nodes]
    yield group_of(NEAR, files, kept=files[0].file if keep_first else None)


class NearDuplicateGroups(beam.PTransform):
  """PCollection[ConvertedExample] -> PCollection[DuplicateGroup] of kind ``near``.

  Examples without measures (not decoded: ``--image_format=original``, segmentation, records
  reused from the previous night) take no part.

  Args:
    distance: the largest Hamming distance (bits of 64) of two hashes of the same picture,
      0-``MAX_DISTANCE``.
    keep_first: mark each group's first file by path as the one kept (``--dedup=keep_first_near``).
    batched: the input's elements are lists of ConvertedExample (``elements.examples_of``).

  Raises:
    ValueError: ``distance`` is out of range.
  """

  def __init__(self, distance: int = DEFAULT_DISTANCE, keep_first: bool = False,
               batched: bool = False):
    super().__init__()
    if not 0 <= distance <= MAX_DISTANCE:
      raise ValueError(f'--near_duplicate_distance must be within 0-{MAX_DISTANCE} bits, '
                       f'got {distance}')
    self._distance = distance
    self._keep_first = keep_first
    self._batched = batched

  def expand(self, examples):
    distance, keep_first = self._distance, self._keep_first
    return (
        examples
        # ((band, value prefix), [(band value, phash as int64, node)]) per bundle
        | 'batch hash bands' >> beam.ParDo(BatchPerKeyFn(_band_entries, self._batched))
        | 'group by band' >> beam.GroupByKey()
        # links: pairs within the distance, found in some bucket (maybe several), and the
        # sets of equal hashes
        | 'confirm by hamming distance' >> beam.FlatMap(_edges_of_key, distance)
        | 'all edges' >> beam.combiners.ToList()
        | 'connected components' >> beam.FlatMap(near_groups, keep_first))


def dropped_files(group: DuplicateGroup) -> Iterable[Tuple[str, Failure]]:
  """(relpath, Failure at stage ``duplicate``) of every file of a ``kept`` group but the kept
  one (``--dedup=keep_first_near``)."""
  if group.kept is None:
    return
  for file in group.files[1:]:
    yield file.file, Failure(
        file.file, file.file, STAGE_DUPLICATE,
        f'near-identical to {group.kept} (perceptual hash), which is written instead '
        '(--dedup=keep_first_near)')


class _DropFn(beam.DoFn):
  """ConvertedExample -> itself unless its file is among the dropped (side input)."""

  def __init__(self):
    self._dropped_count = beam.metrics.Metrics.counter(METRICS_NAMESPACE, 'near_duplicates_dropped')
    self._seen = None
    self._set = frozenset()

  def process(self, example, dropped: List[str]):
    if dropped is not self._seen:  # one set per side input, not one per element
      self._seen, self._set = dropped, frozenset(dropped)
    if example.relpath in self._set:
      self._dropped_count.inc()
      return
    yield example


def drop_near_duplicates(examples, dropped, label: str):
  """``examples`` (PCollection[ConvertedExample]) without the files named by ``dropped``
  (PCollection[str] of relpaths, a side input: the duplicated files only)."""
  return examples | label >> beam.ParDo(_DropFn(), dropped=beam.pvalue.AsList(dropped))


class DroppedNear(beam.PTransform):
  """PCollection[DuplicateGroup] (near, with ``kept``) -> {'files': PCollection[str] of the
  relpaths not written, FAILURES_TAG: their PCollection[Failure]}."""

  def expand(self, groups):
    pairs = groups | 'files not kept' >> beam.FlatMap(dropped_files)
    return {'files': pairs | 'their paths' >> beam.Map(lambda pair: pair[0]),
            FAILURES_TAG: pairs | 'their failures' >> beam.Map(lambda pair: pair[1])}

