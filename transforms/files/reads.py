"""Every read the job makes, telling bad data from bad luck.

A file that is gone (deleted between listing and reading), a folder, or one the job may not
read is *bad data*: retrying cannot help, and the image becomes a per-image failure with its
reason. Anything else that goes wrong while reading (a time-out, a reset connection, throttling,
a 5xx of ``gs://`` or ``s3://``, a stalled NFS mount) is *bad luck*: the read is retried with
exponential backoff, and when it still fails the run fails (exit 1, nothing published). A
transient error is never counted as a bad image, so a run never publishes a data set that
silently lacks the images a flaky store would not give that night.

Why retry here rather than let the runner retry the bundle: a bundle holds hundreds of images,
so a runner's retry redoes them all (Dataflow retries a failed bundle 4 times, then fails the
job; Beam's local runner does not retry at all); retrying the one read costs only that read.
The runner's own retry stays as the outer net, and since every step of the job is idempotent,
it is safe.

    read_bytes(path)  ->  bytes
      FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, and HTTP
      403 / 404 / 410 of an object store       -> UnreadableFile (no retry)
      anything else                            -> retried with backoff (ATTEMPTS tries;
                                                  OBJECT_STORE_ATTEMPTS on gs:// and s3://,
                                                  whose clients retry too), then ReadFailed
"""

import logging
import random
import time
import hashlib
from typing import Callable, Optional, TypeVar

from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

_LOG = logging.getLogger(__name__)

ATTEMPTS = 5
"""How many times a read of a local (or mounted) file is tried before its transient error fails
the run."""

OBJECT_STORE_ATTEMPTS = 2
"""The same for ``gs://`` and ``s3://``, whose Beam clients already retry each request with
their own exponential backoff (Beam's ``s3io`` and ``gcsio``: up to 7 retries from 5 s, about
10 minutes): one more attempt of the whole read on top, not five times those minutes."""

FIRST_DELAY_S = 0.5
"""The wait before the second attempt; it doubles for each further attempt (with jitter), so
the five attempts span about 8 s: longer than a store's usual throttling burst."""

_PERMANENT_TYPES = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
# HTTP statuses (and S3 error codes) that name the object, not the connection: gone or denied
_PERMANENT_CODES = frozenset({403, 404, 410, '403', '404', '410', 'NoSuchKey', 'AccessDenied',
                              'NotFound', 'Forbidden'})

T = TypeVar('T')


class UnreadableFile(OSError):
  """The file is gone, is a folder, or may not be read: a per-file failure, not retried.

  ``str(error)`` is the reason in words, e.g. ``'not found: FileNotFoundError: ...'``.
  """


class ReadFailed(RuntimeError):
  """A read kept failing with transient errors after ``ATTEMPTS`` tries: the run must fail
  rather than publish without the file. The message names the file and the last error."""


def _causes(error: BaseException):
  """``error`` and what it wraps: the errors of a BeamIOError, the chain of causes."""
  seen = set()
  stack = [error]
  while stack:
    current = stack.pop()
    if current is None or id(current) in seen:
      continue
    seen.add(id(current))
    yield current
    if isinstance(current, BeamIOError) and isinstance(current.exception_details, dict):
      stack.extend(e for e in current.exception_details.values()
                   if isinstance(e, BaseException))
    stack.extend([current.__cause__, current.__context__])


def is_permanent(error: BaseException) -> bool:
  """True when ``error`` says the file itself cannot be read (gone, denied, a folder): on local
  disk by its type, on object stores by the HTTP status or error code it carries (Beam's
  ``S3ClientError.code``, ``google.api_core`` exceptions' ``code``)."""
  for cause in _causes(error):
    if isinstance(cause, _PERMANENT_TYPES):
      return True
    if getattr(cause, 'code', None) in _PERMANENT_CODES:
      return True
  return False


def _reason(error: BaseException) -> str:
  for cause in _causes(error):
    if isinstance(cause, FileNotFoundError) or getattr(cause, 'code', None) in (
        404, '404', 410, '410', 'NoSuchKey', 'NotFound'):
      kind = 'not found'
      break
    if isinstance(cause, (IsADirectoryError, NotADirectoryError)):
      kind = 'not a file'
      break
  else:
    kind = 'permission denied'
  return f'{kind}: {type(error).__name__}: {error}'


def with_retries(read: Callable[[], T], path: str, attempts: Optional[int] = None,
                 first_delay_s: Optional[float] = None) -> T:
  """``read()``, retried on transient errors; see the module docstring.

  Args:
    read: reads ``path`` and returns what it read; called once per attempt.
    path: the file, for the messages.
    attempts, first_delay_s: default to ``ATTEMPTS`` (``OBJECT_STORE_ATTEMPTS`` for
      ``gs://`` and ``s3://`` paths) and ``FIRST_DELAY_S``.
  Raises:
    UnreadableFile: the file is gone, a folder, or denied (no retry).
    ReadFailed: every attempt failed with a transient error.
  """
  if attempts is None:
    attempts = OBJECT_STORE_ATTEMPTS if path.startswith(('gs://', 's3://')) else ATTEMPTS
  delay = FIRST_DELAY_S if first_delay_s is None else first_delay_s
  for attempt in range(1, attempts + 1):
    try:
      return read()
    except Exception as error:  # pylint: disable=broad-except
      # The boundary between a filesystem and the job: Beam's filesystems raise their own
      # types (BeamIOError, S3ClientError, google.api_core errors, OSError, socket errors), so
      # every error is classified here, and none is swallowed: permanent ones become
      # UnreadableFile, transient ones are retried and then raised as ReadFailed.
      if is_permanent(error):
        raise UnreadableFile(_reason(error)) from error
      if attempt == attempts:
        raise ReadFailed(
            f'{path}: still failing after {attempts} attempts: {type(error).__name__}: '
            f'{error}') from error
      _LOG.warning('%s: %s: %s; retrying in %.1f s (attempt %d of %d)', path,
                   type(error).__name__, error, delay, attempt + 1, attempts)
      time.sleep(delay * (1 + random.random() * 0.25))
      delay *= 2
  raise AssertionError('unreachable')  # the loop returns or raises


def read_bytes(path: str, compression_type: Optional[str] = None) -> bytes:
  """All bytes of ``path`` (any filesystem Beam knows), retried on transient errors.

  ``compression_type``: a ``CompressionTypes`` value; None lets Beam choose by the file's
  extension (``.gz`` is decompressed). Raises UnreadableFile or ReadFailed (see
  ``with_retries``).
  """
  def read():
    with FileSystems.open(path, compression_type=compression_type or CompressionTypes.AUTO
                          ) as handle:
      return handle.read()
  return with_retries(read, path)


_CHUNK_BYTES = 1 << 20


def file_sha256(path: str) -> str:
  """Hex SHA-256 of the bytes of ``path`` (any filesystem Beam knows), read in 1 MiB chunks, so
  memory stays bounded whatever the file's size.

  Raises:
    UnreadableFile: the file is gone, denied or a folder.
    ReadFailed: transient errors persisted .
  """
  def read_and_hash():  # from the first byte again on each attempt
    digest = hashlib.sha256()
    with FileSystems.open(path) as handle:
      while True:
        chunk = handle.read(_CHUNK_BYTES)
        if not chunk:
          break
        digest.update(chunk)
    return digest.hexdigest()
  return with_retries(read_and_hash, path)
