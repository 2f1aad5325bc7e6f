"""Assign each image to a split: from split folders, or by a stable hash of its path.

Two layouts:

* split folders: the input's top level holds ``train/``, ``val/`` or ``validation/``,
  ``test/``; each image belongs to the split its top folder names (hymenoptera's layout).
* hash split: ``--splits=train=0.8,validation=0.2``. Each image's split is decided by the
  SHA-256 of its path relative to the input root, mapped to [0, 1) and compared with the
  cumulative fractions. It depends on nothing but that path, so a file keeps its split when
  other files are added or removed, on any runner, on any machine, every night.
"""

import hashlib
from typing import Iterable, Sequence, Tuple

import apache_beam as beam

from transforms.batches import BatchPerKeyFn, entries_in, encode_entries
from transforms.elements import (FAILURES_TAG, STAGE_SPLIT, Failure, LabeledImage,
                                 source_version)

SPLIT_FOLDER_NAMES = ('train', 'val', 'validation', 'test')
"""Top-level folder names taken for splits (exact, lower case)."""


def unit_interval_hash(text: str, salt: str = '') -> float:
  """A stable, uniform value in [0, 1) from the SHA-256 of ``salt + text`` (UTF-8)."""
  digest = hashlib.sha256((salt + text).encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'big') / 2.0**64


SHUFFLE_KEY_BYTES = 16
"""Length of :func:`shuffle_key`: 128 bits, so that two paths of one split never share a key
(a 128-bit SHA-256 prefix collision)."""


def shuffle_key(relpath: str, seed: int) -> bytes:
  """The seeded sort key of an image, which fixes its place in its split's shards.

  The first ``SHUFFLE_KEY_BYTES`` (16) bytes of the SHA-256 of ``'shuffle:<seed>:' + relpath``
  (UTF-8); keys compare as bytes, i.e. as big-endian unsigned integers. Its first 8 bytes are
  :func:`unit_interval_hash` ``(relpath, 'shuffle:<seed>:')`` as an integer, so the order is
  that of the float but without its ties. It depends on nothing but the path and the seed: the
  same on every runner, for a converted record and for one a night reuses (the convention of
  TFDS, which orders its examples on a hash of their key).
  """
  return hashlib.sha256(f'shuffle:{seed}:{relpath}'.encode('utf-8')).digest()[:SHUFFLE_KEY_BYTES]


def hash_split(relpath: str, fractions: Sequence[Tuple[str, float]]) -> str:
  """The split of ``relpath`` for ``fractions``: [(name, fraction), ...] summing to 1.

  The order of ``fractions`` matters: it lays the splits out along [0, 1).
  """
  point = unit_interval_hash(relpath)
  cumulative = 0.0
  for name, fraction in fractions:
    cumulative += fraction
    if point < cumulative:
      return name
  return fractions[-1][0]  # only when rounding leaves the sum a hair under 1


class _AssignSplit(beam.DoFn):
  """(SourceFile, label) -> LabeledImage, or Failure(stage='split')."""

  def __init__(self, split_folders, fractions, file_splits=()):
    self._split_folders = tuple(split_folders)
    self._fractions = tuple(fractions)
    self._file_splits = frozenset(file_splits)

  def process(self, element) -> Iterable:
    source, label = element
    if self._file_splits:  # a label file's split column (transforms.inputs.label_file)
      split = source.split
      if split not in self._file_splits:
        yield beam.pvalue.TaggedOutput(FAILURES_TAG, Failure(
            source.path, source.relpath, STAGE_SPLIT,
            f'the label file gives it the split {split!r}, which its split column did not '
            f'hold when the job started ({", ".join(sorted(self._file_splits))})'))
        return
    elif self._split_folders:
      split = source.relpath.split('/', 1)[0]
      if split not in self._split_folders or '/' not in source.relpath:
        folders = ', '.join(f + '/' for f in self._split_folders)
        yield beam.pvalue.TaggedOutput(FAILURES_TAG, Failure(
            source.path, source.relpath, STAGE_SPLIT,
            f'outside the split folders ({folders}) of the input'))
        return
    else:
      split = hash_split(source.relpath, self._fractions)
    yield LabeledImage(source.path, source.relpath, label, split,
                       version=source_version(source))


class AssignSplits(beam.PTransform):
  """PCollection[(SourceFile, label)] -> PCollection[LabeledImage], and ``failures``.

  Exactly one of ``split_folders`` (folder layout), ``fractions`` (hash split) or
  ``file_splits`` (the split names of a label file's split column, carried by each
  ``SourceFile.split``) is non-empty.
  """

  def __init__(self, split_folders: Sequence[str] = (),
               fractions: Sequence[Tuple[str, float]] = (), file_splits: Sequence[str] = ()):
    super().__init__()
    if sum(1 for given in (split_folders, fractions, file_splits) if given) != 1:
      raise ValueError('give one of split_folders, fractions or file_splits')
    self._split_folders = tuple(split_folders)
    self._fractions = tuple(fractions)
    self._file_splits = tuple(file_splits)

  def expand(self, labeled):
    return labeled | 'split by folder or path hash' >> beam.ParDo(
        _AssignSplit(self._split_folders, self._fractions, self._file_splits)).with_outputs(
            FAILURES_TAG, main='split')


def bucket_count(num_images: int, images_per_bucket: int, max_buckets: int) -> int:
  """The number of shuffle buckets for ``num_images``: ``ceil(num_images / images_per_bucket)``,
  at least 1 and at most ``max_buckets``."""
  return min(max_buckets, max(1, -(-num_images // images_per_bucket)))


def shuffle_bucket(key: bytes, num_buckets: int) -> int:
  """The bucket of a :func:`shuffle_key` among ``num_buckets``: ``floor(top * B / 2**64)`` of
  the key's top 64 bits ``top``, in [0, B). Monotone in the key, so each bucket is a
  contiguous stretch of the key order, of 2**64 / B top values."""
  return (int.from_bytes(key[:8], 'big') * num_buckets) >> 64


KEY_RANGES = 1024
"""How many stretches of the key order ``ShuffleOrder`` batches the images into before it knows
their number: ``key_range`` of a key is its top 10 bits."""


def key_range(key: bytes) -> int:
  """The stretch of the key order a :func:`shuffle_key` lies in, of ``KEY_RANGES``: its top 10
  bits, in [0, 1024)."""
  return int.from_bytes(key[:2], 'big') >> 6


class _RangeEntries:
  """LabeledImage -> its one (key range, (shuffle key, *LabeledImage fields)) entry: a plain
  tuple, which Beam's coder encodes natively (a LabeledImage it would pickle)."""

  def __init__(self, seed: int):
    self._seed = seed

  def __call__(self, image: LabeledImage):
    key = shuffle_key(image.relpath, self._seed)
    yield key_range(key), (key, *image)


def _by_bucket(keyed_lists, count: int, images_per_bucket: int, max_buckets: int):
  """(key range, its batches) -> (bucket, one batch of its entries there) for each bucket its
  entries fall in (one or a few: a key range is a contiguous stretch of the keys); batches as
  ``transforms.batches`` encodes them."""
  num_buckets = bucket_count(count, images_per_bucket, max_buckets)
  buckets = {}
  for entry in entries_in(keyed_lists[1]):
    buckets.setdefault(shuffle_bucket(entry[0], num_buckets), []).append(entry)
  return ((bucket, encode_entries(entries)) for bucket, entries in buckets.items())


def _in_key_order(bucket) -> Iterable[LabeledImage]:
  """(bucket, its batches) -> its LabeledImages, sorted by shuffle key."""
  entries = sorted(entries_in(bucket[1]), key=lambda entry: entry[0])
  return (LabeledImage(*entry[1:]) for entry in entries)


class ShuffleOrder(beam.PTransform):
  """PCollection[LabeledImage] -> the same elements, bucket by bucket, each bucket in seeded key
  order.

  The shard writer (``transforms.outputs.write``) orders each split's records on the same key
  (:func:`shuffle_key` of the path and seed), whatever order they reach it in; this step makes
  that order cheap to produce and spreads the conversion. Each path goes to one of ``B``
  buckets, bucket ``b`` holding the keys whose top 64 bits lie in ``[b, b + 1) * 2**64 / B`` (a
  contiguous stretch of the key order), and each bucket is emitted sorted by key. The
  conversion is fused after it, so the writer receives runs of records already in key order,
  each over a narrow range of keys, and a shard's copy reads each run sequentially instead of
  seeking record by record.

  ``B`` grows with the number of images (about ``images_per_bucket`` per bucket, at most
  ``max_buckets``): the step after the last GroupByKey (the conversion, fused to it) runs one
  bucket per work item, so ``B`` is the conversion's parallelism on a cluster (5,005 buckets
  for ImageNet's 1.28 million images). Only the count (one integer) and the paths are held,
  never image bytes. ``count``: that count as a one-element PCollection when the caller has one
  (``Count.Globally`` of the same images), else it is counted here. The order the buckets come
  out in, and hence the order of conversion, follows the runner; the shard files do not.

  Two GroupByKeys of lists, no element per image between the listing and the conversion: each
  bundle first batches its images by ``key_range`` (``KEY_RANGES`` stretches of the keys,
  known without the count, so this is fused to the listing and the labels), a first
  GroupByKey gathers each range, the count (a side input, ready by then) splits the ranges into
  the ``B`` buckets, and a second GroupByKey gathers each bucket. On the local runner, whose
  GroupByKeys and stage outputs are held in the launcher's memory, the runner then handles one
  batch (one ``bytes`` value, ``transforms.batches``) per bundle and key range, then per
  bucket, rather than one element per image; the images were once held twice, one pickled
  ``LabeledImage`` each: whole while the count was taken, then in the GroupByKey.
  """

  def __init__(self, seed: int = 0, images_per_bucket: int = 256, max_buckets: int = 16384,
               count=None):
    super().__init__()
    self._seed = seed
    self._images_per_bucket = images_per_bucket
    self._max_buckets = max_buckets
    self._count = count

  def expand(self, images):
    count = self._count or images | 'count images' >> beam.combiners.Count.Globally()
    return (
        images
        # 50,000 held: about 50 paths per key range and flush, not 20 (1,024 ranges)
        | 'batch by key range' >> beam.ParDo(BatchPerKeyFn(_RangeEntries(self._seed),
                                                           max_held=50_000))
        | 'group key ranges' >> beam.GroupByKey()
        | 'split ranges into buckets' >> beam.FlatMap(
            _by_bucket, beam.pvalue.AsSingleton(count), self._images_per_bucket,
            self._max_buckets)
        | 'group buckets' >> beam.GroupByKey()
        | 'emit in key order' >> beam.FlatMap(_in_key_order))


def probe_split_folders(input_dir: str) -> Tuple[str, ...]:
  """The split folders present at the top of ``input_dir``, found without listing it.

  One bounded look-up per candidate name (``folders.holds_a_file``: the first file found), so
  the launcher learns the layout in a handful of requests even for a bucket of millions of
  files; the listing itself happens in the pipeline.
  """
  from apache_beam.io.filesystems import FileSystems  # pylint: disable=import-outside-toplevel
  from transforms.files.folders import holds_a_file  # pylint: disable=import-outside-toplevel
  return tuple(name for name in SPLIT_FOLDER_NAMES
               if holds_a_file(FileSystems.join(input_dir, name)))
