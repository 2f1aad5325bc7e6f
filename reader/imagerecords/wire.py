"""Parse a serialized ``tf.train.Example`` in pure Python: no TensorFlow, no generated protobuf code.

The wire format is protobuf's, for ``tensorflow/core/example/example.proto`` and
``feature.proto``::

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }   // each entry: key = 1, value = 2
    Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2;
                            Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1 [packed = true]; }
    Int64List { repeated int64 value = 1 [packed = true]; }

It serves the places that need a record's features where TensorFlow is absent or too slow to
import: the Beam job, which only needs a record's ``image/filename`` to match a previous night's
record to its source, and loaders of other frameworks (``bench/gpu_step.py`` feeds PyTorch from
the shards). Image bytes are skipped by their length when their key is not asked for, so picking
one small feature costs microseconds whatever the record's size.
"""

import struct
from typing import Collection, Dict, Iterator, List, Optional, Tuple, Union

FeatureValues = Union[List[bytes], List[float], List[int]]

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5  # protobuf wire types


_MAX_VARINT_BYTES = 10  # 64 bits in 7-bit groups, as protobuf reads them


def _read_varint(data: bytes, position: int, end: Optional[int] = None) -> Tuple[int, int]:
  """(value, next position) of the protobuf base-128 varint at ``position``, which must end
  before ``end`` (default: the record's end) within 10 bytes."""
  end = len(data) if end is None else end
  value = shift = 0
  for _ in range(_MAX_VARINT_BYTES):
    if position >= end:
      raise ValueError('a varint runs past its field: not a tf.train.Example')
    byte = data[position]
    position += 1
    value |= (byte & 0x7F) << shift
    if byte < 0x80:
      return value & ((1 << 64) - 1), position
    shift += 7
  raise ValueError(f'a varint longer than {_MAX_VARINT_BYTES} bytes: not a tf.train.Example')


def _fields(data: bytes, start: int, end: int) -> Iterator[Tuple[int, int, int, int]]:
  """(field number, wire type, value start, value end) of each field in ``data[start:end]``.

  For a varint field the value spans its bytes; for a length-delimited field, its payload.

  Raises:
    ValueError: a group wire type (3, 4), which ``tf.train.Example`` never holds, or a field
      running past ``end``.
  """
  position = start
  while position < end:
    key, position = _read_varint(data, position, end)
    wire_type = key & 7
    if wire_type == _VARINT:
      _, value_end = _read_varint(data, position, end)
    elif wire_type == _LEN:
      length, position = _read_varint(data, position, end)
      value_end = position + length
    elif wire_type == _FIXED64:
      value_end = position + 8
    elif wire_type == _FIXED32:
      value_end = position + 4
    else:
      raise ValueError(f'wire type {wire_type}: not a tf.train.Example')
    if value_end > end:
      raise ValueError('a field runs past its message: not a tf.train.Example')
    yield key >> 3, wire_type, position, value_end
    position = value_end


def _int64(value: int) -> int:
  """The signed int64 of a varint's unsigned 64-bit value (two's complement)."""
  return value - (1 << 64) if value >= 1 << 63 else value


def _values(data: bytes, kind: int, start: int, end: int) -> FeatureValues:
  """The values of a BytesList (kind 1), FloatList (2) or Int64List (3) in ``data[start:end]``,
  packed or not."""
  values = []
  for number, wire_type, value_start, value_end in _fields(data, start, end):
    if number != 1:
      continue
    if kind == 1:
      values.append(data[value_start:value_end])
    elif kind == 2 and wire_type == _LEN:  # packed little-endian float32
      if (value_end - value_start) % 4:
        raise ValueError(f'a packed float list of {value_end - value_start} bytes, not a '
                         'multiple of 4: not a tf.train.Example')
      values.extend(struct.unpack_from(f'<{(value_end - value_start) // 4}f', data, value_start))
    elif kind == 2:
      values.append(struct.unpack_from('<f', data, value_start)[0])
    elif wire_type == _LEN:  # packed varints
      position = value_start
      while position < value_end:
        value, position = _read_varint(data, position, value_end)
        values.append(_int64(value))
    else:
      values.append(_int64(_read_varint(data, value_start)[0]))
  return values


def parse_example(serialized: bytes,
                  keys: Optional[Collection[str]] = None) -> Dict[str, FeatureValues]:
  """The features of a serialized ``tf.train.Example``, as ``tf.train.Example.FromString`` reads
  them.

  Args:
    serialized: the record's bytes (one TFRecord payload).
    keys: the feature keys wanted; None for all. Features not asked for are skipped unread.

  Returns:
    feature key -> its values: a list of ``bytes`` (BytesList), of Python floats (FloatList,
    float32 values) or of ints (Int64List, signed). A feature with no kind set maps to ``[]``.
    A key that occurs twice keeps its last entry, as protobuf's map parsing does.

  Raises:
    ValueError: the bytes are not a ``tf.train.Example`` (a wire type or length it cannot hold).
  """
  wanted = None if keys is None else {key.encode('utf-8') for key in keys}
  features: Dict[str, FeatureValues] = {}
  for key, feature_start, feature_end, _, _ in feature_entries(serialized):
    if wanted is not None and key not in wanted:
      continue
    values: FeatureValues = []
    for kind, _, list_start, list_end in _fields(serialized, feature_start, feature_end):
      if kind in (1, 2, 3):
        values = _values(serialized, kind, list_start, list_end)
    features[key.decode('utf-8')] = values
  return features


def feature_entries(serialized: bytes) -> Iterator[Tuple[bytes, int, int, int, int]]:
  """Each entry of a serialized ``tf.train.Example``'s feature map, in stored order:
  (key as UTF-8 bytes, start and end of its ``Feature`` message, start and end of the whole
  map entry), offsets into ``serialized``; nothing is copied but the key.

  Raises:
    ValueError: the bytes are not a ``tf.train.Example``.
  """
  for number, wire_type, start, stop in _fields(serialized, 0, len(serialized)):
    if number != 1 or wire_type != _LEN:
      continue  # Example.features
    for entry_number, entry_type, entry_start, entry_end in _fields(serialized, start, stop):
      if entry_number != 1 or entry_type != _LEN:
        continue  # Features.feature: one map entry
      key = None
      feature = (entry_end, entry_end)
      for field, _, field_start, field_end in _fields(serialized, entry_start, entry_end):
        if field == 1:
          key = serialized[field_start:field_end]
        elif field == 2:
          feature = (field_start, field_end)
      if key is not None:
        yield key, feature[0], feature[1], entry_start, entry_end
