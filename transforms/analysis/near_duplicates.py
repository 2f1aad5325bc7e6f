"""Groups of near-identical pictures (the same photo re-encoded, resized, cropped by a few pixels,
brightened, under another name), found from the perceptual hashes the conversion computed
(``transforms.image.image_measures``) and confirmed on the pixels it kept beside them, in a cost
that grows with the number of images, not its square.

Locality-sensitive hashing by bands: the 64-bit hash is cut into ``NUM_BANDS`` bands of
``BAND_BITS`` bits; two hashes within 3 bits of each other agree on at least one whole band
(pigeonhole), and most pairs within ``--near_duplicate_distance`` (default
``DEFAULT_DISTANCE``) do too. Only images sharing a band value are ever compared::

    ConvertedExample (with measures)
      -> ((band, top PREFIX_BITS of its value),
          [(band value, phash as int64, pixels, node), ...])
                                                  NUM_BANDS entries per image, batched per bundle
      -> GroupByKey -> buckets by whole band value                     candidates
      -> Hamming distance <= distance                                  same hash, maybe
      -> similarity of their ``pixels`` >= MIN_SIMILARITY              same picture: a link
           (similarity, distance, (node, node)), or (1.0, 0, (node, ...)) for a set of equal
           hashes and pixels
      -> all links, one list -> connected components (union-find)      DuplicateGroup('near')

The hash alone is not enough: pHash keeps the signs of 64 low frequencies of the luma, so two
different photos of the same layout (a dark band under a pale sky, a brown box on white), and
flat or nearly flat frames of any colour (whose signs are noise or all equal), agree on most
bits (``bench/near_duplicates.py`` measures how often, on the shared photos with known copies).
Each pair the hash finds is therefore confirmed on ``pixels`` (an 8x8 luma, 4x4 Cr, 4x4 Cb
thumbnail: ``similarity``), which tells colours apart and tolerates a brightness change; both
thresholds come from the precision/recall table in docs/benchmarks.md.

With 16-bit bands a bucket holds N / 65,536 unrelated images on average, so the candidate pairs
grow as N^2 / 2^17 per band: 30 million Hamming distances at a million images, a few per image.
The GroupByKey keys are coarser (4 x 2^PREFIX_BITS) and batched per bundle, so that the shuffle
carries no element per image; a key holds N / 256 images per band.
The edges are only those between near-identical files, so the one worker that joins them into
groups holds state for the duplicated files, not for every image. Identical hashes and pixels
in a bucket (byte-identical copies, blank frames, copies re-saved with other metadata) are one
link of all of them rather than pairs, so a thousand blank frames cost one element of a thousand
nodes, not half a million pairs (nor a chain of 999 pairs, each node twice).

A group is reported as ``near`` when it holds at least two different contents (SHA-256): a set
of byte-identical files alone is an ``exact`` group (``transforms.analysis.dedup``). It keeps the
lowest similarity and the largest hash distance of the links that joined it. Flips and
rotations change the hash completely and are not found; nor is a grayscale copy of a colour
photo (its chroma differs).
"""

import collections
import itertools
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

import apache_beam as beam
import numpy as np

from transforms.analysis.dedup import NEAR, DuplicateFile, DuplicateGroup, group_of
from transforms.batches import BatchPerKeyFn, entries_in
from transforms.elements import FAILURES_TAG, METRICS_NAMESPACE, STAGE_DUPLICATE, Failure
from transforms.image import image_measures
from transforms.image.image_measures import ImageMeasures, hamming

DEFAULT_DISTANCE = 14
"""Hashes at most this many bits apart (of 64) are candidates, confirmed by ``similarity``
(``MIN_SIMILARITY``). From the precision/recall table of ``bench/near_duplicates.py
--parts=precision`` in docs/benchmarks.md: with the confirmation no pair of different photos
was joined at any distance up to 16 (the hash alone joined 420 at 10 bits, the old default),
and the recall barely grows past 14 (the bands find few pairs further apart), while the
candidates of different photos to compare on the pixels do (359 within 14 bits, 922 within
16, among 16,844 images)."""

MAX_DISTANCE = 16
"""The largest ``--near_duplicate_distance`` accepted: past it the band buckets find few of the
pairs within the distance, and the candidates to confirm grow fast."""

MIN_SIMILARITY = 0.8
"""Candidates whose ``similarity`` is at least this are the same picture. From the same table:
within 14 bits no pair of different photos was joined from 0.7 up (the most alike different
pictures compared: 0.54, a flat green frame and a flat red one), while the recall of copies
20% brighter falls from 97.7% at 0.75 to 96.7% at 0.8 and 95.6% at 0.85; 0.8 leaves a margin
for the pictures of larger sets, where more different pairs are compared."""

_SSIM_C1 = (0.01 * 255) ** 2
_SSIM_C2 = (0.03 * 255) ** 2
# the planes of ImageMeasures.pixels: luma, Cr, Cb
_PLANE_SIZES = np.array([image_measures.PIXELS_LUMA_SIDE ** 2,
                         image_measures.PIXELS_CHROMA_SIDE ** 2,
                         image_measures.PIXELS_CHROMA_SIDE ** 2], np.float64)
_PLANE_STARTS = np.concatenate([[0], np.cumsum(_PLANE_SIZES[:-1])]).astype(np.intp)


class _Planes(NamedTuple):
  """``ImageMeasures.pixels`` ready to compare: its values as float64 [96], and the mean and
  variance of each plane (luma, Cr, Cb)."""
  values: np.ndarray
  means: List[float]
  variances: List[float]


def _planes(pixels: bytes) -> _Planes:
  values = np.frombuffer(pixels, np.uint8).astype(np.float64)
  means = np.add.reduceat(values, _PLANE_STARTS) / _PLANE_SIZES
  squares = np.add.reduceat(values * values, _PLANE_STARTS) / _PLANE_SIZES
  return _Planes(values, means.tolist(), (squares - means * means).tolist())


def _similarity(a: _Planes, b: _Planes) -> float:
  """``similarity`` of two pictures' planes."""
  mean_products = (np.add.reduceat(a.values * b.values, _PLANE_STARTS) / _PLANE_SIZES).tolist()
  product = 1.0
  for mean_a, mean_b, var_a, var_b, mean_ab in zip(a.means, b.means, a.variances, b.variances,
                                                    mean_products):
    covariance = mean_ab - mean_a * mean_b
    ssim = ((2 * mean_a * mean_b + _SSIM_C1) * (2 * covariance + _SSIM_C2)
            / ((mean_a * mean_a + mean_b * mean_b + _SSIM_C1) * (var_a + var_b + _SSIM_C2)))
    product *= max(ssim, 0.0)
  return round(product, 3)


def similarity(pixels_a: bytes, pixels_b: bytes) -> float:
  """How alike two pictures are, from their ``ImageMeasures.pixels`` (96 bytes each: 8x8 luma,
  4x4 Cr, 4x4 Cb), 0-1, rounded to 3 decimals: the product over the three planes of their SSIM
  (Wang, Bovik, Sheikh, Simoncelli 2004, "Image quality assessment: from error visibility to
  structural similarity", eq. 13, with its constants K1 = 0.01, K2 = 0.03, L = 255) taken over
  the whole plane as one window, each clipped at 0. Exactly 1 for equal pixels.

  The luminance term tolerates a brightness change (copies 20% brighter: 0.95 at the median, in
  ``bench/near_duplicates.py``) and the structure term a re-encoding, a resize or a crop of a
  few percent (medians 0.985 and more; 0.92 cropped by 5% per side); one plane that does not
  agree brings the product down, so that a flat red frame and a flat green one of about the
  same luma are told apart (0.54; their hashes are equal).
  """
  return _similarity(_planes(pixels_a), _planes(pixels_b))


NUM_BANDS = 4
BAND_BITS = 16
_BAND_MASK = (1 << BAND_BITS) - 1

Node = Tuple[str, str, Optional[str], bytes]
"""A file of the graph: (relative path, split, class name, SHA-256 of its source: the 32-byte
digest in the job, any value that tells two contents apart); a plain tuple, which Beam's coder
encodes natively (a NamedTuple it would pickle)."""

Link = Tuple[float, int, Tuple[Node, ...]]
"""Files confirmed as one picture: (``similarity`` of their pixels, Hamming distance of their
hashes, the nodes: two, or any number with equal hashes and pixels, then 1.0 and 0)."""


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
  """ConvertedExample -> ((band, value prefix), (band value, phash as a signed int64, pixels,
  node)) for each of its bands; none without measures, or without the pixels that confirm a
  pair (measures kept by a run that did not take them)."""
  if example.measures is None:
    return
  measures = ImageMeasures.of(example)
  if measures.pixels is None:
    return
  # the digest's 32 bytes rather than its 64 hex digits: each node travels four times
  node = (example.relpath, example.split, example.label, bytes.fromhex(example.source_sha256))
  carried = _as_int64(measures.phash)
  for band, value in band_keys(measures.phash):
    yield (band, value >> (BAND_BITS - PREFIX_BITS)), (value, carried, measures.pixels, node)


def _edges_of_key(element, distance: int, min_similarity: float) -> Iterable[Link]:
  """((band, prefix), [batches]) -> the confirmed links of each bucket (whole band value)."""
  (band, _), batches = element
  buckets: Dict[int, list] = collections.defaultdict(list)
  for value, carried, pixels, node in entries_in(batches):
    buckets[value].append((carried & _HASH_MASK, pixels, node))
  for members in buckets.values():
    if len(members) > 1:
      yield from bucket_edges(members, distance, min_similarity, band)


def _shared_earlier_band(hash_a: int, hash_b: int, band: int) -> bool:
  """True when two hashes agree on a band before ``band`` (whose bucket finds the pair)."""
  differing = hash_a ^ hash_b
  return any(not (differing >> (earlier * BAND_BITS)) & _BAND_MASK for earlier in range(band))


def bucket_edges(members: Iterable[Tuple[int, bytes, Node]], distance: int,
                 min_similarity: float = MIN_SIMILARITY, band: int = 0) -> Iterable[Link]:
  """The confirmed links (``Link``) of one bucket of band ``band``, its members given as
  (hash, pixels, node). Members with the same hash and pixels are one link of all of them
  (sorted; n nodes, not n - 1 pairs: a million copies of one picture cost one element, each
  node once); one member per distinct (hash, pixels) is compared with the others', and a pair
  whose hashes are at most ``distance`` bits apart and whose pixels' ``similarity`` is at least
  ``min_similarity`` is a two-node link. A pair whose hashes also agree on an earlier band is
  left to that band's bucket, so each pair is found once."""
  by_picture: Dict[Tuple[int, bytes], List[Node]] = collections.defaultdict(list)
  for phash, pixels, node in members:
    by_picture[(phash, pixels)].append(node)
  for nodes in by_picture.values():
    if band == 0 and len(nodes) > 1:  # equal hashes agree on every band: band 0 links them
      yield 1.0, 0, tuple(sorted(nodes))
  planes: Dict[bytes, _Planes] = {}  # of the pictures compared, each made once

  def planes_of(pixels):
    if pixels not in planes:
      planes[pixels] = _planes(pixels)
    return planes[pixels]

  for ((hash_a, pixels_a), nodes_a), ((hash_b, pixels_b), nodes_b) in itertools.combinations(
      sorted(by_picture.items()), 2):
    bits = hamming(hash_a, hash_b)
    if bits <= distance and not _shared_earlier_band(hash_a, hash_b, band):
      alike = _similarity(planes_of(pixels_a), planes_of(pixels_b))
      if alike >= min_similarity:
        yield alike, bits, (nodes_a[0], nodes_b[0])


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


def near_groups(links: Iterable[Link], keep_first: bool = False) -> Iterable[DuplicateGroup]:
  """The ``near`` DuplicateGroups of the links: components holding two or more contents, each
  with the lowest similarity and the largest hash distance of the links that joined it.
  ``keep_first``: each names its first file by path as ``kept``."""
  links = list(links)
  groups = components(nodes for _, _, nodes in links)
  group_of_node = {node: i for i, nodes in enumerate(groups) for node in nodes}
  lowest, farthest = [1.0] * len(groups), [0] * len(groups)
  for alike, bits, nodes in links:
    i = group_of_node[nodes[0]]
    lowest[i], farthest[i] = min(lowest[i], alike), max(farthest[i], bits)
  for i, nodes in enumerate(groups):
    if len({node[3] for node in nodes}) < 2:
      continue  # byte-identical copies only: an exact group
    files = [DuplicateFile(*node[:3]) for node in nodes]
    yield group_of(NEAR, files, kept=files[0].file if keep_first else None,
                   similarity=lowest[i], hash_distance=farthest[i])


class NearDuplicateGroups(beam.PTransform):
  """PCollection[ConvertedExample] -> PCollection[DuplicateGroup] of kind ``near``.

  Examples without measures (not decoded: ``--image_format=original``, segmentation) take no
  part, nor those whose measures lack ``pixels``.

  Args:
    distance: the largest Hamming distance (bits of 64) of two hashes of the same picture,
      0-``MAX_DISTANCE``.
    keep_first: mark each group's first file by path as the one kept (``--dedup=keep_first_near``).
    batched: the input's elements are lists of ConvertedExample (``elements.examples_of``).
    min_similarity: the least ``similarity`` of the pixels of two images whose hashes are
      within ``distance``, 0-1, for them to be one picture.

  Raises:
    ValueError: ``distance`` or ``min_similarity`` is out of range.
  """

  def __init__(self, distance: int = DEFAULT_DISTANCE, keep_first: bool = False,
               batched: bool = False, min_similarity: float = MIN_SIMILARITY):
    super().__init__()
    if not 0 <= distance <= MAX_DISTANCE:
      raise ValueError(f'--near_duplicate_distance must be within 0-{MAX_DISTANCE} bits, '
                       f'got {distance}')
    if not 0 <= min_similarity <= 1:
      raise ValueError(f'the least similarity must be within 0-1, got {min_similarity}')
    self._distance = distance
    self._keep_first = keep_first
    self._batched = batched
    self._min_similarity = min_similarity

  def expand(self, examples):
    distance, keep_first = self._distance, self._keep_first
    return (
        examples
        # ((band, value prefix), [(band value, phash as int64, pixels, node)]) per bundle
        | 'batch hash bands' >> beam.ParDo(BatchPerKeyFn(_band_entries, self._batched))
        | 'group by band' >> beam.GroupByKey()
        # links: pairs within the distance whose pixels are alike, found in some bucket
        # (maybe several), and the sets of equal hashes and pixels
        | 'confirm on the pixels' >> beam.FlatMap(_edges_of_key, distance,
                                                  self._min_similarity)
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
        f'near-identical to {group.kept} (perceptual hash, confirmed on the pixels: '
        f'similarity {group.similarity:.3f} or more), which is written instead '
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

