"""Small text files (labels.txt, manifest.json, failures.jsonl, _SUCCESS, LATEST) on any
filesystem Beam knows: local paths, ``gs://``, ``s3://``, all through ``FileSystems``."""

import os
from typing import Iterable

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms import private_apis
from transforms.files import reads

_BLOCK_CHARS = 1 << 20


def write_text(path: str, text: str) -> None:
  """Writes ``text`` (UTF-8) to ``path`` on any filesystem Beam knows, replacing it."""
  write_lines(path, [text] if text else [], newline='')


def write_lines(path: str, lines: Iterable[str], newline: str = '\n') -> None:
  """Writes ``lines`` (UTF-8), each followed by ``newline``, to ``path`` on any filesystem Beam
  knows, replacing it; streamed in blocks of about 1 MiB, never joined into one string."""
  lines = iter(lines)
  first = next(lines, None)
  if first is None and path.startswith('s3://'):
    _put_empty_s3_object(path)
    return
  with FileSystems.create(path, mime_type='text/plain',
                          compression_type=CompressionTypes.UNCOMPRESSED) as handle:
    if first is None:
      return
    block, size = [first, newline], len(first)
    for line in lines:
      block.append(line)
      block.append(newline)
      size += len(line)
      if size >= _BLOCK_CHARS:
        handle.write(''.join(block).encode('utf-8'))
        block, size = [], 0
    handle.write(''.join(block).encode('utf-8'))


def _put_empty_s3_object(path: str) -> None:
  """Creates a zero-byte object (``_SUCCESS``, an empty ``failures.jsonl``) on S3.

  Beam 2.77's S3 writer always finishes a multipart upload, and S3 refuses one without parts
  (``MalformedXML``), so ``FileSystems.create`` cannot write an empty object. One plain
  ``PutObject`` through the client Beam's S3 filesystem configured (endpoint, credentials
  from the S3 pipeline options) does.
  """
  bucket, key = path[len('s3://'):].split('/', 1)
  private_apis.s3_client(path).put_object(Bucket=bucket, Key=key, Body=b'')


def read_text(path: str) -> str:
  """All of ``path`` as UTF-8 text, on any filesystem Beam knows; transient errors are retried
  (``transforms.files.reads``: raises UnreadableFile or ReadFailed)."""
  return reads.read_bytes(path, CompressionTypes.UNCOMPRESSED).decode('utf-8')


def replace_text(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` so that a reader sees the old content or the new, never half:
  locally a temporary file beside it renamed over it, on object stores (``gs://``, ``s3://``)
  one object write, which is atomic there."""
  if '://' in path:
    write_text(path, text)
    return
  temporary = f'{path}.{os.getpid()}.tmp'
  try:
    write_text(temporary, text)
    os.replace(temporary, path)
  except OSError:  # a full disk or a folder that is not ours: leave no half-written file
    if os.path.exists(temporary):
      os.remove(temporary)
    raise
