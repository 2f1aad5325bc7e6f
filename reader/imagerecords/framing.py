"""The TFRecord file framing, read without TensorFlow.

A TFRecord file is a sequence of records, each framed as (TensorFlow's
``core/lib/io/record_writer.cc``)::

    uint64 length          little-endian
    uint32 masked_crc32c(length bytes)
    byte   data[length]
    uint32 masked_crc32c(data)

so records can be counted, located (offset, size) and checked by reading the 12-byte headers
and skipping the data. This module is the one owner of that framing, without TensorFlow:
:func:`record_spans` (headers only: counts for the manifest, the writer's shard cutting, DALI
index files) and :func:`read_frames` (whole frames: the writer's shard copies, the previous
night's records, ``inspect``'s checksum verification, :func:`read_records`), its one writer
(:func:`frame_record`: the job's shards), and the one check of its checksums
(:func:`length_checksum_ok`, :func:`data_checksum_ok`: ``inspect`` and the previous night's
records that a night reuses). The checksums need ``google-crc32c`` (the
reader's ``inspect`` extra; the job depends on it), imported when first used.
"""

import gzip
import struct
from typing import BinaryIO, Callable, Iterator, NamedTuple, Optional

HEADER_BYTES = 12  # length (8) + length CRC (4)
FOOTER_BYTES = 4  # data CRC
_CRC_MASK_DELTA = 0xa282ead8  # TensorFlow's core/lib/hash/crc32c.h


class RecordSpan(NamedTuple):
  """Where one record's frame starts in the file and how long it is, in bytes.

  ``offset`` is the frame's first byte (its length field); ``frame_bytes`` is the whole frame:
  header + data + footer (the "offset size" pair that DALI's index files hold).
  """
  offset: int
  frame_bytes: int
  data_bytes: int


class Frame(NamedTuple):
  """One whole record frame, as stored: ``offset`` in bytes from where the read started,
  ``header`` (12 bytes: length, masked CRC of the length), ``body`` (the data, then its 4-byte
  masked CRC)."""
  offset: int
  header: bytes
  body: bytes

  @property
  def data(self) -> bytes:
    """The record's data (the body less its checksum)."""
    return self.body[:-FOOTER_BYTES]


class FramingError(ValueError):
  """The bytes are not a well-formed TFRecord file.

  ``offset`` is the byte offset of the frame where the damage is; ``reason`` is the message
  without it (``str(error)`` gives both).
  """

  def __init__(self, reason: str, offset: Optional[int] = None):
    super().__init__(reason if offset is None else f'byte {offset}: {reason}')
    self.reason = reason
    self.offset = offset


def _header(stream: BinaryIO, offset: int) -> Optional[bytes]:
  """Reads the 12-byte header of the frame at ``offset`` (the stream's position); None at the
  end of the stream.

  Raises:
    FramingError: the header is cut short.
  """
  header = stream.read(HEADER_BYTES)
  if header and len(header) < HEADER_BYTES:
    raise FramingError(f'truncated record header: {len(header)} bytes of a {HEADER_BYTES}-byte '
                       'record header', offset)
  return header or None


def _data_length(header: bytes) -> int:
  return struct.unpack('<Q', header[:8])[0]


def record_spans(stream: BinaryIO) -> Iterator[RecordSpan]:
  """Yields the span of each record of an (uncompressed) TFRecord stream, in file order.

  Only headers are read; data is skipped with ``seek`` when the stream is seekable, and read
  past otherwise. A ``gzip.GzipFile`` is read past although it says it is seekable: its seeks
  decompress, and learning the size by seeking to the end would decompress the file twice.

  Raises:
    FramingError: a header or a record is cut short (a truncated file).
  """
  size = None
  if getattr(stream, 'seekable', lambda: False)() and not isinstance(stream, gzip.GzipFile):
    start = stream.tell()
    size = stream.seek(0, 2) - start
    stream.seek(start)
  offset = 0
  while True:
    header = _header(stream, offset)
    if header is None:
      return
    length = _data_length(header)
    frame = HEADER_BYTES + length + FOOTER_BYTES
    if size is not None:
      if offset + frame > size:
        raise FramingError(f'truncated record: {length} data bytes announced, '
                           f'{size - offset - HEADER_BYTES} left in the file', offset)
      stream.seek(length + FOOTER_BYTES, 1)
    elif len(stream.read(length + FOOTER_BYTES)) < length + FOOTER_BYTES:
      raise FramingError(f'truncated record: {length} data bytes announced', offset)
    yield RecordSpan(offset, frame, length)
    offset += frame


def read_frames(stream: BinaryIO, start: int = 0,
                length_ok: Optional[Callable[[bytes], bool]] = None) -> Iterator[Frame]:
  """Yields each whole frame of an (uncompressed, or already decompressed) TFRecord stream from
  its current position, in file order, reading it front to back once (any stream).

  Args:
    stream: positioned at a frame's first byte.
    start: that position's byte offset in the file, for the frames' ``offset`` and messages.
    length_ok: a check of the 12-byte header (the length's checksum, say), made before the
      body is read: a length that fails it would send the read anywhere.

  Raises:
    FramingError: a header or a body is cut short, or a header fails ``length_ok``; nothing
      after it can be located.
  """
  offset = start
  while True:
    header = _header(stream, offset)
    if header is None:
      return
    if length_ok is not None and not length_ok(header):
      raise FramingError('corrupt: the length field fails its checksum; the records after it '
                         'cannot be located', offset)
    length = _data_length(header)
    body = stream.read(length + FOOTER_BYTES)
    if len(body) < length + FOOTER_BYTES:
      raise FramingError(f'truncated: {length + FOOTER_BYTES} bytes of data and checksum '
                         f'announced, {len(body)} left in the file', offset)
    yield Frame(offset, header, body)
    offset += HEADER_BYTES + length + FOOTER_BYTES


def read_records(stream: BinaryIO) -> Iterator[bytes]:
  """Yields the data of each record of an (uncompressed, or already decompressed) TFRecord
  stream, in file order, reading it front to back once (any stream: a gzip one too).

  Checksums are not verified here (the writer's own files, counted when they were written).

  Raises:
    FramingError: a header or a record is cut short (a truncated file).
  """
  for frame in read_frames(stream):
    yield frame.data


def masked_crc32c(data: bytes) -> int:
  """The CRC-32C of ``data``, masked as TFRecord stores it (``crc32c::Mask`` in TensorFlow's
  ``core/lib/hash/crc32c.h``), as an unsigned 32-bit int.

  Masking rotates the CRC right by 15 bits and adds 0xa282ead8, modulo 2^32, so that a CRC of
  data that itself holds CRCs is not degenerate.
  """
  import google_crc32c  # pylint: disable=import-outside-toplevel  # the 'inspect' extra
  crc = google_crc32c.value(data)
  return ((((crc >> 15) | (crc << 17)) & 0xffffffff) + _CRC_MASK_DELTA) & 0xffffffff


def frame_record(data: bytes) -> bytes:
  """``data`` framed as one TFRecord record (the module docstring): header, data, footer.

  ``len(frame_record(data)) == HEADER_BYTES + len(data) + FOOTER_BYTES``; the bytes TensorFlow's
  ``tf.io.TFRecordWriter`` writes for the same record.
  """
  length = struct.pack('<Q', len(data))
  return b''.join((length, struct.pack('<I', masked_crc32c(length)), data,
                   struct.pack('<I', masked_crc32c(data))))


def length_checksum_ok(header: bytes) -> bool:
  """Whether a 12-byte frame header's length field matches its masked CRC-32C (a
  ``length_ok`` for :func:`read_frames`)."""
  return masked_crc32c(header[:8]) == struct.unpack('<I', header[8:HEADER_BYTES])[0]


def data_checksum_ok(frame: Frame) -> bool:
  """Whether a frame's data matches the masked CRC-32C that follows it. A flipped bit in the
  data fails it; about 4 us for a 29 KB record (``google-crc32c``'s hardware CRC)."""
  return masked_crc32c(frame.data) == struct.unpack('<I', frame.body[-FOOTER_BYTES:])[0]
