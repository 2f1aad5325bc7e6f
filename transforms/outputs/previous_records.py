"""A previous run's records, read from its shards and verified, then handed to the writer where
they are: the copy of an incremental night (``transforms.outputs.incremental`` decides which
files are reused; this module finds and checks their records).

What a copied record is checked for (:class:`CopyRecordsFn`): its frame's two checksums (the
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
"""

import array
import gzip
import hashlib
import io
import logging
import uuid
import zlib
from typing import Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from imagerecords import contract
from imagerecords.framing import (FOOTER_BYTES, HEADER_BYTES, Frame, FramingError,
                                  data_checksum_ok, length_checksum_ok, read_frames)
from imagerecords.manifest_schema import RejectedRecord  # a previous record not copied, and why
from imagerecords.records import example_filename

from transforms.batches import encode_entries, entries_in
from transforms.elements import METRICS_NAMESPACE
from transforms.files import reads
from transforms.inputs.splits import shuffle_key
from transforms.outputs import claim as run_claim
from transforms.outputs.staging import (KEYS_SUFFIX, STAGING_RECORDS_WRITTEN, StagingFile,
                                        create_staging_file, file_version, write_staging_keys)

_LOG = logging.getLogger(__name__)

CHECKS_TAG = 'checks'
"""The tag of the copy's output of one ShardCheck per previous shard."""
STAGED_TAG = 'staged'
"""The tag of the copy's output of (split, keys file path): reused records, for the writer."""
_REUSED_PREFIX = 'reused'  # the names of the copy's files in the writer's staging folder

_BATCH_BYTES = 64 << 20  # records read per attempt from an uncompressed shard


def write_reused_keys(staging: StagingFile, folder: str) -> str:
  """Writes the keys file of ``staging``, records of a previous run's shard, under a new name in
  the writer's staging folder ``folder`` (the shard itself is never the copy's to delete);
  returns its path."""
  return write_staging_keys(
      staging, FileSystems.join(folder, f'{_REUSED_PREFIX}-{uuid.uuid4().hex}{KEYS_SUFFIX}'))


class ReuseIndex:
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


def _verify(frame: Frame, index: ReuseIndex
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
  one keys file in its staging folder (``transforms.outputs.staging``, :data:`KEYS_SUFFIX`).

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
    return write_reused_keys(
        StagingFile(self._shard, self._offsets, bytes(self._keys), self._numbers, self._version),
        self._folder)

  def close(self) -> None:
    """Closes a staging file left open by an error (the staging folder goes with the run)."""
    if self._handle is not None:
      self._handle.close()
      self._handle = None


class CopyRecordsFn(beam.DoFn):
  """A previous shard's path -> (split, keys file path) on the ``staged`` output for each split
  its verified records to reuse (module docstring) are of (:class:`_SplitStaging`: the records
  reach the final shards through the writer, which copies them once), and one ShardCheck on
  the ``checks`` output. No record is its own element.

  Side input ``index``: the packed (record_sha256, relpath, split) entries of every file to
  reuse (:class:`ReuseIndex`).

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
      self._seen, self._index = index, ReuseIndex(index)
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
