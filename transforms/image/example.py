"""Serialize ``tf.train.Example`` records with the contract's feature keys, without TensorFlow.

The keys are defined once in the reader distribution (``imagerecords.contract``) and follow the
TF-slim / TF Model Garden image-classification convention.

The bytes are written directly in protobuf's wire format for ``tensorflow/core/example/
example.proto`` (``Example { Features features = 1 }``, ``Features { map<string, Feature>
feature = 1 }``, ``Feature { oneof { BytesList bytes_list = 1; FloatList float_list = 2;
Int64List int64_list = 3 } }``, packed int64 and float lists). That keeps TensorFlow, its
import time and its memory out of every Beam worker, and makes serialization deterministic
(features sorted by key), so the same image gives the same record bytes on every runner. The
tests parse these bytes with TensorFlow's own ``tf.train.Example``.
"""

import functools
from operator import itemgetter
from typing import Dict, List, Optional, Tuple, Union

from imagerecords import contract
from imagerecords import wire

from transforms.elements import EncodedImage

_LEN = 2  # protobuf wire type: length-delimited
_ONE_BYTE = [bytes([value]) for value in range(0x80)]


def _varint(value: int) -> bytes:
  """Protobuf base-128 varint of a non-negative integer."""
  if value < 0x80:
    return _ONE_BYTE[value]
  if value < 0x4000:  # two bytes: every length of a small image's record
    return bytes((value & 0x7F | 0x80, value >> 7))
  out = bytearray()
  while value > 0x7F:
    out.append(value & 0x7F | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


# the one-byte keys of the length-delimited fields used: field number -> key
_KEY = {number: _varint(number << 3 | _LEN) for number in (1, 2, 3)}
_FIELD_1 = _KEY[1]
_BY_KEY = itemgetter(0)

# an entry: (feature key, the wire bytes of its Features.feature field up to the value's
# bytes, the value's bytes); joined, head and value are that field of Features
_Entry = Tuple[str, bytes, Union[bytes, memoryview]]


@functools.lru_cache(maxsize=1024)
def _key_field(key: str) -> bytes:
  """A map entry's key field (field 1: the UTF-8 key) and the key byte of its value field
  (field 2, the Feature); the same for every record, so made once per feature key."""
  encoded = key.encode('utf-8')
  return _KEY[1] + _varint(len(encoded)) + encoded + _KEY[2]


def _feature_entry(key: str, value) -> _Entry:
  """The :data:`_Entry` of one ``Features.feature`` map entry (key = field 1, Feature = field
  2): the value's bytes apart, so that the image bytes are copied once, into the record.

  ``bytes`` -> BytesList of one value; ``int`` -> Int64List of one value; a ``numpy.ndarray``
  of float32 -> packed FloatList of its values (row-major); a tuple of ints -> packed
  Int64List. Raises ValueError for a negative int.
  """
  if isinstance(value, bytes):
    kind = _KEY[1]  # Feature.bytes_list
  elif isinstance(value, int):
    if value < 0:
      raise ValueError(f'negative int64 features are not written here: {value}')
    kind, value = _KEY[3], _varint(value)  # Feature.int64_list, packed
  elif isinstance(value, tuple):
    if any(item < 0 for item in value):
      raise ValueError(f'negative int64 features are not written here: {value}')
    kind, value = _KEY[3], b''.join([_varint(item) for item in value])  # packed Int64List
  else:  # a float32 array: packed FloatList, little-endian IEEE 754 (protobuf's `float`)
    kind, value = _KEY[2], value.astype('<f4', copy=False).tobytes()
  key_field = _key_field(key)
  value_length = _varint(len(value))
  list_size = 1 + len(value_length) + len(value)  # Bytes/Float/Int64List: field 1
  list_length = _varint(list_size)
  feature_size = 1 + len(list_length) + list_size  # Feature: field `kind`
  feature_length = _varint(feature_size)
  entry_size = len(key_field) + len(feature_length) + feature_size
  # map entry (Features field 1): key = field 1, value = field 2
  return key, b''.join((_FIELD_1, _varint(entry_size), key_field, feature_length, kind,
                        list_length, _FIELD_1, value_length)), value


# An entry whose value repeats from record to record (a format, a class, a size): made once.
# typed: True and 1 are one key of a dict, and must not share an entry here.
_repeated_entry = functools.lru_cache(maxsize=4096, typed=True)(_feature_entry)


def _example(entries: List[_Entry]) -> bytes:
  """A serialized Example of the map entries, in key order."""
  entries.sort(key=_BY_KEY)
  pieces = []
  features_size = 0
  for _, head, value in entries:
    pieces += (head, value)
    features_size += len(head) + len(value)
  return b''.join([_FIELD_1, _varint(features_size), *pieces])  # Example.features: field 1


def serialize_example(features: Dict[str, Union[bytes, int, tuple, 'numpy.ndarray']]) -> bytes:
  """A serialized ``tf.train.Example`` of the job's features.

  The nesting (Example > Features > map entry > Feature > BytesList / FloatList / packed
  Int64List) is written as one list of pieces, lengths computed ahead, and joined once: the
  image bytes are copied once into the record.

  Args:
    features: feature key -> value; ``bytes`` become a BytesList of one value, ``int`` an
      Int64List of one value, a tuple of ints a packed Int64List, a float32 ``numpy.ndarray``
      a packed FloatList of its values in row-major order (any shape; the shape itself is not
      stored).

  Returns:
    Wire-format bytes that ``tf.train.Example.FromString`` parses; features sorted by key.

  Raises:
    ValueError: a negative int value.
  """
  return _example([_feature_entry(key, value) for key, value in features.items()])


def add_features(serialized: bytes, features: Dict[str, Union[bytes, int, tuple,
                                                             'numpy.ndarray']]) -> bytes:
  """``serialized`` (a record of :func:`serialize_example`) with ``features`` added: the same
  bytes :func:`serialize_example` gives for the union of both, features sorted by key; the
  existing entries are copied as they are, not parsed.

  Raises:
    ValueError: a key of ``features`` is in the record already, or a negative int value.
  """
  entries = []
  view = memoryview(serialized)
  for key, _, _, entry_start, entry_end in wire.feature_entries(serialized):
    key = key.decode('utf-8')
    if key in features:
      raise ValueError(f'the record has a feature {key!r} already')
    # the whole field: its key byte and length, then the entry
    entries.append((key, _KEY[1] + _varint(entry_end - entry_start),
                    view[entry_start:entry_end]))
  entries += [_feature_entry(key, value) for key, value in features.items()]
  return _example(entries)


def build_example(image: EncodedImage, relpath: str, source_sha256: str,
                  label: Optional[str] = None, class_id: Optional[int] = None,
                  mask: Optional[bytes] = None) -> bytes:
  """The serialized ``tf.train.Example`` of one converted image.

  Args:
    image: the encoded image and its shape (height, width in pixels; channels).
    relpath: the source's path relative to the input root ('/'-separated).
    source_sha256: hex SHA-256 of the source file's bytes.
    label: class name, or None for unlabeled data (then no class keys are written).
    class_id: 0-based class id (index into labels.txt); required with ``label``.
    mask: segmentation: the PNG of the image's class indices, same height and width
      (``image/segmentation/class/encoded``, format ``png``); None for none.

  Returns:
    The serialized proto (bytes), as ``WriteToTFRecord`` writes it.
  """
  # the same bytes as serialize_example of these features; the entries that repeat from record
  # to record are made once (_repeated_entry)
  entries = [
      _feature_entry(contract.IMAGE_ENCODED, image.data),
      _repeated_entry(contract.IMAGE_FORMAT, image.format.encode('ascii')),
      _repeated_entry(contract.IMAGE_HEIGHT, image.height),
      _repeated_entry(contract.IMAGE_WIDTH, image.width),
      _repeated_entry(contract.IMAGE_CHANNELS, image.channels),
      _feature_entry(contract.FILENAME, relpath.encode('utf-8')),
      _feature_entry(contract.SOURCE_SHA256, source_sha256.encode('ascii')),
  ]
  if label is not None:
    if class_id is None:
      raise ValueError(f'{relpath}: a label needs its class id')
    entries.append(_repeated_entry(contract.CLASS_LABEL, class_id))
    entries.append(_repeated_entry(contract.CLASS_TEXT, label.encode('utf-8')))
  if mask is not None:
    entries.append(_feature_entry(contract.MASK_ENCODED, mask))
    entries.append(_repeated_entry(contract.MASK_FORMAT, b'png'))
  return _example(entries)


def example_filename(serialized: bytes) -> str:
  """The ``image/filename`` of a serialized ``tf.train.Example`` of this job (the inverse of
  ``serialize_example`` for that one feature), without TensorFlow: the image bytes are skipped
  by their length, so it costs microseconds whatever the record's size.

  Raises:
    ValueError: the record has no ``image/filename`` bytes feature, or is not an Example.
  """
  values = wire.parse_example(serialized, keys=(contract.FILENAME,)).get(contract.FILENAME)
  if not values or not isinstance(values[0], bytes):
    raise ValueError(f'a record without {contract.FILENAME}')
  return values[0].decode('utf-8')
