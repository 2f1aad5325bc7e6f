"""The crop, resize and padding of the stored image (``--image_size``, ``--resize_mode``), as a
geometry that anything stored beside the image (a segmentation mask) can be given too, and
OpenCV set to give the same pixels on every CPU.

Pixel arrays are ``uint8``, shape ``[height, width, channels]`` (or ``[height, width]``).
"""

import threading
from typing import NamedTuple, Optional, Tuple

import cv2
import numpy as np

RESIZE_MODES = ('shorter_side', 'center_crop', 'pad', 'stretch', 'none')

# OpenCV's own thread pool competes with Beam's workers for the same cores: one image is small,
# parallelism comes from processing many images at once.
cv2.setNumThreads(1)

_IPP_OFF = threading.local()


def opencv_without_ipp() -> None:
  """Turns off OpenCV's Intel IPP code paths for the calling thread (once per thread).

  IPP picks its code by the CPU it runs on (SSE4.2, AVX2, AVX-512), and its float arithmetic
  gives other pixels on another CPU: with IPP, ``cv2.resize(INTER_CUBIC)`` changed 261 of the
  300 catdog photos against OpenCV's own code, and the job's records differed between machines
  (tests/test_same_output.py). OpenCV's own code gives the same pixels with or without its
  SSE4/AVX2 dispatch (checked with ``OPENCV_CPU_DISABLE`` on every catdog photo). The switch is
  thread-local in OpenCV (a Beam worker thread starts with IPP on), so every function of the job
  that calls OpenCV on pixels calls this first.
  """
  if not getattr(_IPP_OFF, 'done', False):
    cv2.ipp.setUseIPP(False)
    _IPP_OFF.done = True


class Geometry(NamedTuple):
  """What ``resize`` does to an image, in pixels; see ``resize_geometry``.

  Attributes:
    crop_box: ``(left, top, right, bottom)`` of the kept region, in source (upright, full-size)
      pixel coordinates, right/bottom exclusive, as Pillow's ``Image.crop`` box.
    size: ``(width, height)`` the kept region is resized to.
    pad: ``(left, top, right, bottom)`` pixels of background added around the resized region
      (non-zero only with ``resize_mode='pad'``).
  """
  crop_box: Tuple[int, int, int, int]
  size: Tuple[int, int]
  pad: Tuple[int, int, int, int] = (0, 0, 0, 0)

  @property
  def output_size(self) -> Tuple[int, int]:
    """``(width, height)`` of the stored image: the resized region plus its padding."""
    return (self.size[0] + self.pad[0] + self.pad[2], self.size[1] + self.pad[1] + self.pad[3])


def resize_geometry(width: int, height: int, spec) -> Geometry:
  """The crop, resize and padding that ``resize`` applies to a ``width`` x ``height`` image.

  A pure function of the upright source size and ``spec.image_size`` / ``spec.resize_mode``,
  so that anything stored beside an image (a segmentation mask, resized with nearest-neighbour)
  can be given exactly the same crop and size: crop ``crop_box`` from the full-size source,
  resize the crop to ``size``, then pad by ``pad``.

  Modes (see ``ImageSpec``): ``none`` keeps everything; ``shorter_side`` scales the whole image
  so its shorter side is ``image_size`` (the longer side rounded to the nearest pixel);
  ``center_crop`` keeps the central square of side ``min(width, height)`` (offset rounded down,
  as ``tf.image.resize_with_crop_or_pad``) and scales it to ``image_size`` square; ``pad``
  scales the whole image to fit inside ``image_size`` square and centres it on the square
  (offset rounded down, as ``tf.image.resize_with_crop_or_pad``); ``stretch`` scales the whole
  image to ``image_size`` square, ignoring its aspect ratio.

  Args:
    width, height: the upright source size in pixels (after EXIF orientation), both >= 1.
    spec: the conversion settings (``transforms.image.codec.ImageSpec``, or anything with
      its ``image_size`` and ``resize_mode``).

  Returns:
    A ``Geometry``; ``crop_box`` is in source pixels, ``size`` and ``pad`` in output pixels.
  """
  full = (0, 0, width, height)
  size = spec.image_size
  mode = spec.resize_mode
  if mode == 'none':
    return Geometry(full, (width, height))
  if mode == 'center_crop':
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return Geometry((left, top, left + side, top + side), (size, size))
  if mode == 'stretch':
    return Geometry(full, (size, size))
  if mode == 'shorter_side':
    scale = size / min(width, height)
    return Geometry(full, (size if width <= height else max(1, round(width * scale)),
                           size if height <= width else max(1, round(height * scale))))
  if mode == 'pad':
    scale = size / max(width, height)
    out_w = size if width >= height else max(1, round(width * scale))
    out_h = size if height >= width else max(1, round(height * scale))
    left, top = (size - out_w) // 2, (size - out_h) // 2
    return Geometry(full, (out_w, out_h), (left, top, size - out_w - left, size - out_h - top))
  raise ValueError(f'resize_mode must be one of {RESIZE_MODES}, got {mode!r}')


def resize(pixels: np.ndarray, image_size: int, resize_mode: str,
           background: Tuple[int, ...] = (255, 255, 255),
           source_size: Optional[Tuple[int, int]] = None) -> np.ndarray:
  """Resizes ``uint8 [H, W, C]`` pixels as ``resize_mode`` says (see ``resize_geometry``).

  Args:
    pixels: the upright image, ``uint8 [H, W, C]``.
    image_size: target size in pixels.
    resize_mode: one of ``RESIZE_MODES``.
    background: fill of the padding (``pad`` mode), one value per channel of ``pixels``.
    source_size: ``(width, height)`` of the full-size source when ``pixels`` is a smaller
      (DCT-downscaled) decode of it: the geometry is computed on the source size, as
      ``resize_geometry`` gives it to masks, and its crop box scaled to ``pixels``.

  Returns:
    ``uint8 [out_h, out_w, C]``, ``(out_w, out_h)`` = ``resize_geometry(...).output_size``.
  """
  height, width = pixels.shape[:2]
  source_w, source_h = source_size or (width, height)
  geometry = resize_geometry(source_w, source_h, _ResizeSpec(image_size, resize_mode))
  return apply_geometry(pixels, geometry, background=background,
                        scale=(width / source_w, height / source_h))


def apply_geometry(pixels: np.ndarray, geometry: Geometry, background=(255, 255, 255),
                   scale: Tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
  """Crops, resizes and pads ``uint8 [H, W, C]`` (or ``[H, W]``) pixels by ``geometry``.

  Args:
    pixels: the image the geometry was computed for (a mask of class indices goes through
      ``transforms.image.masks.resize_mask`` instead: nearest-neighbour).
    geometry: from ``resize_geometry``; area interpolation when shrinking 2x or more, bilinear
      when shrinking less, bicubic when enlarging (OpenCV, without IPP: ``opencv_without_ipp``).
    background: fill of the padding: one value per channel of ``pixels``, or one for all.
    scale: ``(x, y)`` size of ``pixels`` relative to the source the crop box is in (below 1
      for a DCT-downscaled decode); the scaled box is rounded to whole pixels.

  Returns:
    The result, ``geometry.output_size`` in size, same dtype and channels as ``pixels``.
  """
  opencv_without_ipp()
  left, top, right, bottom = geometry.crop_box
  if scale != (1.0, 1.0):
    left, right = round(left * scale[0]), round(right * scale[0])
    top, bottom = round(top * scale[1]), round(bottom * scale[1])
  height, width = pixels.shape[:2]
  if (left, top, right, bottom) != (0, 0, width, height):
    pixels = pixels[top:bottom, left:right]
  out_w, out_h = geometry.size
  if (out_h, out_w) != pixels.shape[:2]:
    if out_w * 2 <= pixels.shape[1] or out_h * 2 <= pixels.shape[0]:
      interpolation = cv2.INTER_AREA  # shrinking 2x or more: average every source pixel
    elif out_w * out_h < pixels.shape[0] * pixels.shape[1]:
      # Shrinking less than 2x (every JPEG after its DCT-domain downscale): bilinear's two taps
      # still reach every source pixel, at a fraction of INTER_AREA's cost at non-integer
      # factors (docs/benchmarks.md).
      interpolation = cv2.INTER_LINEAR
    else:
      interpolation = cv2.INTER_CUBIC
    resized = cv2.resize(np.ascontiguousarray(pixels), (out_w, out_h), interpolation=interpolation)
    pixels = resized.reshape((out_h, out_w) + pixels.shape[2:])
  pad_left, pad_top, pad_right, pad_bottom = geometry.pad
  if any(geometry.pad):
    fill = np.asarray(background, dtype=pixels.dtype).reshape(-1)
    channels = pixels.shape[2] if pixels.ndim == 3 else 1
    if fill.size not in (1, channels):
      raise ValueError(f'background {tuple(background)} does not fit {channels} channel(s)')
    padded = np.empty((out_h + pad_top + pad_bottom, out_w + pad_left + pad_right)
                      + pixels.shape[2:], pixels.dtype)
    padded[...] = fill if pixels.ndim == 3 else fill[0]
    padded[pad_top:pad_top + out_h, pad_left:pad_left + out_w] = pixels
    pixels = padded
  return pixels


class _ResizeSpec(NamedTuple):
  """The two fields of ``ImageSpec`` that ``resize_geometry`` reads."""
  image_size: int
  resize_mode: str
