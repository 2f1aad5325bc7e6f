"""Decode, orient, resize and re-encode one image: the per-element work of the job.

Pure functions on bytes and numpy arrays, with no Beam in them, so that the pipeline's DoFn and
the benchmarks call exactly the same code.

The fast path is libjpeg-turbo through simplejpeg for JPEG sources (decode, with DCT-domain
downscaling when the source is at least twice the target) plus OpenCV for resizing; every other
format, and any JPEG that libjpeg-turbo refuses in strict mode, goes through Pillow. Measured on
these machines (DESIGN.md): about 1.5 ms per ~500x375 photo with the fast path, 2.2-3 ms with
Pillow.

Conventions:
  * pixel arrays are ``uint8``, shape ``[height, width, channels]``, channels last, RGB order;
  * EXIF orientation (tag 0x0112, values 1-8, as defined by the EXIF 2.3 standard) is applied
    before resizing, so the stored image is upright and its width/height are the upright ones;
  * resizing uses area interpolation when shrinking and bicubic when enlarging (OpenCV), the
    usual choice for photographic downscaling.
"""

import dataclasses
import io
import warnings
from typing import Optional, Tuple

import cv2
import numpy as np
import simplejpeg
from PIL import Image, ImageFile, UnidentifiedImageError

# OpenCV's own thread pool competes with Beam's workers for the same cores: one image is small,
# parallelism comes from processing many images at once.
cv2.setNumThreads(1)

RESIZE_MODES = ('shorter_side', 'center_crop', 'none')
IMAGE_FORMATS = ('jpeg', 'png')
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # 89,478,485: Pillow's decompression-bomb limit

_EXIF_ORIENTATION = 0x0112


class ImageError(ValueError):
  """An input that cannot become an example. ``str(error)`` is the reason, for people."""


@dataclasses.dataclass(frozen=True)
class ImageSpec:
  """How every image is converted.

  Attributes:
    image_size: target size in pixels; its meaning depends on ``resize_mode``.
    resize_mode: ``shorter_side`` keeps the aspect ratio and scales the shorter side to
      ``image_size``; ``center_crop`` scales the shorter side to ``image_size`` and crops the
      central ``image_size`` x ``image_size`` square (the TF-slim / Keras ``TARGET_SIZE`` case);
      ``none`` keeps the source size.
    image_format: ``jpeg`` or ``png``: the format of the stored image.
    jpeg_quality: libjpeg quality, 1-100.
    max_pixels: an image whose header claims more pixels than this is refused before any pixel
      is decoded (decompression-bomb guard, default as Pillow's).
  """
  image_size: int = 256
  resize_mode: str = 'center_crop'
  image_format: str = 'jpeg'
  jpeg_quality: int = 90
  max_pixels: int = DEFAULT_MAX_PIXELS

  def __post_init__(self):
    if self.resize_mode not in RESIZE_MODES:
      raise ValueError(f'resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}')
    if self.image_format not in IMAGE_FORMATS:
      raise ValueError(f'image_format must be one of {IMAGE_FORMATS}, got {self.image_format!r}')
    if self.resize_mode != 'none' and self.image_size < 1:
      raise ValueError(f'image_size must be a positive number of pixels, got {self.image_size}')
    if not 1 <= self.jpeg_quality <= 100:
      raise ValueError(f'jpeg_quality must be within 1-100, got {self.jpeg_quality}')


@dataclasses.dataclass(frozen=True)
class EncodedImage:
  """An encoded image and the shape of its pixels (height, width in pixels; channels 1 or 3)."""
  data: bytes
  format: str
  height: int
  width: int
  channels: int


def convert(data: bytes, spec: ImageSpec) -> EncodedImage:
  """Decodes ``data``, applies its EXIF orientation, resizes it and re-encodes it.

  Args:
    data: the bytes of an image file (any format Pillow reads; JPEG takes the fast path).
    spec: the conversion settings.

  Returns:
    The re-encoded RGB image with its upright height and width.

  Raises:
    ImageError: with a reason naming what is wrong (empty file, not an image, HTML or SVG
      content, truncated or corrupt data, too many pixels, unsupported pixel format).
  """
  pixels = decode(data, spec)
  pixels = resize(pixels, spec.image_size, spec.resize_mode)
  return encode(pixels, spec)


def decode(data: bytes, spec: ImageSpec) -> np.ndarray:
  """Decodes an image file's bytes to upright RGB pixels, ``uint8 [H, W, 3]``.

  When ``spec`` allows it, JPEGs are scaled down in the DCT domain while decoding, to no less
  than what ``resize`` needs. Raises ``ImageError`` (see ``convert``).
  """
  image = _open(data)
  width, height = image.size
  if width * height > spec.max_pixels:
    raise ImageError(
        f'image claims {width}x{height} = {width * height:,} pixels, more than '
        f'max_pixels={spec.max_pixels:,} (possible decompression bomb)')
  pixels = None
  if image.format == 'JPEG' and image.mode in ('RGB', 'L'):
    pixels = _decode_jpeg_fast(data, (height, width), spec)
  if pixels is None:
    # Pillow must decode before EXIF is read: for PNG, getexif() itself loads the pixels to find
    # an eXIf chunk after the image data, and would swallow a decode error.
    pixels = _decode_with_pillow(image, spec)
  return _apply_orientation(pixels, _exif_orientation(image))


def resize(pixels: np.ndarray, image_size: int, resize_mode: str) -> np.ndarray:
  """Resizes ``uint8 [H, W, C]`` pixels as ``resize_mode`` says (see ``ImageSpec``)."""
  if resize_mode == 'none':
    return pixels
  height, width = pixels.shape[:2]
  scale = image_size / min(height, width)
  if resize_mode == 'center_crop':
    # Crop first, in source pixels, then resize only the square that is kept.
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    pixels = pixels[top:top + side, left:left + side]
    out_h = out_w = image_size
  else:  # shorter_side
    out_h = image_size if height <= width else max(1, round(height * scale))
    out_w = image_size if width <= height else max(1, round(width * scale))
  if (out_h, out_w) == pixels.shape[:2]:
    return pixels
  interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
  resized = cv2.resize(np.ascontiguousarray(pixels), (out_w, out_h), interpolation=interpolation)
  return resized.reshape(out_h, out_w, pixels.shape[2])


def encode(pixels: np.ndarray, spec: ImageSpec) -> EncodedImage:
  """Encodes ``uint8 [H, W, 3]`` RGB pixels as ``spec.image_format``."""
  height, width, channels = pixels.shape
  pixels = np.ascontiguousarray(pixels)
  if spec.image_format == 'jpeg':
    data = simplejpeg.encode_jpeg(
        pixels, quality=spec.jpeg_quality, colorspace='RGB', colorsubsampling='420')
  else:
    ok, buffer = cv2.imencode('.png', cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    if not ok:
      raise ImageError('PNG encoding failed')
    data = buffer.tobytes()
  return EncodedImage(data, spec.image_format, height, width, channels)


def _open(data: bytes) -> Image.Image:
  """Opens an image lazily (header only), or raises ImageError saying what the bytes are."""
  if not data:
    raise ImageError('empty file (0 bytes)')
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')  # Pillow warns on odd metadata it then handles
      return Image.open(io.BytesIO(data))
  except Image.DecompressionBombError as error:
    raise ImageError(f'too many pixels (possible decompression bomb): {error}') from None
  except UnidentifiedImageError:
    raise ImageError(f'not an image: {_describe_unknown(data)}') from None
  except Exception as error:  # Pillow raises many types for broken headers
    raise ImageError(f'corrupt image header: {type(error).__name__}: {error}') from None


def _describe_unknown(data: bytes) -> str:
  """Names what non-image bytes look like, for the failure report."""
  head = data[:512].lstrip().lower()
  if head.startswith((b'<!doctype html', b'<html')) or b'<html' in head:
    return 'HTML content (a web page saved with an image extension)'
  if b'<svg' in head or (head.startswith(b'<?xml') and b'svg' in data[:4096].lower()):
    return 'SVG vector graphics, not a raster image'
  if data[:3] == b'\xff\xd8\xff':
    return 'JPEG data that no decoder here accepts (e.g. 12-bit or lossless JPEG)'
  if data[:8] == b'\x89PNG\r\n\x1a\n':
    return 'PNG signature with a corrupt or unsupported header'
  if data[:6] in (b'GIF87a', b'GIF89a'):
    return 'GIF signature with a corrupt header'
  try:
    if b'\x00' not in head:
      head.decode('utf-8')
      return 'text content, no known image signature'
  except UnicodeDecodeError:
    pass
  return f'unknown binary format (first bytes {data[:8].hex()})'


def _exif_orientation(image: Image.Image) -> int:
  """EXIF orientation 1-8; 1 (upright) when absent or unreadable."""
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')  # 'Corrupt EXIF data' and the like: handled below
      value = image.getexif().get(_EXIF_ORIENTATION, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1
  except Exception:  # malformed EXIF: treat as upright, as browsers do
    return 1


def _decode_jpeg_fast(data: bytes, shape: Tuple[int, int], spec: ImageSpec) -> Optional[np.ndarray]:
  """libjpeg-turbo decode to RGB, DCT-scaled when the source is >= 2x the target; None on error.

  None sends the image to Pillow, which is more lenient (junk before markers, bad EXIF), so
  nothing Pillow can read is lost to libjpeg-turbo's strict mode.
  """
  min_size = _min_decoded_size(shape, spec)
  try:
    return simplejpeg.decode_jpeg(
        data, colorspace='RGB', min_height=min_size[0], min_width=min_size[1], strict=True)
  except Exception:
    return None


def _min_decoded_size(shape: Tuple[int, int], spec: ImageSpec) -> Tuple[int, int]:
  """The smallest (height, width) decode that still gives ``resize`` all the pixels it needs.

  (0, 0) means full size: DCT scaling is used only when both sides are at least twice
  ``image_size`` (below that it costs more than it saves, as measured here).
  """
  height, width = shape
  if spec.resize_mode == 'none' or min(height, width) < 2 * spec.image_size:
    return 0, 0
  return spec.image_size, spec.image_size


# EXIF orientation -> the numpy view that makes the image upright (the inverse of what the camera
# recorded); the same mapping as Pillow's ImageOps.exif_transpose.
_ORIENT = {
    2: lambda a: a[:, ::-1],  # mirrored horizontally
    3: lambda a: a[::-1, ::-1],  # rotated 180
    4: lambda a: a[::-1],  # mirrored vertically
    5: lambda a: a.transpose(1, 0, 2),  # transposed
    6: lambda a: np.rot90(a, -1),  # needs 90 degrees clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # transversed
    8: lambda a: np.rot90(a, 1),  # needs 90 degrees counter-clockwise
}


def _apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
  """Returns ``pixels`` upright for an EXIF orientation (2-8 swap or flip axes; 1 is as is)."""
  if orientation == 1:
    return pixels
  return np.ascontiguousarray(_ORIENT[orientation](pixels))


def _decode_with_pillow(image: Image.Image, spec: ImageSpec) -> np.ndarray:
  """Full decode with Pillow, first frame only, converted to RGB ``uint8 [H, W, 3]``."""
  try:
    image.seek(0)  # animated GIF/WebP, multi-page TIFF, MPO: the first frame
    if image.format == 'JPEG':
      height, width = _min_decoded_size((image.height, image.width), spec)
      if height:
        image.draft('RGB', (width, height))
    image.load()
  except Exception as error:
    raise ImageError(f'corrupt or truncated image data ({image.format}): {error}') from None
  return np.asarray(_to_rgb(image))


def _to_rgb(image: Image.Image) -> Image.Image:
  """Converts any Pillow mode to 8-bit RGB; transparency is composited on white."""
  mode = image.mode
  if mode == 'RGB':
    return image
  if mode in ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I'):
    # 16-bit (or 32-bit integer) samples: scale the full range down to 8 bits, never clip.
    samples = np.asarray(image, dtype=np.float64)
    top = 65535.0 if mode.startswith('I;16') or samples.max() <= 65535 else samples.max()
    gray = np.clip(np.rint(samples * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, 'L').convert('RGB')
  if mode == 'F':
    gray = np.clip(np.rint(np.asarray(image) * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, 'L').convert('RGB')
  if mode == 'P' and 'transparency' in image.info or mode in ('RGBA', 'LA', 'PA', 'La', 'RGBa'):
    rgba = image.convert('RGBA')
    background = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert('RGB')
  try:
    return image.convert('RGB')
  except Exception as error:
    raise ImageError(f'unsupported pixel format {mode!r}: {error}') from None


# Pillow must never silently return a partly decoded image: a truncated file is a failure.
ImageFile.LOAD_TRUNCATED_IMAGES = False
