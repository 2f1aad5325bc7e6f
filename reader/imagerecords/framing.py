"""The TFRecord file framing, read without TensorFlow.

A TFRecord file is a sequence of records, each framed as (TensorFlow's
``core/lib/io/record_writer.cc``)::

    uint64 length          little-endian
    uint32 masked_crc32c(length bytes)
    byte   data[length]
    uint32 masked_crc32c(data)

so records can be counted, located (offset, size) and checked by reading the 12-byte headers
and skipping the data. This module does that for the writer's manifest, for ``inspect`` and for
index files; it needs no TensorFlow.
"""

import struct
from typing import BinaryIO, Iterator, NamedTuple, Optional

HEADER_BYTES = 12  # length (8) + length CRC (4)
FOOTER_BYTES = 4  # data CRC


class RecordSpan(NamedTuple):
  """Where one record's frame starts in the file and how long it is, in bytes.

  ``offset`` is the frame's first byte (its length field); ``frame_bytes`` is the whole frame:
  header + data + footer (the "offset size" pair that DALI's index files hold).
  """
  offset: int
  frame_bytes: int
  data_bytes: int


class FramingError(ValueError):
  """The bytes are not a well-formed TFRecord file; the message gives the byte offset."""


def _data_length(stream: BinaryIO, offset: int) -> Optional[int]:
  """Reads the 12-byte header of the frame at ``offset`` (the stream's position): its data
  length, or None at the end of the stream.

  Raises:
    FramingError: the header is cut short.
  """
  header = stream.read(HEADER_BYTES)
  if not header:
    return None
  if len(header) < HEADER_BYTES:
    raise FramingError(f'truncated record header at byte {offset}')
  return struct.unpack('<Q', header[:8])[0]


def record_spans(stream: BinaryIO) -> Iterator[RecordSpan]:
  """Yields the span of each record of an (uncompressed) TFRecord stream, in file order.

  Only headers are read; data is skipped with ``seek`` when the stream is seekable, and read
  past otherwise (a gzip stream, say).

  Raises:
    FramingError: a header or a record is cut short (a truncated file).
  """
  size = None
  if getattr(stream, 'seekable', lambda: False)():
    start = stream.tell()
    size = stream.seek(0, 2) - start
    stream.seek(start)
  offset = 0
  while True:
    length = _data_length(stream, offset)
    if length is None:
      return
    frame = HEADER_BYTES + length + FOOTER_BYTES
    if size is not None:
      if offset + frame > size:
        raise FramingError(f'truncated record at byte {offset}: {length} data bytes announced, '
                           f'{size - offset - HEADER_BYTES} left in the file')
      stream.seek(length + FOOTER_BYTES, 1)
    elif len(stream.read(length + FOOTER_BYTES)) < length + FOOTER_BYTES:
      raise FramingError(f'truncated record at byte {offset}: {length} data bytes announced')
    yield RecordSpan(offset, frame, length)
    offset += frame


def read_records(stream: BinaryIO) -> Iterator[bytes]:
  """Yields the data of each record of an (uncompressed, or already decompressed) TFRecord
  stream, in file order, reading it front to back once (any stream: a gzip one too).

  Checksums are not verified here (the writer's own files, counted when they were written).

  Raises:
    FramingError: a header or a record is cut short (a truncated file).
  """
  offset = 0
  while True:
    length = _data_length(stream, offset)
    if length is None:
      return
    frame = stream.read(length + FOOTER_BYTES)
    if len(frame) < length + FOOTER_BYTES:
      raise FramingError(f'truncated record at byte {offset}: {length} data bytes announced')
    yield frame[:length]
    offset += HEADER_BYTES + length + FOOTER_BYTES
