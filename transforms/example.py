"""Serialize ``tf.train.Example`` records with the contract's feature keys, without TensorFlow.

The keys are defined once in the reader distribution (``imagerecords.contract``) and follow the
TF-slim / TF Model Garden image-classification convention.

The bytes are written directly in protobuf's wire format for ``tensorflow/core/example/
example.proto`` (``Example { Features features = 1 }``, ``Features { map<string, Feature>
feature = 1 }``, ``Feature { oneof { BytesList bytes_list = 1; FloatList float_list = 2;
Int64List int64_list = 3 } }``, packed int64 lists). That keeps TensorFlow, its import time and
its memory out of every Beam worker, and makes serialization deterministic (features sorted by
key), so the same image gives the same record bytes on every runner. The tests parse these
bytes with TensorFlow's own ``tf.train.Example``.
"""

from typing import Dict, Optional, Union

from imagerecords import contract

from transforms.codec import EncodedImage

_LEN = 2  # protobuf wire type: length-delimited


def _varint(value: int) -> bytes:
  """Protobuf base-128 varint of a non-negative integer."""
  out = bytearray()
  while True:
    byte = value & 0x7F
    value >>= 7
    if value:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
  """A length-delimited field: key, length, payload."""
  return _varint(number << 3 | _LEN) + _varint(len(payload)) + payload


def _feature(value: Union[bytes, int]) -> bytes:
  """A ``Feature`` holding one bytes value (BytesList) or one int64 value (packed Int64List)."""
  if isinstance(value, bytes):
    return _field(1, _field(1, value))
  if value < 0:
    raise ValueError(f'negative int64 features are not written here: {value}')
  return _field(3, _field(1, _varint(value)))


def serialize_example(features: Dict[str, Union[bytes, int]]) -> bytes:
  """A serialized ``tf.train.Example`` of single-valued bytes / non-negative int64 features.

  Args:
    features: feature key -> value; ``bytes`` become a BytesList, ``int`` an Int64List.

  Returns:
    Wire-format bytes that ``tf.train.Example.FromString`` parses; features sorted by key.
  """
  entries = b''.join(
      _field(1, _field(1, key.encode('utf-8')) + _field(2, _feature(value)))
      for key, value in sorted(features.items()))
  return _field(1, entries)


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
  features = {
      contract.IMAGE_ENCODED: image.data,
      contract.IMAGE_FORMAT: image.format.encode('ascii'),
      contract.IMAGE_HEIGHT: image.height,
      contract.IMAGE_WIDTH: image.width,
      contract.IMAGE_CHANNELS: image.channels,
      contract.FILENAME: relpath.encode('utf-8'),
      contract.SOURCE_SHA256: source_sha256.encode('ascii'),
  }
  if label is not None:
    if class_id is None:
      raise ValueError(f'{relpath}: a label needs its class id')
    features[contract.CLASS_LABEL] = class_id
    features[contract.CLASS_TEXT] = label.encode('utf-8')
  if mask is not None:
    features[contract.MASK_ENCODED] = mask
    features[contract.MASK_FORMAT] = b'png'
  return serialize_example(features)
