"""The writer's staging files and the keys files that list their records: one owner of that
format, for the writer (``transforms.outputs.write``, which stages the job's records and
copies them into shards) and for an incremental night (``transforms.outputs.reuse_copy``,
which lists a previous run's verified records where they are, in its shards).

A staging file is an uncompressed TFRecord file in the writer's staging folder
(``OUT/.staging-write/<split>/``); beside it, or naming it, a keys file holds each record's
frame offset and shuffle key (:data:`KEYS_SUFFIX`), so that the shard plan reads 24 bytes per
record, not the records. The offsets and keys travel through these files, not through the
runner: on Flink a million records' 24 MB would be one record of its sort, beyond what its sort
buffers take (``Cannot write record to fresh sort buffer. Record too large``).
"""

import array
import json
import uuid
from typing import NamedTuple, Optional

import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from imagerecords import contract
from imagerecords.framing import FramingError

from transforms.files import reads
from transforms.files.folders import escape_pattern
from transforms.inputs.splits import SHUFFLE_KEY_BYTES
from transforms.outputs import claim as run_claim


STAGING_RECORDS_WRITTEN = 'staging_records_written'
"""The counter of records written into staging files (each is then copied once more, into its
shard); a night's reused records from uncompressed shards are not among them."""


KEYS_SUFFIX = '.keys'
"""What a keys file's name ends with. A keys file lists records of one data file (a staging
file, or a previous run's shard): its record count ``N`` (8 bytes, little-endian), the length
of a JSON header (4 bytes, little-endian), the header (UTF-8: ``{"data": path of the data file,
"version": "SIZE:MTIME" of the data file, "numbers": true}``, each key optional), then the
frame offsets (``N`` x ``int64``, little-endian), the keys (``N`` x :data:`SHUFFLE_KEY_BYTES`)
and, with ``"numbers"``, each record's frame number in the data file (``N`` x ``int64``), all
in file order. Without ``"data"`` the data file is the keys file's path less ``.keys``."""


class StagingFile(NamedTuple):
  """Records of one data file, as their writer saw them: where each one's frame starts, and its
  key.

  path: the uncompressed TFRecord file that holds the records: a staging file of the writer's,
    or a previous run's shard (a night's reused records, ``transforms.outputs.previous_records``).
  offsets: ``array('q')``, the byte offset of every record's frame, in file order. keys: the
    records' :func:`transforms.inputs.splits.shuffle_key` s (``SHUFFLE_KEY_BYTES`` = 16 bytes
    each) concatenated in the same order. 24 bytes per record.
  numbers: ``array('q')`` of each record's frame number in the file (0 for its first frame),
    ascending, where the file holds other records between them (a previous shard's records
    that are not reused); None when the records are every frame of the file (0, 1, 2, ...).
    Only records of consecutive numbers are read as one range.
  version: the file's ``'SIZE:MTIME'`` (``FileSystems`` metadata) when its records were
    verified: a file found other when a shard reads it fails the write
    (:class:`StagingFileChanged`). None: not checked (the writer's own staging files).
  """
  path: str
  offsets: array.array
  keys: bytes
  numbers: Optional[array.array] = None
  version: Optional[str] = None


class StagingFileChanged(RuntimeError):
  """A data file that a keys file names is not the one its records were verified in: a
  previous run's shard replaced or rewritten while the night ran."""


def file_version(path: str) -> str:
  """``'SIZE:MTIME'`` of the file ``path`` (bytes; seconds since the epoch, as Beam's
  ``FileMetadata`` gives them: ``os.stat`` locally, the object's update time on gs:// and
  s3://).

  Raises:
    FileNotFoundError: no such file.
  """
  found = FileSystems.match([escape_pattern(path)])[0].metadata_list
  if not found:
    raise FileNotFoundError(path)
  return f'{found[0].size_in_bytes}:{found[0].last_updated_in_seconds!r}'


def keys_path_of(data_path: str) -> str:
  """The keys file of the writer's own staging file ``data_path``: ``<data_path>.keys``."""
  return data_path + KEYS_SUFFIX


def write_staging_keys(staging: StagingFile, keys_path: Optional[str] = None) -> str:
  """Writes ``staging``'s offsets, keys (and frame numbers) to ``keys_path`` (default
  ``<its path>.keys``; any other name is recorded in the file, with ``staging.version``):
  :data:`KEYS_SUFFIX` gives the format. Returns the keys file's path.

  Raises:
    ValueError: ``numbers`` not of one entry per offset.
  """
  keys_path = keys_path or keys_path_of(staging.path)
  header = {}
  if keys_path != keys_path_of(staging.path):
    header['data'] = staging.path
  if staging.version is not None:
    header['version'] = staging.version
  if staging.numbers is not None:
    if len(staging.numbers) != len(staging.offsets):
      raise ValueError(f'{staging.path}: {len(staging.numbers)} frame numbers for '
                       f'{len(staging.offsets)} records')
    header['numbers'] = True
  text = json.dumps(header, ensure_ascii=False, sort_keys=True).encode('utf-8')
  with FileSystems.create(keys_path, mime_type='application/octet-stream',
                          compression_type=CompressionTypes.UNCOMPRESSED) as handle:
    handle.write(len(staging.offsets).to_bytes(8, 'little'))
    handle.write(len(text).to_bytes(4, 'little'))
    handle.write(text)
    handle.write(np.asarray(staging.offsets, dtype='<i8').tobytes())
    handle.write(staging.keys)
    if staging.numbers is not None:
      handle.write(np.asarray(staging.numbers, dtype='<i8').tobytes())
  return keys_path


def _int64s(data: bytes, count: int, at: int) -> array.array:
  return array.array('q', np.frombuffer(data, '<i8', count, at).astype(np.int64).tobytes())


def read_staging_keys(keys_path: str) -> StagingFile:
  """The StagingFile that the keys file ``keys_path`` describes (:data:`KEYS_SUFFIX`).

  Raises:
    FileNotFoundError: the file cannot be read (the staging files are gone).
    ReadFailed: it kept failing with transient errors (``transforms.files.reads``).
    FramingError: the file is not as long as its count and header say.
  """
  try:  # transient errors are retried
    data = reads.read_bytes(keys_path, CompressionTypes.UNCOMPRESSED)
  except reads.UnreadableFile as error:
    raise FileNotFoundError(f'{keys_path}: {error}') from None
  if len(data) < 12:
    raise FramingError(f'{keys_path}: {len(data)} bytes, too short for a keys file')
  count = int.from_bytes(data[:8], 'little')
  size = int.from_bytes(data[8:12], 'little')
  try:
    header = json.loads(data[12:12 + size].decode('utf-8'))
  except ValueError as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
    raise FramingError(f'{keys_path}: not a keys file ({error})') from None
  at = 12 + size
  numbered = bool(header.get('numbers'))
  expected = at + count * (8 + SHUFFLE_KEY_BYTES + (8 if numbered else 0))
  if len(data) != expected:
    raise FramingError(f'{keys_path}: {len(data)} bytes, not the {expected} of the {count} '
                       'records it counts')
  offsets = _int64s(data, count, at)
  keys_at = at + 8 * count
  keys = data[keys_at:keys_at + SHUFFLE_KEY_BYTES * count]
  numbers = (_int64s(data, count, keys_at + SHUFFLE_KEY_BYTES * count) if numbered else None)
  path = header.get('data') or keys_path[:-len(KEYS_SUFFIX)]
  return StagingFile(path, offsets, keys, numbers, header.get('version'))


def create_staging_file(folder: str, prefix: str,
                        claim: Optional[run_claim.ClaimToken] = None):
  """A new, empty, uncompressed TFRecord file ``<folder>/<prefix>-<random hex>.tfrecord``,
  created once the run's ``claim`` is checked: (its path, its open binary handle, which the
  caller closes).

  Raises:
    ClaimLost: another run owns the output now; nothing is created.
  """
  run_claim.check(claim)
  path = FileSystems.join(folder, f'{prefix}-{uuid.uuid4().hex}{contract.SHARD_SUFFIX}')
  return path, FileSystems.create(path, mime_type='application/octet-stream',
                                  compression_type=CompressionTypes.UNCOMPRESSED)
