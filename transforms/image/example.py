"""The ``tf.train.Example`` of one converted image, with the contract's feature keys.

The keys are defined once in the reader distribution (``imagerecords.contract``) and follow the
TF-slim / TF Model Garden image-classification convention; the record is serialized by
``imagerecords.records`` (protobuf's runtime, TensorFlow's message definitions), which keeps
TensorFlow, its import time and its memory out of every Beam worker and sorts the features by
key, so the same image gives the same record bytes on every runner. The tests parse these bytes
with TensorFlow's own ``tf.train.Example``.
"""

from typing import Optional

from imagerecords import contract
from imagerecords import records

from transforms.elements import EncodedImage


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
    The serialized proto (bytes), as ``WriteToTFRecord`` writes it: the bytes of
    ``imagerecords.records.serialize_example`` of these features.

  Raises:
    ValueError: a label without a class id, or a negative class id.
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
    if class_id < 0:  # an index into labels.txt
      raise ValueError(f'{relpath}: a negative class id {class_id}')
    features[contract.CLASS_LABEL] = class_id
    features[contract.CLASS_TEXT] = label.encode('utf-8')
  if mask is not None:
    features[contract.MASK_ENCODED] = mask
    features[contract.MASK_FORMAT] = b'png'
  return records.serialize_example(features)
