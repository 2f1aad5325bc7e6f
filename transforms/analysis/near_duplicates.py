"""Groups of near-identical pictures (the same photo re-encoded, resized, cropped by a few pixels,
brightened, under another name), found from the perceptual hashes the conversion computed
(``transforms.image.image_measures``) and confirmed on the pixels it kept beside them, in a cost
that grows with the number of images, not its square.

Locality-sensitive hashing by bands: the 64-bit hash is cut into ``NUM_BANDS`` bands of
``BAND_BITS`` bits; two hashes within 3 bits of each other agree on at least one whole band
(pigeonhole), and most pairs within ``--near_duplicate_distance`` (default
``DEFAULT_DISTANCE``) do too. Only images sharing a band value are ever compared. The graph's
nodes are pictures (``Picture``: a hash and its pixels), not files: files with equal hashes and
pixels (copies re-saved with other metadata, blank frames) are one node, and every file of a
picture lies in the same bucket of every band::

    ConvertedExample (with measures)
      -> ((band, top PREFIX_BITS of its value),
          [(band value, phash as int64, pixels, file), ...])
                                                  NUM_BANDS entries per image, batched per bundle
      -> GroupByKey -> buckets by whole band value -> pictures and their files
      -> Hamming distance <= distance                                  same picture, maybe
      -> similarity of their ``pixels`` >= MIN_SIMILARITY              a link of two pictures
      -> all links, one list -> connected components (union-find)      linked groups
      and, on a side output, the files of each linked picture and of each picture whose
      files hold two contents or more (band 0 only):
      -> in a linked group (a side input): GroupByKey by group       DuplicateGroup('near')
         alone: the picture's files are its group                    DuplicateGroup('near')

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
The links join different pictures only, so the one element that holds them all (and the
side input made of it) grows with the pictures that are near copies of another picture, not
with the images nor with the copies of one picture: a folder of a million files holding a
thousand re-saved copies of each of a thousand photos has no link at all (only the thousand
pictures' files, each set found whole in its band-0 bucket).

A group is reported as ``near`` when it holds at least two different contents (SHA-256): a set
of byte-identical files alone is an ``exact`` group (``transforms.analysis.dedup``). It keeps
the lowest similarity and the largest hash distance of the links that joined it. Flips and
rotations change the hash completely and are not found; nor is a grayscale copy of a colour
photo (its chroma differs).
"""

import collections
import itertools
from typing import Dict, Hashable, Iterable, List, NamedTuple, Optional, Tuple

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

Node = Hashable
"""A node of the graph (:func:`bucket_edges`, :func:`components`): any hashable, sortable
value; the job's is a ``Picture``, the benchmark's a file."""

Picture = Tuple[int, bytes]
"""A picture: (its 64-bit perceptual hash, its ``ImageMeasures.pixels``). Files with equal
hashes and pixels are one picture."""

File = Tuple[str, str, Optional[str], bytes]
"""A file of a picture: (relative path, split, class name, the 32-byte SHA-256 digest of its
source); a plain tuple, which Beam's coder encodes natively (a NamedTuple it would pickle)."""

Link = Tuple[float, int, Tuple[Node, ...]]
"""Nodes confirmed as one picture: (``similarity`` of their pixels, Hamming distance of their
hashes, the nodes: two, or any number with equal hashes and pixels, then 1.0 and 0)."""


class LinkedGroup(NamedTuple):
  """Nodes joined by links: ``nodes`` sorted, the lowest ``similarity`` and the largest
  ``hash_distance`` of the links that joined them."""
  nodes: Tuple[Node, ...]
  similarity: float
  hash_distance: int


PICTURE_FILES_TAG = 'picture_files'
"""The side output of the bucket step: (Picture, (File, ...)) of a picture that is linked, or
whose files hold two contents or more."""


def band_keys(phash: int) -> List[Tuple[int, int]]:
  """The LSH keys of a 64-bit hash: ``[(band index, band value)]``, ``NUM_BANDS`` of them."""
  return [(band, (phash >> (band * BAND_BITS)) & _BAND_MASK) for band in range(NUM_BANDS)]


PREFIX_BITS = 8
"""The GroupByKey key of a band is its index and the top ``PREFIX_BITS`` bits of its value
(4 x 256 keys): each worker batches the images of a bundle by key before the shuffle, so a
bundle sends at most 1,024 elements whatever its size (a key per band value would cost four
shuffled elements per image), and the grouped step splits a key's images by their whole band
value again."""

_HASH_MASK = (1 << 64) - 1


def _as_int64(phash: int) -> int:
  """A 64-bit hash as the signed int64 of the same bits (``& _HASH_MASK`` gives it back):
  Beam's coder writes an int64 as a varint, and pickles a larger int (half of all hashes)."""
  return phash - (1 << 64) if phash >> 63 else phash


def _band_entries(batch):
  """A list of ConvertedExample -> ((band, value prefix), (band value, phash as a signed
  int64, pixels, File)) for each band of each; none for an example without measures, or
  without the pixels that confirm a pair (measures kept by a run that did not take them)."""
  for example in batch:
    if example.measures is None:
      continue
    measures = ImageMeasures.of(example)
    if measures.pixels is None:
      continue
    # the digest's 32 bytes rather than its 64 hex digits: each file travels four times
    file = (example.relpath, example.split, example.label, bytes.fromhex(example.source_sha256))
    carried = _as_int64(measures.phash)
    for band, value in band_keys(measures.phash):
      yield (band, value >> (BAND_BITS - PREFIX_BITS)), (value, carried, measures.pixels, file)


def _bucket_links(element, distance: int, min_similarity: float) -> Iterable:
  """((band, prefix), [batches]) -> the links between the pictures of each bucket (whole band
  value), and on ``PICTURE_FILES_TAG`` the files of each picture linked here and (band 0,
  where every picture is met once) of each picture whose files hold two contents or more."""
  (band, _), batches = element
  buckets: Dict[int, Dict[Picture, List[File]]] = collections.defaultdict(
      lambda: collections.defaultdict(list))
  for value, carried, pixels, file in entries_in(batches):
    buckets[value][(carried & _HASH_MASK, pixels)].append(file)
  for pictures in buckets.values():
    sent = set()
    if band == 0:
      for picture, files in pictures.items():
        if len({file[3] for file in files}) > 1:
          sent.add(picture)
          yield beam.pvalue.TaggedOutput(PICTURE_FILES_TAG, (picture, tuple(files)))
    if len(pictures) > 1:
      for link in bucket_edges(((phash, pixels, (phash, pixels)) for phash, pixels in pictures),
                               distance, min_similarity, band):
        yield link
        for picture in link[2]:
          if picture not in sent:
            sent.add(picture)
            yield beam.pvalue.TaggedOutput(PICTURE_FILES_TAG, (picture, tuple(pictures[picture])))


def _shared_earlier_band(hash_a: int, hash_b: int, band: int) -> bool:
  """True when two hashes agree on a band before ``band`` (whose bucket finds the pair)."""
  differing = hash_a ^ hash_b
  return any(not (differing >> (earlier * BAND_BITS)) & _BAND_MASK for earlier in range(band))


def bucket_edges(members: Iterable[Tuple[int, bytes, Node]], distance: int,
                 min_similarity: float = MIN_SIMILARITY, band: int = 0) -> Iterable[Link]:
  """The confirmed links (``Link``) of one bucket of band ``band``, its members given as
  (hash, pixels, node); a node met more than once (copies of one content) counts once.
  Different nodes with the same hash and pixels are one link of all of them (sorted; n nodes,
  not n - 1 pairs); one node per distinct (hash, pixels) is compared with the others', and a
  pair whose hashes are at most ``distance`` bits apart and whose pixels' ``similarity`` is at
  least ``min_similarity`` is a two-node link. A pair whose hashes also agree on an earlier band
  is left to that band's bucket, so each pair is found once."""
  by_picture: Dict[Tuple[int, bytes], Dict[Node, None]] = collections.defaultdict(dict)
  for phash, pixels, node in members:
    by_picture[(phash, pixels)][node] = None  # an ordered set
  for nodes in by_picture.values():
    if band == 0 and len(nodes) > 1:  # equal hashes agree on every band: band 0 links them
      yield 1.0, 0, tuple(sorted(nodes))
  planes: Dict[bytes, _Planes] = {}  # of the pictures compared, each made once

  def planes_of(pixels):
    if pixels not in planes:
      planes[pixels] = _planes(pixels)
    return planes[pixels]

  pictures = sorted((key, min(nodes)) for key, nodes in by_picture.items())
  for ((hash_a, pixels_a), node_a), ((hash_b, pixels_b), node_b) in itertools.combinations(
      pictures, 2):
    bits = hamming(hash_a, hash_b)
    if bits <= distance and not _shared_earlier_band(hash_a, hash_b, band):
      alike = _similarity(planes_of(pixels_a), planes_of(pixels_b))
      if alike >= min_similarity:
        yield alike, bits, (node_a, node_b)


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


def linked_groups(links: Iterable[Link]) -> List[LinkedGroup]:
  """The connected components of the links' nodes (:func:`components`), each with the lowest
  similarity and the largest hash distance of the links that joined it."""
  links = list(links)
  groups = components(nodes for _, _, nodes in links)
  group_of_node = {node: i for i, nodes in enumerate(groups) for node in nodes}
  lowest, farthest = [1.0] * len(groups), [0] * len(groups)
  for alike, bits, nodes in links:
    i = group_of_node[nodes[0]]
    lowest[i], farthest[i] = min(lowest[i], alike), max(farthest[i], bits)
  return [LinkedGroup(tuple(nodes), lowest[i], farthest[i]) for i, nodes in enumerate(groups)]


ALONE_TAG = 'alone'
"""The output of :class:`_ByGroupFn` for a picture in no linked group."""


class _ByGroupFn(beam.DoFn):
  """(Picture, files) -> (its linked group's index, files), or on ``ALONE_TAG`` the picture
  and its files when it is in none of ``groups`` (a side input: the LinkedGroups)."""

  def __init__(self):
    self._seen = None
    self._index: Dict[Picture, int] = {}

  def process(self, element, groups: List[LinkedGroup]):
    if groups is not self._seen:  # one index per side input, not one per element
      self._seen = groups
      self._index = {node: i for i, group in enumerate(groups) for node in group.nodes}
    picture, files = element
    i = self._index.get(picture)
    if i is None:
      yield beam.pvalue.TaggedOutput(ALONE_TAG, files)
    else:
      yield i, files


def near_group(files: Iterable[File], similarity: float = 1.0, hash_distance: int = 0,
               keep_first: bool = False) -> Optional[DuplicateGroup]:
  """The ``near`` DuplicateGroup of a group's files (each once, however often given), with its
  similarity and hash distance (equal pictures: 1.0 and 0); None unless they hold two contents
  or more (byte-identical files alone are an ``exact`` group). ``keep_first``: it names its
  first file by path as ``kept``."""
  files = set(files)
  if len({file[3] for file in files}) < 2:
    return None
  listed = sorted(DuplicateFile(*file[:3]) for file in files)
  return group_of(NEAR, listed, kept=listed[0].file if keep_first else None,
                  similarity=similarity, hash_distance=hash_distance)


def _linked_near_group(element, groups: List[LinkedGroup], keep_first: bool):
  index, file_sets = element
  group = groups[index]
  # None only if two linked pictures share a content (measures of two versions, reused)
  found = near_group(itertools.chain.from_iterable(file_sets), group.similarity,
                     group.hash_distance, keep_first)
  if found is not None:
    yield found


def _alone_near_group(files, keep_first: bool):
  group = near_group(files, keep_first=keep_first)
  if group is not None:
    yield group


class NearDuplicateGroups(beam.PTransform):
  """PCollection[List[ConvertedExample]] (``transforms.batches.ExampleBatches``) ->
  PCollection[DuplicateGroup] of kind ``near``.

  Examples without measures (not decoded: ``--image_format=original``, segmentation) take no
  part, nor those whose measures lack ``pixels``.

  Args:
    distance: the largest Hamming distance (bits of 64) of two hashes of the same picture,
      0-``MAX_DISTANCE``.
    keep_first: mark each group's first file by path as the one kept (``--dedup=keep_first_near``).
    min_similarity: the least ``similarity`` of the pixels of two images whose hashes are
      within ``distance``, 0-1, for them to be one picture.

  Raises:
    ValueError: ``distance`` or ``min_similarity`` is out of range.
  """

  def __init__(self, distance: int = DEFAULT_DISTANCE, keep_first: bool = False,
               min_similarity: float = MIN_SIMILARITY):
    super().__init__()
    if not 0 <= distance <= MAX_DISTANCE:
      raise ValueError(f'--near_duplicate_distance must be within 0-{MAX_DISTANCE} bits, '
                       f'got {distance}')
    if not 0 <= min_similarity <= 1:
      raise ValueError(f'the least similarity must be within 0-1, got {min_similarity}')
    self._distance = distance
    self._keep_first = keep_first
    self._min_similarity = min_similarity

  def expand(self, batches):
    keep_first = self._keep_first
    buckets = (
        batches
        # ((band, value prefix), [(band value, phash as int64, pixels, file)]) per bundle
        | 'batch hash bands' >> beam.ParDo(BatchPerKeyFn(_band_entries))
        | 'group by band' >> beam.GroupByKey()
        # links: pairs of pictures within the distance whose pixels are alike, found in some
        # bucket (maybe several); the files of the pictures that may be near duplicates
        | 'confirm on the pixels' >> beam.FlatMap(
            _bucket_links, self._distance, self._min_similarity).with_outputs(
                PICTURE_FILES_TAG, main='links'))
    # one element: the linked pictures in groups (connected components)
    groups = beam.pvalue.AsSingleton(
        buckets.links
        | 'all links' >> beam.combiners.ToList()
        | 'linked groups' >> beam.Map(linked_groups), default_value=[])
    by_group = buckets[PICTURE_FILES_TAG] | 'find their groups' >> beam.ParDo(
        _ByGroupFn(), groups=groups).with_outputs(ALONE_TAG, main='linked')
    linked = (by_group.linked
              | 'by group' >> beam.GroupByKey()
              | 'linked near groups' >> beam.FlatMap(_linked_near_group, groups=groups,
                                                     keep_first=keep_first))
    alone = by_group[ALONE_TAG] | 'equal pictures' >> beam.FlatMap(_alone_near_group,
                                                                   keep_first)
    return (linked, alone) | 'near groups' >> beam.Flatten()


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


class DropNearDuplicates(beam.PTransform):
  """A tuple of PCollection[ConvertedExample], one per source (as ``WriteSplits`` takes them)
  -> the same tuple, without the files named by ``dropped`` (PCollection[str] of relpaths, a
  side input: the files not kept, ``DroppedNear``'s ``files``)."""

  def __init__(self, dropped):
    super().__init__()
    self._dropped = dropped

  def expand(self, sources):
    dropped = beam.pvalue.AsList(self._dropped)
    return tuple(source | f'source {number}' >> beam.ParDo(_DropFn(), dropped=dropped)
                 for number, source in enumerate(sources))


class DroppedNear(beam.PTransform):
  """PCollection[DuplicateGroup] (near, with ``kept``) -> {'files': PCollection[str] of the
  relpaths not written, FAILURES_TAG: their PCollection[Failure]}."""

  def expand(self, groups):
    pairs = groups | 'files not kept' >> beam.FlatMap(dropped_files)
    return {'files': pairs | 'their paths' >> beam.Map(lambda pair: pair[0]),
            FAILURES_TAG: pairs | 'their failures' >> beam.Map(lambda pair: pair[1])}

