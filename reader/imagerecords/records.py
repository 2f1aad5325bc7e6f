"""``tf.train.Example`` records written and read with protobuf's runtime, without TensorFlow.

A record (one TFRecord payload; the framing around it is :mod:`imagerecords.framing`) is a
serialized ``tf.train.Example``::

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }
    Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2;
                            Int64List int64_list = 3; } }

with the messages of :mod:`imagerecords.example_pb2`, generated from TensorFlow's definitions
(``example.proto`` beside it), so the bytes are those TensorFlow writes and parses. This module
is the one place where records are made and taken apart outside TensorFlow: the Beam job writes
every record with :func:`serialize_example` (``transforms.image.example``) and adds embeddings
with :func:`add_features`; it reads a previous night's record's file name with
:func:`example_filename`; ``python -m imagerecords.inspect`` and loaders of other frameworks
(``bench/gpu_step.py`` feeds PyTorch) read features with :func:`parse_example`.

Writing is deterministic: the features are sorted by key (UTF-8 byte order, the order of
C++'s deterministic serialization of TensorFlow's map), here rather than by the Python
runtime's ``SerializeToString(deterministic=True)``, whose order differs for a key that is a
prefix of another (``example.proto`` says more). The same features give the same bytes on every
runner, so the job's outputs can be compared byte for byte.
"""

import operator
from typing import Collection, Dict, List, Mapping, Optional, Tuple, Union

from google.protobuf.message import DecodeError

from imagerecords import contract
from imagerecords.example_pb2 import Example

# what serialize_example takes for one feature: bytes, int, a tuple of ints, a float array
FeatureValue = Union[bytes, int, Tuple[int, ...], 'numpy.ndarray']
# what parse_example gives for one feature: the values of its BytesList, FloatList or Int64List
FeatureValues = Union[List[bytes], List[float], List[int]]

_BY_KEY = operator.attrgetter('key')  # a Features.FeatureEntry's key


class RecordError(ValueError):
  """The bytes are not a serialized ``tf.train.Example`` (protobuf cannot parse them).

  The message says so without saying where: the caller, which knows the file and the record's
  index, names them (``inspect``'s problem lines, a night's rejected records).
  """


def _parse(serialized: bytes) -> Example:
  """The ``Example`` message of ``serialized``; raises :class:`RecordError`."""
  try:
    return Example.FromString(serialized)
  except DecodeError as error:  # protobuf's own message names the type, not the fault
    raise RecordError(f'not a tf.train.Example (protobuf cannot parse its {len(serialized)} '
                      'bytes)') from error


def _set_value(feature, value: FeatureValue) -> None:
  """Sets the one list of an empty ``Feature`` message (see :func:`serialize_example`)."""
  if isinstance(value, bytes):
    feature.bytes_list.value.append(value)
  elif isinstance(value, int):  # bool included: True is written as 1
    feature.int64_list.value.append(value)
  elif isinstance(value, tuple):
    feature.int64_list.SetInParent()  # the kind is set even for no values
    feature.int64_list.value.extend(value)
  else:  # a float array: its float32 values, row-major
    feature.float_list.SetInParent()
    feature.float_list.value.extend(value.astype('<f4', copy=False).ravel().tolist())


def _serialize(example: Example, features: Mapping[str, FeatureValue]) -> bytes:
  """``example`` with ``features`` added, its entries sorted by key, serialized."""
  entries = example.features.feature
  merge = len(entries) > 0
  for key in sorted(features):
    entry = entries.add()
    entry.key = key
    _set_value(entry.value, features[key])
  if merge:  # stable: entries of one key (none in the job's records) keep their order
    entries.sort(key=_BY_KEY)
  return example.SerializeToString()


def serialize_example(features: Mapping[str, FeatureValue]) -> bytes:
  """A serialized ``tf.train.Example`` of ``features``.

  Args:
    features: feature key -> value; ``bytes`` become a BytesList of one value, ``int`` (or
      ``bool``) an Int64List of one value, a tuple of ints an Int64List of its values, a
      ``numpy.ndarray`` a FloatList of its values as float32 in row-major order (any shape; the
      shape itself is not stored).

  Returns:
    Wire-format bytes that ``tf.train.Example.FromString`` parses, features sorted by key
    (module docstring).

  Raises:
    ValueError: an int outside int64's range (protobuf's message).
  """
  return _serialize(Example(), features)


def add_features(serialized: bytes, features: Mapping[str, FeatureValue]) -> bytes:
  """``serialized`` (a record of :func:`serialize_example`) with ``features`` added: the bytes
  :func:`serialize_example` gives for the union of both, features sorted by key.

  Raises:
    RecordError: ``serialized`` is not a ``tf.train.Example``.
    ValueError: a key of ``features`` is in the record already.
  """
  example = _parse(serialized)
  for entry in example.features.feature:
    if entry.key in features:
      raise ValueError(f'the record has a feature {entry.key!r} already')
  return _serialize(example, features)


def parse_example(serialized: bytes,
                  keys: Optional[Collection[str]] = None) -> Dict[str, FeatureValues]:
  """The features of a serialized ``tf.train.Example``, as ``tf.train.Example.FromString``
  reads them.

  Args:
    serialized: the record's bytes (one TFRecord payload).
    keys: the feature keys wanted; None for all. A key the record lacks is left out.

  Returns:
    feature key -> its values: a list of ``bytes`` (BytesList), of Python floats (FloatList,
    float32 values) or of ints (Int64List, signed). A feature with no kind set maps to ``[]``.
    A key that occurs twice in the bytes keeps its last entry (protobuf's map parsing).

  Raises:
    RecordError: the bytes are not a ``tf.train.Example`` (a wire type or length it cannot
      hold, a packed list cut inside a value, a varint over 10 bytes, a key that is not UTF-8).
  """
  parsed: Dict[str, FeatureValues] = {}
  for entry in _parse(serialized).features.feature:
    key = entry.key
    if keys is None or key in keys:
      feature = entry.value
      kind = feature.WhichOneof('kind')
      parsed[key] = list(getattr(feature, kind).value) if kind else []
  return parsed


def example_filename(serialized: bytes) -> str:
  """The ``image/filename`` of a serialized ``tf.train.Example`` of the job (the path of its
  source relative to the input root): which file a previous night's record is.

  Raises:
    RecordError: the bytes are not a ``tf.train.Example``.
    ValueError: the record has no ``image/filename`` BytesList of at least one value, or its
      value is not UTF-8.
  """
  values = ()
  for entry in _parse(serialized).features.feature:
    if entry.key == contract.FILENAME:  # the last entry of the key, as for a map
      values = entry.value.bytes_list.value
  if not values:
    raise ValueError(f'a record without {contract.FILENAME}')
  return values[0].decode('utf-8')
