"""Incremental nights: reuse the previous night's record of every unchanged image, verified.

A nightly job over a growing bucket sees mostly the same files every night (typically 1-5%
change). With ``--run_date`` and a previous published run converted with the same settings
(``pipeline.nightly.plan_incremental`` decides, at launch), only new and changed images go
through the codec; the records of the others are copied from the previous run's shards, each
one only once it is verified::

    PCollection[LabeledImage] (this night's images, labelled and split)
      | key by file  ──┐
    previous images.jsonl ── key by file ──> CoGroupByKey ──> decide, per file:
      ├─> convert:  PCollection[LabeledImage]   new, changed, relabelled, moved, no sums
      ├─> reuse:    (record_sha256, relpath, split) of each file to reuse, packed by the
      │             20,000 into one bytes value: the side input of the copy and the account
      ├─> rows:     each file to reuse as a plain tuple (reuse_row: this night's listing, the
      │             previous entry's digests, sums, measures), packed by the 256
      └─> previous: PCollection[(relpath, index entry)]   the previous entries of the files
                    not reused (removed, changed, moved): the diff's (image_index), which
                    therefore reads images.jsonl no second time
    previous shards (one element per shard file)
      | read each shard front to back, keep the records to reuse (found by their SHA-256),
        verify each
      ├─> staged:  PCollection[(split, keys file path)]   per shard and split, in the writer's
      │            staging folder: the records' frame offsets, frame numbers and shuffle keys
      │            in the previous shard itself, which the writer copies them from once, into
      │            the new shards (a .gz shard: its verified records written into one
      │            staging file, in bulk: there is no cheap seek into gzip)
      └─> PCollection[ShardCheck]         per shard: the files copied, the records rejected
    once: the files to reuse no verified record was copied for (rejected, or not found)
      -> PCollection[str], a few relpaths; and the night's counts
    rows, less those files (side input)
      ├─> batches: PCollection[List[ConvertedExample]]   up to EXAMPLES_PER_BATCH per list,
      │            without record bytes: to ExampleBatches, the analysis steps, the index
      └─> those files' LabeledImages, converted again with the night's new and changed images
          (and their previous entries to ``previous``: the diff counts them unchanged)

After the decision (one element per file, as the listing is), no step sees a reused record,
or its example, on its own: the copy step is the one per-record loop, and what the others pass
on is one value per 256 files (or 20,000, or one keys file per shard and split). The side
inputs hold packed bytes, not an object per file: Beam's state cache measures every object of
a side input it holds (``objsize``), which cost more than the copy itself per reused image
(docs/benchmarks.md, "Reused records in bulk"). Deleting the writer's staging folder deletes
the keys files, never the shards they name; a previous shard found changed (size, time) when
the writer reads it fails the night (``transforms.outputs.write.StagingFileChanged``) rather
than copy records not verified.

The rule for "unchanged", checked per file: the same relative path, the same ``version`` (the
size in bytes and the modification time that the listing reports: ``os.stat`` locally, the
object's ``updated`` / ``LastModified`` time on ``gs://`` / ``s3://``, through Beam's
``FileMetadata``), the same label and split as the previous night, a record digest
(``record_sha256``) in the previous index, and, for the statistics' split, the pixel sums in
the previous index. Where the filesystem gives no time, the file is read and its SHA-256
compared with the previous index's (a read, but no decode). The risk of the time rule: a file
rewritten with exactly the same size whose time was set back (``touch -d``, ``cp -p`` /
``rsync -t`` of other bytes of the same length over it) is not seen to change;
``--full_rebuild`` converts everything.

What a copied record is checked for (:class:`_CopyRecordsFn`): its frame's two checksums (the
masked CRC-32C of the length field and of the data, as TFRecord defines them;
``imagerecords.framing``), and the SHA-256 of its bytes against the ``record_sha256`` the
previous night's ``images.jsonl`` recorded for the file. The checksums catch a flipped byte in
the shard; the digest catches a record whose frame was written afresh around other bytes (a
repaired or re-framed shard, another data set's record under the same file name). A record
whose checksums hold and whose SHA-256 is some file's ``record_sha256`` is that file's record,
byte for byte (its ``image/filename`` included), so only the records not found so (not reused,
or damaged) are parsed, to name their file. A record that fails either check is never
copied: its image is converted again from its source, the record is named in the manifest's
``incremental.rejected`` and in a log line, and counted (``previous_records_rejected``,
``images_reconverted``). A length field that fails its checksum,
or a shard cut short, leaves the rest of that shard unlocatable: every image whose record is
not found verified in some shard is converted again (``no intact record``). The SHA-256 is the
one the split's fingerprint needs anyway (``ConvertedExample.record_sha256``), so the check
adds no hashing; the checksums (``google-crc32c``) cost under a tenth of the SHA-256
(docs/benchmarks.md, "Verifying reused records").

Class ids stay the same across nights (the previous ``labels.txt`` pins them), so a reused
record, which holds its class id, equals what converting the file again writes: an
incremental night holds the same records as a full rebuild, byte for byte.
"""

import array
import collections
import dataclasses
import gzip
import hashlib
import io
import logging
import uuid
import zlib
from typing import Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.textio import ReadFromText
from apache_beam.transforms.window import GlobalWindows
from imagerecords import contract
from imagerecords import manifest_schema
from imagerecords.framing import (FOOTER_BYTES, HEADER_BYTES, Frame, FramingError,
                                  data_checksum_ok, length_checksum_ok, read_frames)
from imagerecords.manifest_schema import RejectedRecord  # a previous record not copied, and why
from imagerecords.records import example_filename

from transforms.batches import EXAMPLES_PER_BATCH, encode_entries, entries_in
from transforms.elements import METRICS_NAMESPACE, ConvertedExample, LabeledImage, SourceFile
from transforms.files import reads
from transforms.files.folders import escape_pattern
from transforms.files.reads import file_sha256
from transforms.files.working_folders import WRITER_FOLDER
from transforms.image.image_measures import ImageMeasures
from transforms.image.pixel_sums import PixelSums
from transforms.inputs.splits import SHUFFLE_KEY_BYTES, shuffle_key
from transforms.outputs import claim as run_claim
from transforms.outputs.image_index import keyed_by_file
from transforms.outputs.write import (KEYS_SUFFIX, STAGING_RECORDS_WRITTEN, StagingFile,
                                      create_staging_file, file_version, read_staging_keys,
                                      write_staging_keys)

_LOG = logging.getLogger(__name__)

REUSE_TAG = 'reuse'
"""The tag of the decision's output of (record_sha256, relpath, split) of each file to reuse."""
ROWS_TAG = 'rows'
"""The tag of the decision's output of each file to reuse as a row (:func:`reuse_row`)."""
AGAIN_TAG = 'again'
"""The tag of the output of the LabeledImage of each file to reuse whose record was not
copied: converted again."""
PREVIOUS_TAG = 'previous'
"""The tag of the outputs of (relpath, previous index entry) of the files whose record is not
reused: what the diff compares this night's converted examples with."""
CHECKS_TAG = 'checks'
"""The tag of the copy's output of one ShardCheck per previous shard."""
STAGED_TAG = 'staged'
"""The tag of the copy's output of (split, keys file path): reused records, for the writer."""
_COUNTS_TAG = 'counts'
_REUSED_PREFIX = 'reused'  # the names of the copy's files in the writer's staging folder

MAX_REJECTED_LISTED = 100
"""The most rejected records the manifest lists (``incremental.rejected``); the log names all."""

NO_INTACT_RECORD = 'no intact record in the previous run\'s shards'
"""The reason given for an image to reuse whose record was not found verified in any shard."""

_BATCH_BYTES = 64 << 20  # records read per attempt from an uncompressed shard

INDEX_PACK = 20_000
"""Files to reuse per packed value of the copy's side input (about 1.3 MB)."""


def reuse_row(image: LabeledImage, before: dict) -> tuple:
  """An unchanged file, to be reused, as one plain tuple of Python primitives (which Beam's
  coder encodes without pickling, unlike a NamedTuple): this night's ``image``'s fields (its
  ``mask`` as a plain tuple; the image is converted again if its previous record fails
  verification), then what the previous index entry ``before`` holds for it: the source's
  hex SHA-256, the raw 32-byte ``record_sha256`` (which the copied record's bytes must match),
  the pixel sums ((sums, sums of squares, pixels) or None), the ImageMeasures fields
  (``ConvertedExample.measures``) or None, and a segmentation record's mask class ids or
  None. :func:`row_image` and :func:`row_example` read it."""
  sums = before.get('pixel_sums')
  return (image.path, image.relpath, image.label, image.split, image.source_sha256,
          None if image.mask is None else tuple(image.mask), image.version,
          before['sha256'], bytes.fromhex(before['record_sha256']),
          None if sums is None else (tuple(sums[0]), tuple(sums[1]), sums[2]),
          _measures(before), _mask_classes(before))


def row_image(row: tuple) -> LabeledImage:
  """The LabeledImage of a :func:`reuse_row` (to convert it again)."""
  mask = row[5]
  return LabeledImage(*row[:5], None if mask is None else SourceFile(*mask), row[6])


def row_example(row: tuple) -> ConvertedExample:
  """The ConvertedExample of a :func:`reuse_row` without its record bytes (``serialized`` is
  b''): the previous night's record's, as the previous index holds them."""
  sums = row[9]
  return ConvertedExample(row[3], row[2], row[1], b'', row[8], row[7],
                          None if sums is None else PixelSums(*sums), row[6], row[10], row[11])


def _previous_entry(relpath: str, label: Optional[str], split: str, sha256: str) -> dict:
  """What the diff reads of a reused file's previous index entry; the reuse rule made its
  label, split and source digest this night's."""
  return {'file': relpath, 'label': label, 'sha256': sha256, 'split': split}


class _ReuseIndex:
  """The files to reuse, looked up by record digest and by path (built once per worker from
  the side input of packed (record_sha256, relpath, split) entries: a few objects per 20,000
  files, so that Beam's state cache, which measures every object of a side input it holds,
  and its coder do not pay per file). Memory: two dicts, about 250 bytes per file."""

  def __init__(self, chunks: Iterable[bytes]):
    self.by_digest: Dict[bytes, str] = {}
    self.files: Dict[str, Tuple[bytes, str]] = {}  # relpath -> (record_sha256, split)
    for digest, relpath, split in entries_in(chunks):
      self.by_digest[digest] = relpath
      self.files[relpath] = (digest, split)


class ShardCheck(NamedTuple):
  """What the copy of one previous shard found: ``copied``, the files whose record was verified
  and copied (file order), as one encoded list (``transforms.batches.encode_entries``: one
  object per shard in the side input that reads it, not one per file); ``rejected``, the
  RejectedRecords of the shard."""
  shard: str
  copied: bytes
  rejected: Tuple[RejectedRecord, ...]

  def copied_files(self) -> List[str]:
    """The files of ``copied``."""
    return list(entries_in([self.copied]))


class NightCounts(NamedTuple):
  """A dated night's counts (one element, for the manifest's ``incremental`` section).

  reused: records copied from the previous run, verified. converted: images that went through
  the codec (new, changed, and reconverted). to_reuse: files decided unchanged. reconverted:
  of those, the ones converted again because no verified record was found. rejected: the first
  ``MAX_REJECTED_LISTED`` RejectedRecords. ``to_reuse == reused + reconverted`` unless the
  previous shards held a file's record twice (``reuse_error``).
  """
  reused: int
  converted: int
  to_reuse: int = 0
  reconverted: int = 0
  rejected: Tuple[RejectedRecord, ...] = ()

  def add_to(self, section: manifest_schema.IncrementalSection
             ) -> manifest_schema.IncrementalSection:
    """The manifest's ``incremental`` section ``section`` (the launch's plan) with this
    night's counts."""
    return dataclasses.replace(section, reused=self.reused, converted=self.converted,
                               reconverted=self.reconverted, rejected=list(self.rejected))

  def reuse_error(self, reused_from: Optional[str]) -> Optional[str]:
    """Why the night fails, or None: the previous shards held more records of the files to
    reuse than there are files (a record twice), so a file would be written twice."""
    if self.reused + self.reconverted == self.to_reuse:
      return None
    return (f'{self.to_reuse} unchanged images were to be reused from {reused_from}, but its '
            f'shards hold {self.reused} verified records of {self.to_reuse - self.reconverted} '
            'of them (a record held twice); rerun with --full_rebuild')


def _measures(entry: dict) -> Optional[tuple]:
  measures = entry.get('measures')
  return None if measures is None else tuple(ImageMeasures.from_index(measures))


def _mask_classes(entry: dict) -> Optional[Tuple[int, ...]]:
  ids = entry.get('mask_classes')
  return None if ids is None else tuple(ids)


class _DecideFn(beam.DoFn):
  """(relpath, {'now': [LabeledImage], 'before': [index entry]}) -> LabeledImage to convert;
  the file's previous entries, unless it is to be reused, as (relpath, index entry) on the
  ``previous`` output (for the diff: the file was removed since, or is converted again); and
  the files to reuse, packed (``transforms.batches.encode_entries``): their (record_sha256,
  relpath, split) by the ``INDEX_PACK`` on the ``reuse`` output, their :func:`reuse_row` s by
  the ``EXAMPLES_PER_BATCH`` on the ``rows`` output (fewer at a bundle's end), so that no step
  after this one takes a reused file as an element of its own."""

  def __init__(self, stats_split: Optional[str], measured: bool = False):
    self._stats_split = stats_split
    self._measured = measured
    self._hashed = beam.metrics.Metrics.counter(METRICS_NAMESPACE, 'incremental_files_hashed')

  def start_bundle(self):
    self._index: List[tuple] = []
    self._rows: List[tuple] = []

  def process(self, element) -> Iterable:
    relpath, grouped = element
    reused = False
    for image in grouped['now']:
      before = next(iter(grouped['before']), None)
      if before is not None and self._unchanged(image, before):
        reused = True
        row = reuse_row(image, before)
        self._index.append((row[8], relpath, image.split))
        self._rows.append(row)
        if len(self._rows) == EXAMPLES_PER_BATCH:
          yield beam.pvalue.TaggedOutput(ROWS_TAG, encode_entries(self._rows))
          self._rows = []
        if len(self._index) == INDEX_PACK:
          yield beam.pvalue.TaggedOutput(REUSE_TAG, encode_entries(self._index))
          self._index = []
      else:
        yield image
    if not reused:  # a reused file is unchanged, and counted so in bulk (DiffAgainstPrevious)
      for before in grouped['before']:
        yield beam.pvalue.TaggedOutput(PREVIOUS_TAG, (relpath, before))

  def finish_bundle(self):
    for tag, packed in ((ROWS_TAG, self._rows), (REUSE_TAG, self._index)):
      if packed:
        yield beam.pvalue.TaggedOutput(tag, GlobalWindows.windowed_value(encode_entries(packed)))
    self._index, self._rows = [], []

  def _unchanged(self, image: LabeledImage, before: dict) -> bool:
    if (image.label != before.get('label') or image.split != before.get('split')
        or (image.source_sha256 is not None and image.source_sha256 != before.get('sha256'))
        # an index of a version that kept no record digests: nothing to verify a copy with
        or before.get('record_sha256') is None
        or (image.split == self._stats_split and before.get('pixel_sums') is None)
        # --image_checks: a record from a run that did not measure it (or whose measures
        # lack the pixels that confirm near duplicates) is converted again
        or (self._measured and image.mask is None
            and 'pixels' not in (before.get('measures') or {}))
        # a mask's class ids (the split's class counts) from a run that did not keep them
        or (image.mask is not None and before.get('mask_classes') is None)):
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


def _read_batch(path: str, offset: int) -> Tuple[List[Frame], int, Optional[FramingError]]:
  """Up to ``_BATCH_BYTES`` of frames of an uncompressed shard from byte ``offset``, each
  length field checked against its checksum: (frames, the offset after them or -1 once the
  shard has ended, the FramingError of a shard cut short or of a length field that fails its
  checksum, returned rather than raised: bad data, not a read to retry)."""
  frames = []
  with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
    if offset:
      handle.seek(offset)
    try:
      for frame in read_frames(handle, offset, length_ok=length_checksum_ok):
        frames.append(frame)
        end = frame.offset + HEADER_BYTES + len(frame.body)
        if end - offset >= _BATCH_BYTES:
          return frames, end, None
    except FramingError as error:
      return frames, -1, error
  return frames, -1, None


def shard_frames(path: str) -> Iterator[Frame]:
  """Every record frame of one TFRecord shard (``.gz`` ones decompressed: offsets are of the
  decompressed stream), in file order, each read once and its length field checked against its
  checksum (the data's checksum is the caller's to check: :func:`data_checksum_ok`). Transient
  errors are retried (``transforms.files.reads``) from the last whole batch read, so no frame
  is yielded twice.

  Raises:
    UnreadableFile, ReadFailed: see ``transforms.files.reads``.
    FramingError: the shard is cut short, a length field fails its checksum, or a ``.gz``
      shard does not inflate: nothing after that frame can be located (``error.offset``: the
      frame's byte offset; None in a gzip stream).
  """
  if path.endswith(contract.GZIP_SUFFIX):  # no cheap seek into gzip: one read of the file
    data = reads.read_bytes(path, CompressionTypes.UNCOMPRESSED)
    try:
      yield from read_frames(gzip.GzipFile(fileobj=io.BytesIO(data)),
                             length_ok=length_checksum_ok)
    except (OSError, EOFError, zlib.error) as error:  # from the inflate of bytes in memory:
      # a damaged gzip stream (BadGzipFile is an OSError), not a read to retry
      raise FramingError(f'not a whole gzip stream: {error}') from error
    return
  offset = 0
  while offset >= 0:
    frames, offset, problem = reads.with_retries(
        lambda start=offset: _read_batch(path, start), path)
    yield from frames
    if problem is not None:
      raise problem


def _verify(frame: Frame, index: _ReuseIndex
            ) -> Tuple[Optional[str], Optional[bytes], Optional[str]]:
  """One previous record's verdict: (the file it names, None if it names none; the
  ``record_sha256`` the previous index holds for that file if the night reuses it, else None;
  why the record may not be copied, None if it may, or if it is not to be copied anyway).

  A record whose frame checksums hold and whose SHA-256 is a file's ``record_sha256`` is that
  file's record as the previous night wrote it (its bytes, ``image/filename`` included, are
  those the digest was taken of): the same verdict as reading its ``image/filename`` and
  comparing the digests, without parsing the record. Only the others (records of files not
  reused, damaged ones) are parsed, to name their file.
  """
  intact = data_checksum_ok(frame)
  digest = None
  if intact:
    digest = hashlib.sha256(memoryview(frame.body)[:-FOOTER_BYTES]).digest()
    relpath = index.by_digest.get(digest)
    if relpath is not None:
      return relpath, digest, None
  try:
    relpath = example_filename(frame.data)
  except ValueError as error:  # no file to name: damaged, or not this job's record
    return None, None, ('corrupt: the data fails its checksum' if not intact
                        else f'not a record of this job: {error}')
  expected = index.files.get(relpath, (None,))[0]
  if not intact:  # the name read from a damaged record may be wrong: a clue, no more
    return relpath, expected, f'corrupt: the data fails its checksum (it names {relpath})'
  if expected is None:  # removed, changed or moved since: converted again, or gone
    return relpath, None, None
  return relpath, expected, (
      f'the record differs from the one images.jsonl recorded (SHA-256 {digest.hex()[:16]}'
      f'..., not {expected.hex()[:16]}...)')


class _SplitStaging:
  """The verified records of one previous shard that go to one split, handed to the writer as
  one keys file in its staging folder (``transforms.outputs.write``, :data:`KEYS_SUFFIX`).

  An uncompressed shard's records stay where they are: the keys file names the shard, with
  each record's frame offset and frame number there and the shard's version (size and time:
  the writer fails rather than copy from a shard rewritten since). A ``.gz`` shard, which has
  no cheap seek, has its records written into one uncompressed staging file of their own, in
  file order. Memory: 32 bytes per record (24 for a ``.gz`` shard).
  """

  def __init__(self, shard: str, folder: str, version: Optional[str],
               claim: Optional[run_claim.ClaimToken]):
    self._shard = shard
    self._folder = folder
    self._version = version  # None: the records are written into a staging file
    self._claim = claim
    self._offsets = array.array('q')
    self._numbers = array.array('q')
    self._keys = bytearray()
    self._handle = None
    self._path = None
    self._position = 0

  def add(self, frame: Frame, number: int, key: bytes) -> None:
    """Adds the verified record ``frame``, frame ``number`` of the shard, of shuffle key
    ``key``."""
    self._keys += key
    if self._version is not None:
      self._offsets.append(frame.offset)
      self._numbers.append(number)
      return
    if self._handle is None:  # ClaimLost: another run owns the output now
      self._path, self._handle = create_staging_file(self._folder, _REUSED_PREFIX, self._claim)
    self._handle.write(frame.header)
    self._handle.write(frame.body)
    self._offsets.append(self._position)
    self._position += HEADER_BYTES + len(frame.body)

  def finish(self) -> str:
    """Writes the keys file (closes the staging file first); returns the keys file's path."""
    if self._version is None:
      self._handle.close()
      self._handle = None
      beam.metrics.Metrics.counter(METRICS_NAMESPACE, STAGING_RECORDS_WRITTEN).inc(
          len(self._offsets))
      return write_staging_keys(StagingFile(self._path, self._offsets, bytes(self._keys)))
    run_claim.check(self._claim)
    return write_staging_keys(
        StagingFile(self._shard, self._offsets, bytes(self._keys), self._numbers, self._version),
        FileSystems.join(self._folder, f'{_REUSED_PREFIX}-{uuid.uuid4().hex}{KEYS_SUFFIX}'))

  def close(self) -> None:
    """Closes a staging file left open by an error (the staging folder goes with the run)."""
    if self._handle is not None:
      self._handle.close()
      self._handle = None


class _CopyRecordsFn(beam.DoFn):
  """A previous shard's path -> (split, keys file path) on the ``staged`` output for each split
  its verified records to reuse (module docstring) are of (:class:`_SplitStaging`: the records
  reach the final shards through the writer, which copies them once), and one ShardCheck on
  the ``checks`` output. No record is its own element.

  Side input ``index``: the packed (record_sha256, relpath, split) entries of every file to
  reuse (:class:`_ReuseIndex`).

  Args:
    staging_dir: the writer's staging folder (``<output_dir>/.staging-write``); the keys files
      (and a ``.gz`` shard's staging file) go to its ``<split>/``.
    shuffle_seed: ``--shuffle_seed`` (each record's key: ``shuffle_key(relpath, seed)``).
    claim: the run's claim, checked before each file is created (None: no check).
  """

  def __init__(self, staging_dir: str, shuffle_seed: int = 0,
               claim: Optional[run_claim.ClaimToken] = None):
    self._staging_dir = staging_dir
    self._shuffle_seed = shuffle_seed
    self._claim = claim
    self._reused = beam.metrics.Metrics.counter(METRICS_NAMESPACE, 'images_reused')
    self._bytes = beam.metrics.Metrics.counter(METRICS_NAMESPACE, 'reused_record_bytes')
    self._rejected = beam.metrics.Metrics.counter(METRICS_NAMESPACE,
                                                  'previous_records_rejected')
    self._seen = None
    self._index = None

  def process(self, shard: str, index: List[bytes]) -> Iterable:
    if index is not self._seen:  # one lookup per side input, not one per shard
      self._seen, self._index = index, _ReuseIndex(index)
    copied, rejected = [], []
    staging: Dict[str, _SplitStaging] = {}
    record_bytes = 0

    def reject(file, number, offset, reason):
      self._rejected.inc()
      rejected.append(RejectedRecord(file, shard, number, offset, reason))
      where = '' if number is None else f', record {number}' + (
          '' if offset is None else f' (byte {offset})')
      _LOG.warning('%s%s of the previous run: %s%s', shard, where, reason,
                   f'; {file} is converted again' if file else '')

    number = 0  # frames read so far: the index of the next one
    read = False
    try:
      try:
        # an uncompressed shard is read in place by the writer: its version as verified (taken
        # before the read: a shard rewritten while it is read fails the writer's check)
        version = None if shard.endswith(contract.GZIP_SUFFIX) else file_version(shard)
        for number, frame in enumerate(shard_frames(shard), 1):
          relpath, expected, problem = _verify(frame, self._index)
          if problem is not None:
            reject(relpath if expected else None, number - 1, frame.offset, problem)
          elif expected is not None:
            split = self._index.files[relpath][1]
            if split not in staging:
              staging[split] = _SplitStaging(
                  shard, FileSystems.join(self._staging_dir, split), version, self._claim)
            staging[split].add(frame, number - 1, shuffle_key(relpath, self._shuffle_seed))
            copied.append(relpath)
            record_bytes += len(frame.body) - FOOTER_BYTES
      except FramingError as error:  # the rest of the shard cannot be located
        reject(None, number, error.offset, f'{error.reason}; the images of this record and '
               'those after it are converted again')
      except (reads.UnreadableFile, FileNotFoundError) as error:  # gone (file_version) or
        # denied: none of its records can be reused
        reject(None, None, None, f'cannot read the shard: {error}')
      read = True
    finally:
      if not read:  # an error on its way to the runner, which retries the shard afresh
        for split_staging in staging.values():
          split_staging.close()
    for split in sorted(staging):
      yield beam.pvalue.TaggedOutput(STAGED_TAG, (split, staging[split].finish()))
    self._reused.inc(len(copied))
    self._bytes.inc(record_bytes)
    yield beam.pvalue.TaggedOutput(CHECKS_TAG, ShardCheck(shard, encode_entries(copied),
                                                          tuple(rejected)))


class _AccountFn(beam.DoFn):
  """None -> the relpath of every file to reuse that no shard copied a verified record of (to
  be converted again), and the night's NightCounts (less ``converted``) on the ``counts``
  output.

  Side inputs: ``index`` (the packed entries of every file to reuse, :class:`_ReuseIndex`),
  ``checks`` (every ShardCheck). One element: the index and a count of the copied files'
  paths in memory (about 350 bytes per reused image).
  """

  def __init__(self):
    self._reconverted = beam.metrics.Metrics.counter(METRICS_NAMESPACE, 'images_reconverted')

  def process(self, unused_element, index: List[bytes], checks: List[ShardCheck]):
    files = _ReuseIndex(index).files
    copies = collections.Counter(file for check in checks for file in check.copied_files())
    named = {record.file for check in checks for record in check.rejected}
    rejected = [record for check in sorted(checks, key=lambda check: check.shard)
                for record in check.rejected]
    missing = sorted(files.keys() - copies.keys())
    for relpath in missing:
      self._reconverted.inc()
      if relpath not in named:  # its record was lost with a shard's unlocatable rest, or absent
        rejected.append(RejectedRecord(relpath, None, None, None, NO_INTACT_RECORD))
        _LOG.warning('%s: %s; it is converted again', relpath, NO_INTACT_RECORD)
      yield relpath
    yield beam.pvalue.TaggedOutput(_COUNTS_TAG, NightCounts(
        reused=sum(copies.values()), converted=0, to_reuse=len(files),
        reconverted=len(missing), rejected=tuple(rejected[:MAX_REJECTED_LISTED])))


class _KeepCopiedFn(beam.DoFn):
  """A list of rows of files to reuse (:func:`reuse_row`, as ``encode_entries`` bytes) -> the
  List[ConvertedExample] without record bytes of those whose record was copied (nothing for a
  list left empty); the LabeledImage of each other one on the ``again`` output (converted
  again) and its previous entry on the ``previous`` output (the diff counts it unchanged).

  Side input ``missing``: the relpaths of the files no verified record was copied for (few:
  the rejected ones).
  """

  def __init__(self):
    self._seen = None
    self._missing = frozenset()

  def process(self, rows: bytes, missing: List[str]) -> Iterable:
    if missing is not self._seen:  # one set per side input, not one per list
      self._seen, self._missing = missing, frozenset(missing)
    examples = []
    for row in entries_in([rows]):
      if row[1] in self._missing:
        image = row_image(row)
        yield beam.pvalue.TaggedOutput(AGAIN_TAG, image)
        yield beam.pvalue.TaggedOutput(PREVIOUS_TAG, (image.relpath, _previous_entry(
            image.relpath, image.label, image.split, row[7])))
      else:
        examples.append(row_example(row))
    if examples:
      yield examples


class ReusePreviousRecords(beam.PTransform):
  """PCollection[LabeledImage] -> a dict of PCollections:

  - ``convert``: LabeledImage, to go through the codec: new and changed images, and those whose
    previous record failed verification;
  - ``batches``: List[ConvertedExample] without record bytes (``serialized=b''``), up to
    ``EXAMPLES_PER_BATCH`` per list, of the records reused (copied from the previous run,
    verified; their fields as the previous index holds them): what the per-image analysis
    steps read (``transforms.batches.ExampleBatches``);
  - ``staged``: (split, keys file path) of the same records, for the writer (``WriteSplits``'s
    ``staged``): one per previous shard and split;
  - ``previous``: (relpath, previous index entry) of every file of the previous index whose
    record is not reused (removed, changed, moved, relabelled, converted again): what
    ``DiffAgainstPrevious`` compares this night's converted examples with;
  - ``counts``: one element, the NightCounts.

  Args:
    previous_index: the previous run's ``images.jsonl``.
    previous_shards: the paths of every shard of the previous run.
    output_dir: this run's output folder (the writer's staging folder is under it).
    stats_split: the split whose examples carry pixel sums (``--stats``), or None.
    measured: examples carry their ``measures`` (``--image_checks``, decoded images): an
      unchanged file whose previous index entry has none is converted again.
    shuffle_seed: ``--shuffle_seed``, as the writer takes it.
    claim: the run's ``transforms.outputs.claim.ClaimToken`` (None: no check).
  """

  def __init__(self, previous_index: str, previous_shards: Sequence[str], output_dir: str,
               stats_split: Optional[str] = None, measured: bool = False,
               shuffle_seed: int = 0, claim: Optional[run_claim.ClaimToken] = None):
    super().__init__()
    self._measured = measured
    self._previous_index = previous_index
    self._previous_shards = list(previous_shards)
    self._staging_dir = FileSystems.join(output_dir, WRITER_FOLDER)
    self._stats_split = stats_split
    self._shuffle_seed = shuffle_seed
    self._claim = claim

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
            REUSE_TAG, ROWS_TAG, PREVIOUS_TAG, main='convert'))
    # the files to reuse, (record_sha256, relpath, split) packed by the 20,000 into one bytes
    # value: the side input of the copy and of the account
    index = beam.pvalue.AsList(decided[REUSE_TAG])
    copied = (
        p
        | 'previous shards' >> beam.Create(self._previous_shards)
        | 'spread the shards' >> beam.Reshuffle()
        | 'copy verified records' >> beam.ParDo(
            _CopyRecordsFn(self._staging_dir, self._shuffle_seed, self._claim), index=index
        ).with_outputs(CHECKS_TAG, STAGED_TAG))
    accounted = (
        p
        | 'once' >> beam.Create([None])
        | 'records not copied' >> beam.ParDo(
            _AccountFn(), index=index, checks=beam.pvalue.AsList(copied[CHECKS_TAG])
        ).with_outputs(_COUNTS_TAG, main='missing'))
    # the reused files' examples, in lists, less those whose record was not copied
    kept = (
        decided[ROWS_TAG]
        | 'keep the copied' >> beam.ParDo(
            _KeepCopiedFn(), missing=beam.pvalue.AsList(accounted.missing)).with_outputs(
                AGAIN_TAG, PREVIOUS_TAG, main='batches'))
    convert = ((decided.convert, kept[AGAIN_TAG])
               | 'new, changed and not verified' >> beam.Flatten())
    converted = convert | 'count converted' >> beam.combiners.Count.Globally()
    counts = accounted[_COUNTS_TAG] | 'counts' >> beam.Map(
        lambda counts, n: counts._replace(converted=n), beam.pvalue.AsSingleton(converted))
    previous = ((decided[PREVIOUS_TAG], kept[PREVIOUS_TAG])
                | 'previous entries not reused' >> beam.Flatten())
    return {'convert': convert, 'batches': kept.batches, 'staged': copied[STAGED_TAG],
            'previous': previous, 'counts': counts}


class _DropFromListsFn(beam.DoFn):
  """List[ConvertedExample] -> the list without the examples of the files among ``dropped``
  (side input; nothing for a list left empty), and (relpath, the previous index entry's
  fields the diff reads) of each one dropped on the ``previous`` output."""

  def __init__(self):
    self._dropped_count = beam.metrics.Metrics.counter(METRICS_NAMESPACE,
                                                       'near_duplicates_dropped')
    self._seen = None
    self._set = frozenset()

  def process(self, batch: List[ConvertedExample], dropped: List[str]):
    if dropped is not self._seen:  # one set per side input, not one per list
      self._seen, self._set = dropped, frozenset(dropped)
    kept = [example for example in batch if example.relpath not in self._set]
    if len(kept) == len(batch):
      yield batch
      return
    self._dropped_count.inc(len(batch) - len(kept))
    for example in batch:
      if example.relpath in self._set:
        yield beam.pvalue.TaggedOutput(PREVIOUS_TAG, (example.relpath, _previous_entry(
            example.relpath, example.label, example.split, example.source_sha256)))
    if kept:
      yield kept


class _DropFromKeysFn(beam.DoFn):
  """(split, keys file path) -> itself, or, when the keys file lists a record of a file among
  ``dropped`` (side input), (split, path of a new keys file in the same folder) listing the
  others (their frame numbers kept, so that the writer reads no record it left out). The old
  keys file is left for the staging folder's deletion; a retry writes another new one."""

  def __init__(self, shuffle_seed: int, claim: Optional[run_claim.ClaimToken] = None):
    self._shuffle_seed = shuffle_seed
    self._claim = claim
    self._seen = None
    self._keys = frozenset()

  def process(self, staged: Tuple[str, str], dropped: List[str]):
    if dropped is not self._seen:  # one set of keys per side input
      self._seen = dropped
      self._keys = frozenset(shuffle_key(relpath, self._shuffle_seed) for relpath in dropped)
    split, keys_path = staged
    if not self._keys:
      yield staged
      return
    listed = read_staging_keys(keys_path)
    size = SHUFFLE_KEY_BYTES
    keep = [i for i in range(len(listed.offsets))
            if listed.keys[i * size:(i + 1) * size] not in self._keys]
    if len(keep) == len(listed.offsets):
      yield staged
      return
    numbers = listed.numbers if listed.numbers is not None else range(len(listed.offsets))
    run_claim.check(self._claim)  # ClaimLost: another run owns the output now
    folder = FileSystems.split(keys_path)[0]
    yield split, write_staging_keys(
        StagingFile(listed.path, array.array('q', (listed.offsets[i] for i in keep)),
                    b''.join(listed.keys[i * size:(i + 1) * size] for i in keep),
                    array.array('q', (numbers[i] for i in keep)), listed.version),
        FileSystems.join(folder, f'{_REUSED_PREFIX}-{uuid.uuid4().hex}{KEYS_SUFFIX}'))


class DropReused(beam.PTransform):
  """:class:`ReusePreviousRecords`' ``{'batches', 'staged', 'previous'}`` -> the same, without
  the records of the files named by ``dropped`` (PCollection[str] of relpaths, a side input:
  ``--dedup=keep_first_near``'s files not kept): out of the lists and the keys files, and each
  one's previous entry added to ``previous`` (so the diff sees it as a file not written, as it
  sees a converted example dropped).

  Args:
    dropped: PCollection[str] of the relpaths not written.
    shuffle_seed: ``--shuffle_seed`` (the keys files hold each record's shuffle key).
    claim: the run's claim, checked before a keys file is written (None: no check).
  """

  def __init__(self, dropped, shuffle_seed: int = 0,
               claim: Optional[run_claim.ClaimToken] = None):
    super().__init__()
    self._dropped = dropped
    self._shuffle_seed = shuffle_seed
    self._claim = claim

  def expand(self, reused):
    dropped = beam.pvalue.AsList(self._dropped)
    lists = reused['batches'] | 'drop from the lists' >> beam.ParDo(
        _DropFromListsFn(), dropped=dropped).with_outputs(PREVIOUS_TAG, main='kept')
    staged = reused['staged'] | 'drop from the keys files' >> beam.ParDo(
        _DropFromKeysFn(self._shuffle_seed, self._claim), dropped=dropped)
    previous = ((reused['previous'], lists[PREVIOUS_TAG])
                | 'and the dropped files' >> beam.Flatten())
    return {'batches': lists.kept, 'staged': staged, 'previous': previous}


class CountConverted(beam.PTransform):
  """PCollection[LabeledImage] -> the one-element NightCounts of a night that reuses nothing."""

  def expand(self, images):
    return (images
            | 'count' >> beam.combiners.Count.Globally()
            | 'as counts' >> beam.Map(lambda n: NightCounts(reused=0, converted=n)))
