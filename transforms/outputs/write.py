"""Write each split's examples as a fixed number of TFRecord shards, in memory that does not
grow with the data, in an order fixed by the seed alone.

Beam's ``WriteToTFRecord(num_shards=N)`` keys every record round-robin and groups them with a
GroupByKey; the local runner holds everything that reaches a GroupByKey in memory (several
times the output's size: docs/benchmarks.md, "Memory"). Here the records never reach a
GroupByKey; only small references do::

    PCollection[ConvertedExample]
      | partition by split
      | <split>: keyed records               (shuffle_key(relpath, seed), serialized
      |                                      tf.train.Example bytes)
      | <split>: write staging files         one uncompressed TFRecord file per bundle in
      |                                      OUT/.staging-write/<split>/, records in arrival
      |                                      order, no GroupByKey over the records
      |                                      and beside it <file>.keys: its frame offsets
      |                                      and keys (24 bytes per record) -> its path
      |   + staged: (split, keys file path)  records framed elsewhere: a night's reused
      |                                      records, listed per previous shard in a keys file
      |                                      that names the shard (transforms.outputs.
      |                                      previous_records): never written into a staging
      |                                      file
      | <split>: all staging files           one list of keys files' paths (a few per worker,
      |                                      one per previous shard)
      | <split>: deal into N shards          read every .keys file, order every record on its
      |                                      key, cut N stretches
      |                                      -> (shard index, [ShardRange, ...]) per shard
      | <split>: spread shards over workers  Reshuffle of the N references
      | <split>: write shards                copy the framed records into each shard, in key
      |                                      order, counting them and digesting the bytes as
      |                                      they are stored; it takes its final name once
      |                                      complete
      -> all splits | delete staging files   after every shard is written
      -> PCollection[ShardSummary]: each final shard's path, record count, SHA-256 and size

The order: every record's key is :func:`transforms.inputs.splits.shuffle_key`, 16 bytes of the
SHA-256 of the seed and its path relative to the input root (as TFDS orders its examples on a hash
of their key). Each split's records are ordered on it and cut into ``N`` stretches whose sizes
differ by at most one record; shard ``s`` holds stretch ``s``, in key order. Which records a
shard holds, and in what order, therefore depends only on the split's set of paths, their
record bytes, the seed and ``N``: the same input, options and ``--shuffle_seed`` give
byte-identical shard files (and DALI index files) on any runner, with any number of workers
or bundles, and a nightly run that copies most records from the previous night's shards
(``transforms.outputs.incremental``: it hands the writer those records where they are, in
the previous shards) writes the files a full rebuild writes. Each shard is a uniform
random sample of its split, in random order. (Two records of a split share a key only if their
paths are equal, which cannot happen, or by a collision of 128 bits of SHA-256; such a tie would
be broken by staging file name and offset, which follow the runner.)

The cost of that order is in the copy's reads, not in memory: the staging files stay in
arrival order, and a shard's records are read range by range, a range being consecutive
records of one staging file (:func:`plan_shards`). ``ShuffleOrder`` hands the records over
in key-sorted runs (one per shuffle bucket, over a narrow stretch of keys), and a night's reused
records are read from the previous shards, which hold them in key order, so a shard reads a few
long ranges, sequentially (about ``buckets / N + 2`` per shard and source; a previous shard's
range also ends where a record it holds is not reused: records of consecutive frame numbers
only make one range, :class:`StagingFile`). Records that reach the writer in
no particular order (a step that regroups them before it) cost one range, i.e. one seek, per
record: cheap on local disk, but one ranged request per record on gs:// and s3://. Memory: the
plan holds 24 bytes per record of the split and about 60 while it sorts
(``bench/shard_plan.py``), plus about 110 bytes per ShardRange, the
copy one record and at most 16 open staging files. The copy moves framed records
(header, data, CRC) byte for byte, with no re-encoding, GZIP-compressing them on the way when
asked. File names follow the contract: ``<split>-SSSSS-of-NNNNN.tfrecord[.gz]``, a fixed number
per split whatever the data's size. With ``dali_index``, each shard gets an NVIDIA DALI index
file ``<shard file name>.idx`` written while the shard is written (see :func:`copy_shard`).

The offsets and keys travel through a keys file beside each staging file, not through the
runner (``transforms.outputs.staging`` owns that format).

Every step is safe to run again after it completed (Flink restarts a failed region's tasks,
and a step whose input was kept from before runs a second time): a shard that exists under its
final name with the records its plan counts is complete, so writing it is skipped (it is read
back for its summary); planning after the staging files were deleted is skipped when every
shard of the split exists.

A shard does not exist half-written under its final name: locally it is written as
``OUT/.staging-write/.shards/<name>`` and renamed into place when complete (one ``rename`` on the
same filesystem); on object stores an object appears only when its upload completes, so it is
written under its final name directly, and an error cancels the upload where Beam's writer can
(gs://). Beam's s3:// writer completes an upload even on an error: the step run again finds that
shard short of its plan and writes it again. A run that dies (a full disk, say) leaves only
staging files, which no reader takes for shards.

The staging files are written by this module rather than Beam's ``WriteToTFRecord``, whose
finalization matches and deletes files by glob patterns built from the output path: with a
``[``, ``*`` or ``?`` in ``--output_dir`` it would select another folder's files.

What the manifest says of each shard (its record count, size and SHA-256: :class:`ShardSummary`)
is taken while the shard is written, from the bytes handed to the filesystem (after GZIP
compression, for ``.gz`` shards), so no step reads the output back: the metadata step used to
read every shard front to back on one worker, a download of the whole output on gs:// and s3://
(docs/benchmarks.md, "Shard digests while writing"). Only a shard found already written (a step
run again) is read back for its summary (:func:`summarize_shard`).

Every file operation goes through Beam's ``FileSystems``, so this works on local disk, gs:// and
s3:// alike.
"""

import array
import collections
import contextlib
import gzip
import hashlib
import itertools
import os
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressedFile, CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows
from imagerecords import contract
from imagerecords.framing import (FOOTER_BYTES, HEADER_BYTES, FramingError, frame_record,
                                  read_frames)

from transforms.elements import METRICS_NAMESPACE
from transforms.files.folders import delete_tree, is_local
from transforms.files.textfiles import write_text
from transforms.files.working_folders import WRITER_FOLDER
from transforms.inputs.splits import SHUFFLE_KEY_BYTES, shuffle_key
from transforms.outputs import claim as run_claim
from transforms.outputs.staging import (STAGING_RECORDS_WRITTEN, StagingFile, StagingFileChanged,
                                        create_staging_file, file_version, read_staging_keys,
                                        write_staging_keys)

_STAGING_PREFIX = 'records'
_SHARDS_BEING_WRITTEN = '.shards'  # WRITER_FOLDER's folder of local shards until complete (a
# dot: no split can have the name)


class ShardRange(NamedTuple):
  """A run of consecutive records of one staging file, copied into a final shard.

  path: the staging file (or, for a night's reused records, the previous run's shard that
  holds them). offset: byte offset of the first record's frame in it. num_records: how many
  records, in file order, from there. version: the file's ``'SIZE:MTIME'`` when its records
  were verified (:class:`StagingFile`), checked before the file is read; None for the
  writer's own staging files.
  """
  path: str
  offset: int
  num_records: int
  version: Optional[str] = None


class ShardSummary(NamedTuple):
  """What the manifest says of one written shard (``imagerecords.manifest_schema.ShardEntry``).

  path: the shard's final path. num_records: its records. sha256: the hex SHA-256 of its bytes
  as stored (the GZIP stream, for ``.gz``), which the reader's ``verify_shards='sha256'``
  checks. bytes: its size as stored, in bytes.
  """
  path: str
  num_records: int
  sha256: str
  bytes: int


class _DigestingWriter:
  """A write-only binary stream that passes every byte on to ``stream`` and adds it to a
  SHA-256 and a byte count: what a shard's bytes are as stored. Beam's ``CompressedFile``
  writes its GZIP stream into it as it does into a file (``mode``, ``tell``)."""

  mode = 'wb'

  def __init__(self, stream):
    self._stream = stream
    self.digest = hashlib.sha256()
    self.size = 0
    self.closed = False

  def write(self, data: bytes) -> int:
    self.digest.update(data)
    self.size += len(data)
    return self._stream.write(data)

  def tell(self) -> int:
    return self.size

  def flush(self):
    self._stream.flush()

  def close(self):
    """Closes this view only: the stream itself is its opener's to close (or to abort)."""
    self.closed = True


class _DigestingReader:
  """A read-only, unseekable view of a binary stream that adds every byte read to a SHA-256 and
  a byte count."""

  def __init__(self, stream):
    self._stream = stream
    self.digest = hashlib.sha256()
    self.size = 0

  def read(self, size: int = -1) -> bytes:
    data = self._stream.read(size)
    self.digest.update(data)
    self.size += len(data)
    return data

  def readable(self) -> bool:
    return True

  def seekable(self) -> bool:
    return False


_READ_BYTES = 1 << 20


def summarize_shard(path: str) -> ShardSummary:
  """Reads a written TFRecord shard back (``.gz`` ones decompressed) for its summary: its
  records counted from the framing, its stored bytes digested and counted, in one front-to-back
  read (no seek: one stream on gs:// and s3://). The writer takes the same summary while it
  writes (:func:`copy_shard`); this serves a shard an earlier attempt of the step wrote.

  Raises:
    FramingError: the shard is cut short.
  """
  with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
    stored = _DigestingReader(raw)
    stream = gzip.GzipFile(fileobj=stored) if path.endswith(contract.GZIP_SUFFIX) else stored
    count = sum(1 for _ in read_frames(stream))
    while stored.read(_READ_BYTES):  # what the framing left unread (a gzip trailer)
      pass
  return ShardSummary(path, count, stored.digest.hexdigest(), stored.size)


def plan_shards(files: Sequence[StagingFile], num_shards: int) -> List[List[ShardRange]]:
  """Deals the records of the staging files into ``num_shards`` shards of near-equal size, in
  key order.

  All records are ordered by key (equal keys, which two different paths of a split would have
  only by a collision of 128 bits of SHA-256, by staging path and offset), and that order is
  cut into ``num_shards`` stretches: shard ``s`` gets records ``[s * T // n, (s + 1) * T // n)``
  of the ``T`` in all, so shard sizes differ by at most one record and every record goes to
  exactly one shard. Which records a shard gets, and in what order, depends only on the keys,
  never on how the records were spread over the staging files. Consecutive records of a shard
  that follow each other in one staging file make one ShardRange: a shard whose records
  reached the writer in key-sorted runs (as ``ShuffleOrder`` hands them over) is a few long
  ranges, one whose records came in no order is up to one range per record.

  Memory: about 60 bytes per record while the order is computed (NumPy arrays of the keys,
  offsets, file and record numbers and the sorting permutation), then about 110 bytes per
  ShardRange (``bench/shard_plan.py`` prints both for a million records).

  Args:
    files: every staging file of the split (``StagingFile``), in any order.
    num_shards: the number of final shards, at least 1.

  Returns:
    ``num_shards`` lists of ShardRange (empty lists for empty shards), in shard order; each
    list in the order its records go into the shard.

  Raises:
    ValueError: a StagingFile whose keys do not hold one 16-byte key per offset.
  """
  files = sorted(files, key=lambda file: file.path)  # only equal keys depend on the order
  for file in files:
    if len(file.keys) != len(file.offsets) * SHUFFLE_KEY_BYTES:
      raise ValueError(f'{file.path}: {len(file.keys)} bytes of keys for '
                       f'{len(file.offsets)} records')
    if file.numbers is not None and len(file.numbers) != len(file.offsets):
      raise ValueError(f'{file.path}: {len(file.numbers)} frame numbers for '
                       f'{len(file.offsets)} records')
  counts = np.array([len(file.offsets) for file in files], dtype=np.int64)
  total = int(counts.sum())
  plans: List[List[ShardRange]] = [[] for _ in range(num_shards)]
  if total == 0:
    return plans
  # as native integers: (top 64 bits, low 64 bits) of each key
  keys = np.frombuffer(b''.join(file.keys for file in files), dtype='>u8').astype(np.uint64)
  offsets = np.concatenate([np.frombuffer(file.offsets, dtype=np.int64) for file in files
                            if len(file.offsets)])
  file_number = np.repeat(np.arange(len(files), dtype=np.int32), counts)
  # each record's frame number in its file: where records of the file are left out between
  # two listed ones (a previous shard's records not reused), the numbers jump
  record_number = np.concatenate([
      np.arange(len(file.offsets), dtype=np.int64) if file.numbers is None
      else np.frombuffer(file.numbers, dtype=np.int64) for file in files if len(file.offsets)])
  # lexsort: the last key is the primary one
  order = np.lexsort((record_number, file_number, keys[1::2], keys[0::2]))
  del keys
  file_number, record_number, offsets = file_number[order], record_number[order], offsets[order]
  del order
  # a range starts where the file changes or the record is not the next one of its file
  starts = np.ones(total, dtype=bool)
  starts[1:] = ((file_number[1:] != file_number[:-1])
                | (record_number[1:] != record_number[:-1] + 1))
  bounds = [shard * total // num_shards for shard in range(num_shards + 1)]
  starts[[bound for bound in bounds[:-1] if bound < total]] = True  # every shard starts one
  start_at = np.flatnonzero(starts)
  lengths = np.diff(np.append(start_at, total)).tolist()
  shard_of = np.searchsorted(np.array(bounds[1:]), start_at, side='right').tolist()
  for shard, number, offset, length in zip(shard_of, file_number[start_at].tolist(),
                                           offsets[start_at].tolist(), lengths):
    plans[shard].append(ShardRange(files[number].path, offset, length, files[number].version))
  return plans


def dali_index_path(shard_path: str) -> str:
  """The DALI index file of a shard: ``<shard path>.idx``."""
  return shard_path + contract.DALI_INDEX_SUFFIX


_OPEN_STAGING_FILES = 16
"""The most staging files a shard's copy keeps open at once (least recently used closed first):
the ranges of a shard come from few files at a time when the records reached the writer in
key-sorted runs; on gs:// and s3:// every open stream holds a read buffer."""


class _StagingReader:
  """The staging files a shard's copy reads, each opened once while in use, read sequentially
  and seeking only where a range does not start where the last one of its file stopped."""

  def __init__(self, max_open: int = _OPEN_STAGING_FILES):
    self._max_open = max_open
    # path -> [its open stream, the offset where the last range read stopped (None: unknown)]
    self._open: 'collections.OrderedDict[str, list]' = collections.OrderedDict()

  def frames(self, run: ShardRange) -> Iterator:
    """Yields the ``run.num_records`` frames of ``run``, in file order.

    Raises:
      FramingError: the file holds fewer records from ``run.offset`` than the run says.
      StagingFileChanged: the file's version is not ``run.version`` (checked when the file is
        opened).
      FileNotFoundError: a file with a ``run.version`` is gone.
    """
    entry = self._open.pop(run.path, None)
    if entry is None:
      if len(self._open) >= self._max_open:
        _, (oldest, _) = self._open.popitem(last=False)
        oldest.close()
      version = run.version and file_version(run.path)
      if version != run.version:
        raise StagingFileChanged(
            f'{run.path} changed after its records were verified (it was {run.version}, it is '
            f'{version}): a previous run\'s shard rewritten while the night ran; run the night '
            'again')
      entry = [FileSystems.open(run.path, compression_type=CompressionTypes.UNCOMPRESSED),
               None]
    self._open[run.path] = entry
    stream = entry[0]
    if entry[1] != run.offset:
      stream.seek(run.offset)
    entry[1] = None  # unknown until every frame of the run is read
    copied = 0
    position = run.offset
    try:
      for frame in itertools.islice(read_frames(stream, run.offset), run.num_records):
        yield frame
        position += HEADER_BYTES + len(frame.body)
        copied += 1
    except FramingError as error:
      raise FramingError(f'{run.path}: {error}') from None
    if copied < run.num_records:
      raise FramingError(f'{run.path}: {copied} records from byte {run.offset}, where '
                         f'the plan says {run.num_records}')
    entry[1] = position

  def close(self):
    while self._open:
      _, (stream, _) = self._open.popitem()
      stream.close()


def copy_shard(ranges: Sequence[ShardRange], shard_path: str, compressed: bool = False,
               dali_index: bool = False) -> ShardSummary:
  """Writes the framed records of ``ranges``, in order, into the shard file ``shard_path``, and
  returns its summary (records, SHA-256 and size of the bytes as stored), taken as it is written.

  Frames are copied byte for byte (12-byte header, data, 4-byte data CRC), one at a time, so
  memory holds one record (and the read buffers of at most 16 open staging files). A range
  that starts where the previous range of its staging file stopped is read on without a seek.
  A ``compressed`` shard is GZIP-compressed by Beam's ``CompressedFile``, as
  ``FileSystems.create`` would, and digested after compression. On an error each stream is
  left through its own context manager: a gs:// upload is cancelled, a local file is left in
  ``write_complete_shard``'s folder (s3:// completes its upload: see :func:`_write_shard`).
  With ``dali_index`` (uncompressed shards only), also writes ``<shard_path>.idx`` while
  copying: one ``"<offset> <size>\\n"`` line per record, the byte
  offset of the record's frame in the shard and the frame's whole length (header + data + CRC):
  the format of NVIDIA DALI's ``tools/tfrecord2idx``, which ``fn.readers.tfrecord(index_path=)``
  reads.

  Returns:
    The shard's :class:`ShardSummary`, its ``path`` ``shard_path``.

  Raises:
    FramingError: a staging file holds fewer records than the plan says.
    StagingFileChanged, FileNotFoundError: a file a range names with a ``version`` (a previous
      run's shard) changed or is gone since its records were verified.
    ValueError: ``dali_index`` with ``compressed`` (DALI needs offsets in uncompressed files).
  """
  if dali_index and compressed:
    raise ValueError('a DALI index needs uncompressed shards')
  if not compressed and not any(run.num_records for run in ranges):
    # write_text creates zero-byte files on S3 too, which FileSystems.create cannot.
    write_text(shard_path, '')
    if dali_index:
      write_text(dali_index_path(shard_path), '')
    return ShardSummary(shard_path, 0, hashlib.sha256().hexdigest(), 0)
  position = written = 0
  mime_type = 'application/octet-stream'
  if compressed:
    mime_type = CompressionTypes.mime_type(CompressionTypes.GZIP, mime_type)
  # Each stream is left through its own context manager, which on an error aborts instead of
  # completing: an object store's upload is cancelled (no partial shard under its final name),
  # a local file is closed where it lies (in the writer's folder, never renamed into place).
  with contextlib.ExitStack() as streams:
    stored = _DigestingWriter(streams.enter_context(FileSystems.create(
        shard_path, mime_type=mime_type, compression_type=CompressionTypes.UNCOMPRESSED)))
    index = None
    if dali_index:
      index = streams.enter_context(FileSystems.create(
          dali_index_path(shard_path), mime_type='text/plain',
          compression_type=CompressionTypes.UNCOMPRESSED))
    reader = _StagingReader()
    streams.callback(reader.close)
    # Beam's own GZIP writer, as FileSystems.create(compression_type=GZIP) uses: the same bytes
    out = CompressedFile(stored, CompressionTypes.GZIP) if compressed else stored
    for run in ranges:
      for frame in reader.frames(run):
        out.write(frame.header)
        out.write(frame.body)
        size = HEADER_BYTES + len(frame.body)
        if index is not None:
          index.write(f'{position} {size}\n'.encode('ascii'))
        position += size
        written += 1
    out.close()  # the GZIP stream's end; the shard's own stream closes with the ExitStack
  return ShardSummary(shard_path, written, stored.digest.hexdigest(), stored.size)


class _WriteStagingFileFn(beam.DoFn):
  """(key, serialized record) -> one staging file's keys file path per bundle, emitted when the
  bundle ends (a bundle with no record writes no file): the records are written in the order
  they come, as one uncompressed TFRecord file, and each one's frame offset and key is kept
  and written beside it (:func:`write_staging_keys`: 24 bytes per record), so that nothing
  needs to read the records to plan the shards.

  A retried bundle writes a new file (a fresh name); the failed attempt's file is never
  referenced and goes with the staging folder. The run's ``claim`` is checked before each file
  is created: a run that lost its output to another run (it stalled past its lease) writes
  nothing more into it.
  """

  def __init__(self, folder: str, claim: Optional[run_claim.ClaimToken] = None):
    self._folder = folder
    self._claim = claim
    self._written = beam.metrics.Metrics.counter(METRICS_NAMESPACE, STAGING_RECORDS_WRITTEN)

  def start_bundle(self):
    self._path = None
    self._handle = None
    self._offsets = array.array('q')
    self._keys = bytearray()
    self._position = 0

  def process(self, element: Tuple[bytes, bytes]):
    key, record = element
    if self._handle is None:  # ClaimLost: another run owns the output now
      self._path, self._handle = create_staging_file(self._folder, _STAGING_PREFIX, self._claim)
    self._handle.write(frame_record(record))
    self._offsets.append(self._position)
    self._keys += key
    self._position += HEADER_BYTES + len(record) + FOOTER_BYTES

  def finish_bundle(self):
    if self._handle is not None:
      self._handle.close()
      self._written.inc(len(self._offsets))
      yield GlobalWindows.windowed_value(
          write_staging_keys(StagingFile(self._path, self._offsets, bytes(self._keys))))


def write_complete_shard(ranges: Sequence[ShardRange], shard_path: str, staging_dir: str,
                         compressed: bool = False, dali_index: bool = False,
                         claim: Optional[run_claim.ClaimToken] = None) -> ShardSummary:
  """:func:`copy_shard` so that ``shard_path`` (and its DALI index) appears only complete.

  Locally the shard is written into ``staging_dir/.shards/`` and renamed into place (the
  index first, so a complete shard never lacks it), once the run's ``claim`` is checked; on
  object stores, where an object appears only once its upload completes, it is written in
  place. The claim is checked before anything is written, and again before the rename.
  Returns the shard's summary (:func:`copy_shard`), its ``path`` ``shard_path``.

  Raises:
    ClaimLost: another run took the output over; nothing is written or renamed into it.
  """
  if not is_local(shard_path):
    run_claim.check(claim)
    return copy_shard(ranges, shard_path, compressed, dali_index)
  run_claim.check(claim)  # nothing written into an output another run owns now
  name = os.path.basename(shard_path)
  partial = os.path.join(staging_dir, _SHARDS_BEING_WRITTEN, name)
  os.makedirs(os.path.dirname(partial), exist_ok=True)
  summary = copy_shard(ranges, partial, compressed, dali_index)
  run_claim.check(claim)
  if dali_index:
    os.replace(dali_index_path(partial), dali_index_path(shard_path))
  os.replace(partial, shard_path)
  return summary._replace(path=shard_path)


def _shard_path(output_dir: str, split: str, shard: int, num_shards: int,
                compressed: bool) -> str:
  return FileSystems.join(output_dir, contract.shard_file_name(split, shard, num_shards,
                                                               compressed))


def _deal(keys_paths: List[str], num_shards: int, output_dir: str, split: str,
          compressed: bool) -> Iterator[Tuple[int, List[ShardRange]]]:
  """The paths of the split's keys files -> (shard index, [ShardRange]) of each of the split's
  shards (:func:`plan_shards`); when the keys files are gone and every shard exists (this step
  run again after the shards were written and the staging deleted), (shard index, []) each,
  which :func:`_write_shard` finds written."""
  try:
    files = [read_staging_keys(path) for path in sorted(keys_paths)]
  except FileNotFoundError:
    if not all(FileSystems.exists(_shard_path(output_dir, split, shard, num_shards, compressed))
               for shard in range(num_shards)):
      raise
    yield from ((shard, []) for shard in range(num_shards))
    return
  yield from enumerate(plan_shards(files, num_shards))


def _write_shard(element: Tuple[int, List[ShardRange]], output_dir: str, split: str,
                 num_shards: int, compressed: bool, dali_index: bool,
                 claim: Optional[run_claim.ClaimToken]) -> ShardSummary:
  """(shard index, [ShardRange]) -> the final shard's summary, after writing it. A shard that
  exists under its final name was written by an earlier attempt of this step: it is read back
  for its summary, and kept when it holds the planned number of records (or when there is no
  plan to compare with: the staging files are gone once every shard was written); otherwise
  (an upload cut short that the object store completed) it is written again."""
  shard, ranges = element
  path = _shard_path(output_dir, split, shard, num_shards, compressed)
  if FileSystems.exists(path):  # an earlier attempt of this step wrote it, or began to
    planned = sum(run.num_records for run in ranges)
    try:
      summary = summarize_shard(path)
    except FramingError:  # cut short: an upload that completed on an error (s3://)
      summary = None
    if summary is not None and (not ranges or summary.num_records == planned):
      return summary
    # not the planned records: written again, from the staging files, which are still there
  # reads of the staging files: 1 per range of consecutive records (seeks: at most that)
  beam.metrics.Metrics.counter(METRICS_NAMESPACE, 'staging_ranges_read').inc(len(ranges))
  return write_complete_shard(ranges, path, FileSystems.join(output_dir, WRITER_FOLDER),
                              compressed, dali_index, claim)


def _delete_staging(shards: List[ShardSummary], staging_dir: str):
  """Deletes every file under the staging folder, then the folder itself where the filesystem
  has folders (local disk; object stores have none), and passes the shards' summaries on (in
  path order), so no step downstream runs before the staging files are gone."""
  delete_tree(staging_dir)
  yield from sorted(shards)


class WriteSplits(beam.PTransform):
  """PCollection[ConvertedExample] (or a tuple of them) -> PCollection[ShardSummary], one per
  written shard (its path, records, SHA-256 and size as stored).

  Every split of ``num_shards`` gets exactly its number of shard files, empty ones included
  when it has fewer examples than shards (no example at all: every shard is empty). The
  summaries come out only after the staging files are deleted.

  Records already framed elsewhere (a night's reused records, in the previous run's shards)
  come in as ``staged``: PCollection[Tuple[str, str]] of (split, path of a keys file in
  ``<output_dir>/.staging-write/<split>/``, :func:`write_staging_keys`), which is dealt with
  the split's own staging files; their records are copied from the file the keys file names,
  once, into the final shards. Deleting the staging folder deletes the keys files, never the
  files they name.

  Args:
    output_dir: the directory the shards go to.
    num_shards: split name -> number of shards (every split the data can have).
    compressed: GZIP-compress the shards (``.tfrecord.gz``).
    dali_index: write a DALI index file ``<shard>.idx`` beside each (uncompressed) shard.
    claim: the run's ``transforms.outputs.claim.ClaimToken``, checked before each shard takes its
      final name (None: no check).
    shuffle_seed: the seed of the records' order (``transforms.inputs.splits.shuffle_key`` of each
      example's ``relpath``): the same examples, seed and shard counts give byte-identical
      shard files, whatever order the examples come in and however many sources hold them.

    staged: PCollection[(split, keys file path)] of records staged elsewhere (above), or None.

  Raises:
    ValueError: ``dali_index`` with ``compressed``.
  """

  def __init__(self, output_dir: str, num_shards: Dict[str, int], compressed: bool = False,
               dali_index: bool = False, claim: Optional[run_claim.ClaimToken] = None,
               shuffle_seed: int = 0, staged=None):
    super().__init__()
    if dali_index and compressed:
      raise ValueError('--dali_index needs uncompressed shards (DALI reads records at byte '
                       'offsets of the uncompressed file); drop --compression=gzip')
    self._output_dir = output_dir
    self._num_shards = dict(num_shards)
    self._compressed = compressed
    self._dali_index = dali_index
    self._claim = claim
    self._shuffle_seed = shuffle_seed
    self._staged = staged

  def expand(self, examples):
    # Several sources (the converted examples and a night's reused ones) are written to
    # staging files each, never flattened first: a Flatten of the records would make the local
    # runner hold all of them in memory between two stages.
    sources = list(examples) if isinstance(examples, (tuple, list)) else [examples]
    splits = sorted(self._num_shards)
    index = {split: i for i, split in enumerate(splits)}
    staging_dir = FileSystems.join(self._output_dir, WRITER_FOLDER)
    located = {split: [] for split in splits}
    for number, source in enumerate(sources):
      name = '' if number == 0 else f'source {number}: '
      by_split = source | f'{name}partition by split' >> beam.Partition(
          lambda example, _: index[example.split], len(splits))
      for split, pcoll in zip(splits, by_split):
        located[split].append(
            pcoll
            # ConvertedExample -> (its shuffle_key, serialized tf.train.Example)
            | f'{name}{split}: keyed records' >> beam.Map(
                lambda example, seed: (shuffle_key(example.relpath, seed), example.serialized),
                self._shuffle_seed)
            # One file per bundle, no GroupByKey over the records: -> its keys file's path
            | f'{name}{split}: write staging files' >> beam.ParDo(
                _WriteStagingFileFn(FileSystems.join(staging_dir, split), self._claim)))
    if self._staged is not None:  # (split, keys file path) -> the path, in its split's list
      by_split = self._staged | 'staged elsewhere: partition by split' >> beam.Partition(
          lambda staged, _: index[staged[0]], len(splits))
      for split, pcoll in zip(splits, by_split):
        located[split].append(pcoll | f'staged elsewhere: {split}: keys files' >> beam.Map(
            lambda staged: staged[1]))
    written = []
    for split in splits:
      num_shards = self._num_shards[split]
      staging_files = located[split][0] if len(located[split]) == 1 else (
          located[split] | f'{split}: staging files of every source' >> beam.Flatten())
      written.append(
          staging_files
          # -> one list of every keys file's path (always one element, [] when none)
          | f'{split}: all staging files' >> beam.combiners.ToList()
          # -> (shard index, [ShardRange, ...]) for each of the split's shards, in key order
          | f'{split}: deal into {num_shards} shards' >> beam.FlatMap(
              _deal, num_shards, self._output_dir, split, self._compressed)
          | f'{split}: spread shards over workers' >> beam.Reshuffle()
          | f'{split}: write shards' >> beam.Map(
              _write_shard, output_dir=self._output_dir, split=split, num_shards=num_shards,
              compressed=self._compressed, dali_index=self._dali_index, claim=self._claim))
    return (
        written
        | 'all shard summaries' >> beam.Flatten()
        | 'every shard written' >> beam.combiners.ToList()
        | 'delete staging files' >> beam.FlatMap(
            _delete_staging, staging_dir).with_output_types(ShardSummary))
