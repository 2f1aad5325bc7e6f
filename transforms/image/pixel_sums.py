"""Exact per-channel pixel sums of one stored image, computed where it is converted.

The training split's statistics (``transforms.analysis.statistics``) are the mean and standard
deviation of every pixel *as stored*: decoded from the record's ``image/encoded`` the way the
reader (TensorFlow) decodes it. Each image's share is three integers per channel, computed in
the conversion step right after the image is encoded (so the record is never parsed or decoded
a second time elsewhere)::

    EncodedImage (what the record stores)
      -> pixels, uint8 [H, W, C], decoded as tf.io.decode_image(channels=C) decodes them:
         jpeg written by the job: libjpeg-turbo through simplejpeg (accurate integer IDCT, fancy
           upsampling: TensorFlow's decode_jpeg with dct_method='INTEGER_ACCURATE', to the bit)
         png written by the job (8-bit gray or RGB, lossless): OpenCV, the pixels exactly
         raw: the bytes themselves
         every --image_format=original file: TensorFlow's own decode (imported then, in that
           case only; a source JPEG may be CMYK or carry junk between markers, a source PNG
           16-bit or paletted, where only TensorFlow's decoder gives TensorFlow's pixels)
      -> PixelSums(sums=[C], squares=[C], num_pixels): per channel, the sum of the 0-255 values
         and of their squares, as Python ints (exact)

The sums come from a 256-bin histogram per channel (OpenCV's ``calcHist``, about 0.15 ms for a
256 x 384 RGB image), whose counts are exact in float32 up to 2^24 pixels; larger images use
numpy's integer ``bincount``.
"""

from typing import NamedTuple, Tuple

import cv2
import numpy as np
import simplejpeg

from imagerecords import contract

from transforms.elements import EncodedImage

_VALUES = np.arange(256, dtype=np.float64)
_SQUARES = _VALUES * _VALUES
_EXACT_FLOAT32_COUNT = 1 << 24


class PixelSums(NamedTuple):
  """One image's per-channel sums of pixel values and of their squares (0-255 scale).

  sums, squares: one int per channel (R, G, B, or the gray channel). num_pixels: H * W.
  """
  sums: Tuple[int, ...]
  squares: Tuple[int, ...]
  num_pixels: int


def stored_pixels(image: EncodedImage, channels: int, original: bool = False) -> np.ndarray:
  """The pixels TensorFlow decodes from ``image.data`` with ``channels`` channels:
  ``uint8 [H, W, channels]``. ``original``: ``image`` holds a source file's own bytes
  (``--image_format=original``), not the job's encoding.

  Raises:
    tf.errors.InvalidArgumentError: an original file TensorFlow cannot decode.
  """
  if image.format == 'jpeg' and not original:
    pixels = simplejpeg.decode_jpeg(image.data, colorspace='RGB' if channels == 3 else 'GRAY')
    return pixels.reshape(pixels.shape[0], pixels.shape[1], channels)
  if image.format == 'raw':
    return np.frombuffer(image.data, np.uint8).reshape(image.height, image.width,
                                                       image.channels)
  if image.format == 'png' and not original:  # the job's own 8-bit PNG (codec.encode)
    pixels = cv2.imdecode(np.frombuffer(image.data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels.ndim == 3 and channels == 3:
      return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    return pixels.reshape(pixels.shape[0], pixels.shape[1], channels)
  import tensorflow as tf  # pylint: disable=import-outside-toplevel  # original files only
  if image.format == 'jpeg':
    return tf.io.decode_jpeg(image.data, channels=channels,
                             dct_method=contract.JPEG_DCT_METHOD).numpy()
  return tf.io.decode_image(image.data, channels=channels, dtype=tf.uint8,
                            expand_animations=False).numpy()


def pixel_sums(pixels: np.ndarray) -> PixelSums:
  """The exact :class:`PixelSums` of ``uint8 [H, W, C]`` pixels."""
  height, width, channels = pixels.shape
  sums, squares = [], []
  for channel in range(channels):
    if height * width < _EXACT_FLOAT32_COUNT:
      counts = cv2.calcHist([pixels], [channel], None, [256], [0, 256]).ravel().astype(
          np.float64)
    else:
      counts = np.bincount(pixels[..., channel].ravel(), minlength=256).astype(np.float64)
    # the totals stay below 2^53 (exact in float64) for any image under 1.3e11 pixels
    sums.append(int(counts @ _VALUES))
    squares.append(int(counts @ _SQUARES))
  return PixelSums(tuple(sums), tuple(squares), height * width)
