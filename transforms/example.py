"""Build ``tf.train.Example`` records with the contract's feature keys.

The keys are defined once in the reader distribution (``imagerecords.contract``) and follow the
TF-slim / TF Model Garden image-classification convention.
"""

from typing import Optional

from imagerecords import contract

from transforms.codec import EncodedImage


def _bytes(value: bytes):
  from tensorflow.core.example import feature_pb2  # pylint: disable=import-outside-toplevel
  return feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[value]))


def _int64(value: int):
  from tensorflow.core.example import feature_pb2  # pylint: disable=import-outside-toplevel
  return feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[value]))


def build_example(image: EncodedImage, relpath: str, source_sha256: str,
                  label: Optional[str] = None, class_id: Optional[int] = None) -> bytes:
  """The serialized ``tf.train.Example`` of one converted image.

  Args:
    image: the encoded image and its shape (height, width in pixels; channels).
    relpath: the source's path relative to the input root ('/'-separated).
    source_sha256: hex SHA-256 of the source file's bytes.
    label: class name, or None for unlabeled data (then no class keys are written).
    class_id: 0-based class id (index into labels.txt); required with ``label``.

  Returns:
    The serialized proto (bytes), as ``WriteToTFRecord`` writes it.
  """
  from tensorflow.core.example import example_pb2, feature_pb2  # pylint: disable=import-outside-toplevel
  feature = {
      contract.IMAGE_ENCODED: _bytes(image.data),
      contract.IMAGE_FORMAT: _bytes(image.format.encode()),
      contract.IMAGE_HEIGHT: _int64(image.height),
      contract.IMAGE_WIDTH: _int64(image.width),
      contract.IMAGE_CHANNELS: _int64(image.channels),
      contract.FILENAME: _bytes(relpath.encode('utf-8')),
      contract.SOURCE_SHA256: _bytes(source_sha256.encode('ascii')),
  }
  if label is not None:
    feature[contract.CLASS_LABEL] = _int64(class_id)
    feature[contract.CLASS_TEXT] = _bytes(label.encode('utf-8'))
  example = example_pb2.Example(features=feature_pb2.Features(feature=feature))
  return example.SerializeToString()
