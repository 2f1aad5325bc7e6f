"""Incremental nights: reuse the previous night's record of every unchanged image.

A nightly job over a growing bucket sees mostly the same files every night (typically 1-5%
change). With ``--run_date`` and a previous published run converted with the same settings
(``pipeline.nightly.plan_incremental`` decides, at launch), only new and changed images go
through the codec; the records of the others are copied from the previous run's shards::

    PCollection[LabeledImage] (this night's images, labelled and split)
      | key by file  ──┐
    previous images.jsonl ── key by file ──> CoGroupByKey ──> decide, per file:
      ├─> convert: PCollection[LabeledImage]   new, changed, relabelled, moved, no sums
      └─> reuse:   PCollection[(relpath, ReuseEntry)]   small: no image bytes
    previous shards (one element per shard file)
      | read each shard front to back, keep the records whose image/filename is to be reused
        (side input: the reuse entries, as a dict)
      -> PCollection[ConvertedExample]   the previous record's bytes, unchanged

The rule for "unchanged", checked per file: the same relative path, the same ``version`` (the
size in bytes and the modification time that the listing reports: ``os.stat`` locally, the
object's ``updated`` / ``LastModified`` time on ``gs://`` / ``s3://``, through Beam's
``FileMetadata``), the same label and split as the previous night, and, for the statistics'
split, the pixel sums in the previous index. Where the filesystem gives no time, the file is
read and its SHA-256 compared with the previous index's (a read, but no decode). The risk of
the time rule: a file rewritten with exactly the same size whose time was set back (``touch
-d``, ``cp -p`` / ``rsync -t`` of other bytes of the same length over it) is not seen to change;
``--full_rebuild`` converts everything.

Class ids stay the same across nights (the previous ``labels.txt`` pins them), so a reused
record, which holds its class id, equals what converting the file again would write: an
incremental night holds the same records as a full rebuild.
"""

import gzip
import hashlib
import io
from typing import Dict, Iterable, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.textio import ReadFromText
from imagerecords import contract
from imagerecords.framing import HEADER_BYTES, FramingError, read_frames, read_records

from transforms.elements import METRICS_NAMESPACE, ConvertedExample, LabeledImage
from transforms.files import reads
from transforms.files.folders import escape_pattern
from transforms.files.reads import file_sha256
from transforms.image.example import example_filename
from transforms.image.image_measures import ImageMeasures
from transforms.image.pixel_sums import PixelSums
from transforms.outputs.image_index import keyed_by_file

REUSE_TAG = 'reuse'
"""The tag of the decision's output of (relpath, ReuseEntry)."""

_BATCH_BYTES = 64 << 20  # records read per attempt from an uncompressed shard


class ReuseEntry(NamedTuple):
  """What the reused example carries besides its record bytes (from the previous index, checked
  against this night's listing)."""
  split: str
  label: Optional[str]
  source_sha256: str
  pixel_sums: Optional[PixelSums]
  version: Optional[str]
  measures: Optional[tuple] = None  # the ImageMeasures fields (ConvertedExample.measures)


def _sums(entry: dict) -> Optional[PixelSums]:
  sums = entry.get('pixel_sums')
  return None if sums is None else PixelSums(tuple(sums[0]), tuple(sums[1]), sums[2])


def _measures(entry: dict) -> Optional[tuple]:
  measures = entry.get('measures')
  return None if measures is None else tuple(ImageMeasures.from_index(measures))


class _DecideFn(beam.DoFn):
  """(relpath, {'now': [LabeledImage], 'before': [index entry]}) -> LabeledImage to convert, or
  (relpath, ReuseEntry) on the ``reuse`` output. Files only in the previous index (removed
  since) yield nothing."""

  def __init__(self, stats_split: Optional[str], measured: bool = False):
    self._stats_split = stats_split
    self._measured = measured
    self._hashed = beam.metrics.Metrics.counter(METRICS_NAMESPACE, 'incremental_files_hashed')

  def process(self, element) -> Iterable:
    relpath, grouped = element
    for image in grouped['now']:
      before = next(iter(grouped['before']), None)
      if before is not None and self._unchanged(image, before):
        yield beam.pvalue.TaggedOutput(REUSE_TAG, (relpath, ReuseEntry(
            image.split, image.label, before['sha256'], _sums(before), image.version,
            _measures(before))))
      else:
        yield image

  def _unchanged(self, image: LabeledImage, before: dict) -> bool:
    if (image.label != before.get('label') or image.split != before.get('split')
        or (image.source_sha256 is not None and image.source_sha256 != before.get('sha256'))
        or (image.split == self._stats_split and before.get('pixel_sums') is None)
        # --image_checks: a record from a run that did not measure it (or whose measures
        # lack the pixels that confirm near duplicates) is converted again
        or (self._measured and image.mask is None
            and 'pixels' not in (before.get('measures') or {}))):
      return False
    if image.version is not None:
      return image.version == before.get('version')
    if image.mask is not None:  # no time for the image or its mask: convert it again
      return False
    try:  # no time from this filesystem: the content decides (read, not decoded)
      digest = file_sha256(image.path)
    except reads.UnreadableFile:  # the conversion reads it again and reports why
      return False
    self._hashed.inc()
    return digest == before.get('sha256')


def _read_batch(path: str, offset: int) -> Tuple[list, int, Optional[FramingError]]:
  """Up to ``_BATCH_BYTES`` of records of an uncompressed shard from byte ``offset``:
  (records, the offset after them or -1 once the shard has ended, the FramingError of a shard
  cut short, returned rather than raised: bad data, not a read to retry)."""
  records = []
  with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
    if offset:
      handle.seek(offset)
    try:
      for frame in read_frames(handle, offset):
        records.append(frame.data)
        end = frame.offset + HEADER_BYTES + len(frame.body)
        if end - offset >= _BATCH_BYTES:
          return records, end, None
    except FramingError as error:
      return records, -1, error
  return records, -1, None


def shard_records(path: str) -> Iterable[bytes]:
  """Every record of one TFRecord shard (``.gz`` ones decompressed), in file order, each read
  once. Transient errors are retried (``transforms.files.reads``) from the last whole batch read, so
  no record is yielded twice.

  Raises:
    UnreadableFile, ReadFailed: see ``transforms.files.reads``.
    FramingError: the shard is cut short.
  """
  if path.endswith(contract.GZIP_SUFFIX):  # no cheap seek into gzip: one read of the file
    data = reads.read_bytes(path, CompressionTypes.UNCOMPRESSED)
    yield from read_records(gzip.GzipFile(fileobj=io.BytesIO(data)))
    return
  offset = 0
  while offset >= 0:
    records, offset, problem = reads.with_retries(
        lambda start=offset: _read_batch(path, start), path)
    yield from records
    if problem is not None:
      raise FramingError(f'{path}, a shard of the previous run: {problem}; rerun with '
                         '--full_rebuild') from problem


class _CopyRecordsFn(beam.DoFn):
  """A previous shard's path -> ConvertedExample for each of its records to reuse."""

  def __init__(self):
    self._reused = beam.metrics.Metrics.counter(METRICS_NAMESPACE, 'images_reused')
    self._bytes = beam.metrics.Metrics.counter(METRICS_NAMESPACE, 'reused_record_bytes')

  def process(self, shard: str, reuse: Dict[str, ReuseEntry]) -> Iterable[ConvertedExample]:
    for record in shard_records(shard):
      relpath = example_filename(record)
      entry = reuse.get(relpath)
      if entry is None:  # removed, changed or moved since: converted again, or gone
        continue
      self._reused.inc()
      self._bytes.inc(len(record))
      yield ConvertedExample(entry.split, entry.label, relpath, record,
                             hashlib.sha256(record).digest(), entry.source_sha256,
                             entry.pixel_sums, entry.version, entry.measures)


class ReusePreviousRecords(beam.PTransform):
  """PCollection[LabeledImage] -> {'convert': PCollection[LabeledImage] (to go through the
  codec), 'reused': PCollection[ConvertedExample] (copied from the previous run), 'counts':
  a one-element PCollection ``{'reused': n, 'converted': n, 'to_reuse': n}``}.

  ``to_reuse`` (files decided unchanged) must equal ``reused`` (records found in the previous
  shards); the metadata step fails the run when they differ (a previous run whose shards lack
  records its index lists).

  Args:
    previous_index: the previous run's ``images.jsonl``.
    previous_shards: the paths of every shard of the previous run.
    stats_split: the split whose examples carry pixel sums (``--stats``), or None.
    measured: examples carry their ``measures`` (``--image_checks``, decoded images): an
      unchanged file whose previous index entry has none is converted again.
  """

  def __init__(self, previous_index: str, previous_shards: Sequence[str],
               stats_split: Optional[str] = None, measured: bool = False):
    super().__init__()
    self._measured = measured
    self._previous_index = previous_index
    self._previous_shards = list(previous_shards)
    self._stats_split = stats_split

  def expand(self, images):
    p = images.pipeline
    now = images | 'key this night by file' >> beam.Map(lambda image: (image.relpath, image))
    before = (
        p
        | 'read the previous index' >> ReadFromText(escape_pattern(self._previous_index))
        | 'key the previous night by file' >> beam.Map(keyed_by_file))
    decided = (
        {'now': now, 'before': before}
        | 'pair with the previous night' >> beam.CoGroupByKey()
        | 'unchanged?' >> beam.ParDo(_DecideFn(self._stats_split, self._measured)).with_outputs(
            REUSE_TAG, main='convert'))
    reused = (
        p
        | 'previous shards' >> beam.Create(self._previous_shards)
        | 'spread the shards' >> beam.Reshuffle()
        | 'copy unchanged records' >> beam.ParDo(
            _CopyRecordsFn(), reuse=beam.pvalue.AsDict(decided[REUSE_TAG])))
    counts = {
        name: pcoll | f'count {name}' >> beam.combiners.Count.Globally()
        for name, pcoll in (('reused', reused), ('converted', decided.convert),
                            ('to_reuse', decided[REUSE_TAG]))}
    summary = (
        p
        | 'once' >> beam.Create([None])
        | 'counts' >> beam.Map(
            lambda _, reused, converted, to_reuse: {
                'reused': reused, 'converted': converted, 'to_reuse': to_reuse},
            **{name: beam.pvalue.AsSingleton(pcoll) for name, pcoll in counts.items()}))
    return {'convert': decided.convert, 'reused': reused, 'counts': summary}


class CountConverted(beam.PTransform):
  """PCollection[LabeledImage] -> the one-element ``counts`` of a night that reuses nothing
  (``{'reused': 0, 'converted': n, 'to_reuse': 0}``)."""

  def expand(self, images):
    return (images
            | 'count' >> beam.combiners.Count.Globally()
            | 'as counts' >> beam.Map(
                lambda n: {'reused': 0, 'converted': n, 'to_reuse': 0}))
