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

The sums are OpenCV's ``sumElems`` of the pixels and of their squares (``uint16``: 255^2 fits),
one pass each over a band of rows of at most ``_BAND_PIXELS`` pixels (one row at least) at a
time, so that the squares take at most 8 MiB for any image up to a million pixels wide (a
fraction of a 256-bin ``calcHist`` per channel: docs/benchmarks.md, "The conversion step's own
code"). They are exact:
``sumElems`` adds 8- and 16-bit values in integers, block by block, and the block totals in
float64, exact below 2^53, which a band's sum of squares per channel (255^2 per pixel, about
6.8e10 for a band of 2^20 pixels) is far from; the bands' totals are added as Python ints.
"""

from typing import NamedTuple, Tuple

import cv2
import numpy as np
import simplejpeg

from imagerecords import contract

from transforms.elements import EncodedImage

_BAND_PIXELS = 1 << 20  # rows of at most this many pixels are summed at a time


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
  """The exact :class:`PixelSums` of ``uint8 [H, W, C]`` pixels, C = 1 to 4 (OpenCV's
  ``sumElems`` sums at most 4 channels).

  Raises:
    ValueError: not ``uint8 [H, W, C]`` with C from 1 to 4.
  """
  if pixels.dtype != np.uint8 or pixels.ndim != 3 or not 1 <= pixels.shape[2] <= 4:
    raise ValueError(f'pixel_sums takes uint8 [H, W, 1-4], got {pixels.dtype} {pixels.shape}')
  height, width, channels = pixels.shape
  rows = max(1, _BAND_PIXELS // max(1, width))  # one band for any image under 2^20 pixels
  sums, squares = [0] * channels, [0] * channels
  for top in range(0, height, rows):
    band_sums, band_squares = _band_sums(pixels[top:top + rows])
    for channel in range(channels):
      sums[channel] += int(band_sums[channel])
      squares[channel] += int(band_squares[channel])
  return PixelSums(tuple(sums), tuple(squares), height * width)


def _band_sums(pixels: np.ndarray) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
  """OpenCV's ``sumElems`` (4 float64 values, unused channels 0) of ``uint8 [h, w, C]`` pixels
  and of their squares (``uint16``)."""
  squares = pixels.astype(np.uint16)
  squares *= squares
  return cv2.sumElems(pixels), cv2.sumElems(squares)
