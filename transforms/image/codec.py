"""Decode, orient, resize and re-encode one image: the per-element work of the job.

Pure functions on bytes and numpy arrays, with no Beam in them, so that the pipeline's DoFn and
the benchmarks call exactly the same code.

The fast path is libjpeg-turbo through simplejpeg for JPEG sources (decode, with DCT-domain
downscaling when the source is at least twice the target) plus OpenCV for resizing; every other
format, and any JPEG that libjpeg-turbo refuses in strict mode, goes through Pillow (what each
costs: docs/benchmarks.md).

What every source becomes (``channels`` = ``ImageSpec.channels``, 3 or 1):

  * the file's type is read from its content, never from its extension;
  * CMYK (Adobe-inverted JPEGs too) and CIE L*a*b* go to sRGB through their embedded ICC profile
    with Pillow's ImageCms (LittleCMS) when they have one, else Pillow's standard conversion;
  * grayscale becomes 3 equal channels, or stays 1 channel; RGB becomes 1 channel with ITU-R
    601-2 luma weights (``L = 0.299 R + 0.587 G + 0.114 B``, Pillow's and libjpeg's);
  * 16-bit (and 32-bit integer) samples are scaled to 8 bits over their full range
    (``v * 255 / 65535``, rounded), never clipped;
  * transparency (alpha bands, palette or single-colour tRNS) is composited on
    ``ImageSpec.background``;
  * animated GIF/WebP, multi-page TIFF and MPO give their first frame;
  * EXIF orientation (tag 0x0112, values 1-8, as defined by the EXIF 2.3 standard) is applied
    before resizing, so the stored image is upright and its width/height are the upright ones;
  * resizing follows ``resizing.resize_geometry``, with area interpolation when shrinking 2x or more,
    bilinear when shrinking less (what is left after a JPEG's DCT-domain downscale) and bicubic
    when enlarging (OpenCV's own code, never Intel IPP's: ``resizing.opencv_without_ipp``), so the same
    source gives the same pixels on any x86 CPU.

Pixel arrays are ``uint8``, shape ``[height, width, channels]``, channels last, RGB order.
"""

import dataclasses
import io
import re
import warnings
from typing import NamedTuple, Optional, Tuple

import cv2
import numpy as np
import simplejpeg
from PIL import Image, ImageCms, ImageFile, UnidentifiedImageError

from transforms.elements import EncodedImage
from transforms.image import jpeg_markers, resizing

IMAGE_FORMATS = ('jpeg', 'png', 'original', 'raw')
CHROMA_SUBSAMPLINGS = ('420', '444')
CHANNELS = (3, 1)
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # 89,478,485: Pillow's decompression-bomb limit
DEFAULT_MAX_JPEG_SCANS = 100
"""``ImageSpec.max_jpeg_scans``' default. Of the 1,823 JPEGs in ``../shared/data`` (photos,
scans, wallpapers and libjpeg-turbo's and Pillow's test files), 1,816 have 1 scan and the
progressive ones 7 to 11 (libjpeg's standard progression has 10 for colour, 6 for gray): 100 is
nine times the most found, and each scan is a pass of the decoder over the whole image, so a
JPEG of thousands of scans takes minutes (docs/images.md has the figures)."""
WHITE = (255, 255, 255)

ORIGINAL_FORMATS = {'JPEG': 'jpeg', 'MPO': 'jpeg', 'PNG': 'png', 'GIF': 'gif', 'BMP': 'bmp'}
"""Pillow format -> ``image/format`` of the sources ``--image_format=original`` stores as they
are: those ``tf.io.decode_image`` decodes (an MPO is JPEG data; TensorFlow reads its first
image)."""

_EXIF_ORIENTATION = 0x0112
_SRGB = ImageCms.createProfile('sRGB')


class ImageError(ValueError):
  """An input that cannot become an example. ``str(error)`` is the reason, for people."""


def parse_background(text: str) -> Tuple[int, int, int]:
  """``'R,G,B'`` (0-255 each) or ``'#rrggbb'`` -> ``(R, G, B)``.

  Raises:
    ValueError: any other text, or a value outside 0-255.
  """
  text = text.strip()
  match = re.fullmatch(r'#?([0-9a-fA-F]{6})', text)
  if match and (text.startswith('#') or ',' not in text):
    return tuple(int(match[1][i:i + 2], 16) for i in (0, 2, 4))
  parts = [p.strip() for p in text.split(',')]
  if len(parts) == 3 and all(p.isdigit() for p in parts):
    values = tuple(int(p) for p in parts)
    if all(0 <= v <= 255 for v in values):
      return values
  raise ValueError(f"--background: expected 'R,G,B' (each 0-255) or '#rrggbb', got {text!r}")


def luma(rgb: Tuple[int, int, int]) -> int:
  """The gray level (0-255) of an RGB colour: ITU-R 601-2 luma, as Pillow's ``convert('L')``."""
  red, green, blue = rgb
  return int(round(0.299 * red + 0.587 * green + 0.114 * blue))


@dataclasses.dataclass(frozen=True)
class ImageSpec:
  """How every image is converted.

  Attributes:
    image_size: target size in pixels; its meaning depends on ``resize_mode``.
    resize_mode: ``shorter_side`` keeps the aspect ratio and scales the shorter side to
      ``image_size``; ``center_crop`` scales the shorter side to ``image_size`` and crops the
      central ``image_size`` x ``image_size`` square (the TF-slim / Keras ``TARGET_SIZE`` case);
      ``pad`` fits the whole image inside ``image_size`` x ``image_size`` keeping its aspect
      ratio and pads it to that square with ``background`` (the crop-or-pad of
      ``tf.image.resize_with_pad``); ``stretch`` scales to ``image_size`` x ``image_size``
      ignoring the aspect ratio; ``none`` keeps the source size. See ``resizing.resize_geometry``.
    image_format: the stored image: ``jpeg``; ``png`` (lossless); ``raw`` (uint8 pixels,
      row-major ``[height, width, channels]``, ``height * width * channels`` bytes);
      ``original`` (the source file's bytes unchanged, for JPEG/PNG/GIF/BMP sources only; no
      orientation, resizing, colour or channel conversion; shape read from the header).
    jpeg_quality: libjpeg quality, 1-100.
    chroma_subsampling: JPEG chroma subsampling, ``420`` (libjpeg's default, smaller files) or
      ``444`` (full-resolution colour: crisp colour edges, about 1.3x larger files).
    channels: 3 (RGB) or 1 (grayscale, ITU-R 601-2 luma).
    background: ``(R, G, B)`` 0-255 that transparent pixels are composited on, and the fill of
      ``pad``.
    max_pixels: an image whose header claims more pixels than this is refused before any pixel
      is decoded (decompression-bomb guard, default as Pillow's; at most twice that, Pillow's
      own hard limit).
    max_jpeg_scans: a JPEG of more scans than this is refused before any pixel is decoded
      (``jpeg_scans``): each scan is a pass over the whole image, so a file of thousands of
      tiny scans holds a decoder for minutes. Bounds a decode's work with ``max_pixels``
      (about scans x pixels); counted, not timed, so the same files are refused on any machine.
  """
  image_size: int = 256
  resize_mode: str = 'shorter_side'  # as --resize_mode
  image_format: str = 'jpeg'
  jpeg_quality: int = 90
  max_pixels: int = DEFAULT_MAX_PIXELS
  max_jpeg_scans: int = DEFAULT_MAX_JPEG_SCANS
  chroma_subsampling: str = '420'
  channels: int = 3
  background: Tuple[int, int, int] = WHITE

  def __post_init__(self):
    if self.resize_mode not in resizing.RESIZE_MODES:
      raise ValueError(f'resize_mode must be one of {resizing.RESIZE_MODES}, got {self.resize_mode!r}')
    if self.image_format not in IMAGE_FORMATS:
      raise ValueError(f'image_format must be one of {IMAGE_FORMATS}, got {self.image_format!r}')
    if self.resize_mode != 'none' and self.image_size < 1:
      raise ValueError(f'image_size must be a positive number of pixels, got {self.image_size}')
    if not 1 <= self.jpeg_quality <= 100:
      raise ValueError(f'jpeg_quality must be within 1-100, got {self.jpeg_quality}')
    if self.chroma_subsampling not in CHROMA_SUBSAMPLINGS:
      raise ValueError(f'chroma_subsampling must be one of {CHROMA_SUBSAMPLINGS}, '
                       f'got {self.chroma_subsampling!r}')
    if self.channels not in CHANNELS:
      raise ValueError(f'channels must be 3 or 1, got {self.channels}')
    if (len(self.background) != 3
        or not all(isinstance(v, int) and 0 <= v <= 255 for v in self.background)):
      raise ValueError(f'background must be 3 integers 0-255, got {self.background!r}')
    if not 1 <= self.max_pixels <= 2 * DEFAULT_MAX_PIXELS:
      raise ValueError(f'max_pixels must be within 1-{2 * DEFAULT_MAX_PIXELS:,} (Pillow refuses '
                       f'larger images itself), got {self.max_pixels:,}')
    if self.max_jpeg_scans < 1:
      raise ValueError(f'max_jpeg_scans must be at least 1, got {self.max_jpeg_scans}')


def convert(data: bytes, spec: ImageSpec) -> EncodedImage:
  """Decodes ``data``, applies its EXIF orientation, resizes it and re-encodes it.

  With ``spec.image_format='original'`` nothing is decoded: the bytes are kept and their shape
  read from the header (see ``original``).

  Args:
    data: the bytes of an image file (any format Pillow reads; JPEG takes the fast path).
    spec: the conversion settings.

  Returns:
    The image encoded as ``spec.image_format``, with its upright height and width.

  Raises:
    ImageError: with a reason naming what is wrong (empty file, not an image, HTML or SVG
      content, truncated or corrupt data, too many pixels, a JPEG of too many scans,
      unsupported pixel format, a format ``original`` cannot keep).
  """
  return convert_keeping_pixels(data, spec).encoded


class Converted(NamedTuple):
  """``convert_keeping_pixels``' result.

  encoded: what ``convert`` returns.
  pixels: the pixels encoded, ``uint8 [height, width, channels]``; None with
    ``--image_format=original`` (nothing is decoded).
  source_size: the source's upright ``(width, height)`` in pixels; None with ``original``.
  """
  encoded: EncodedImage
  pixels: Optional[np.ndarray]
  source_size: Optional[Tuple[int, int]]


def convert_keeping_pixels(data: bytes, spec: ImageSpec) -> Converted:
  """``convert``, also returning the pixels it encoded and the source's size, so that what
  measures the image (``transforms.image.image_measures``) needs no second decode. Raises as
  ``convert``."""
  if spec.image_format == 'original':
    return Converted(original(data, spec), None, None)
  pixels, source_size = _decode(data, spec)
  background = spec.background if spec.channels == 3 else (luma(spec.background),)
  pixels = resizing.resize(pixels, spec.image_size, spec.resize_mode, background=background,
                  source_size=source_size)
  return Converted(encode(pixels, spec), pixels, source_size)


def decode(data: bytes, spec: ImageSpec) -> np.ndarray:
  """Decodes an image file's bytes to upright pixels, ``uint8 [H, W, spec.channels]``.

  When ``spec`` allows it, JPEGs are scaled down in the DCT domain while decoding, to no less
  than what ``resize`` needs. Raises ``ImageError`` (see ``convert``).
  """
  return _decode(data, spec)[0]


def original(data: bytes, spec: ImageSpec) -> EncodedImage:
  """The source bytes unchanged, with the shape ``tf.io.decode_image`` will give them.

  The shape comes from the header alone (libjpeg-turbo's ``decode_jpeg_header`` for JPEG,
  Pillow's lazy open otherwise), the way TensorFlow's ImageNet converter reads only
  ``extract_jpeg_shape``: the fastest mode. Height and width are the stored ones (EXIF
  orientation is not applied); channels are those of the file (1 gray, 2 gray + alpha, 3 RGB,
  4 RGBA; a GIF decodes to 3).

  Cheap integrity checks stand in for a decode: a JPEG must end with its EOI marker (or decode
  at 1/8 scale), a PNG's chunks must pass their CRCs up to IEND (Pillow's ``verify``), a BMP
  must hold all its pixel rows. Corrupt entropy-coded data inside an intact JPEG is not found
  without decoding it: use ``jpeg`` or ``png`` to validate every pixel.

  Raises:
    ImageError: not an image, too many pixels or JPEG scans, truncated, or a format or pixel
      type that ``tf.io.decode_image`` cannot decode (TIFF, WebP, PPM, 8-bit or compressed BMP,
      ...): the reason says to use ``--image_format=jpeg`` or ``png``.
  """
  if jpeg_markers.plain_jpeg_frame(data):  # most photos: libjpeg-turbo's header parse alone, no Pillow
    return _original_jpeg(data, spec)
  image = _open(data)
  _check_pixels(image.size, spec)
  kind = ORIGINAL_FORMATS.get(image.format)
  if kind is None:
    raise ImageError(f'{image.format} is not kept as is: --image_format=original keeps only '
                     'JPEG, PNG, GIF and BMP (what every tf.io.decode_image decodes); use '
                     '--image_format=jpeg or png to re-encode it')
  if kind == 'jpeg':  # one with junk between markers, or an unusual frame type
    return _original_jpeg(data, spec)
  width, height = image.size
  if kind == 'png':
    channels = _PNG_CHANNELS.get(image.mode)
    if image.mode == 'P':
      channels = 4 if 'transparency' in image.info else 3
    if channels is None:
      raise ImageError(f'PNG of pixel mode {image.mode}: use --image_format=png to convert it')
    try:
      image.verify()  # every chunk's CRC and the chunk sequence to IEND, without decoding
    except Exception as error:  # decoder boundary: Pillow raises many types
      raise ImageError(f'corrupt or truncated PNG: {error}') from None
  elif kind == 'gif':
    channels = 3
  else:
    channels = _bmp_channels(data, width, height, image.info.get('compression', 0))
  return EncodedImage(data, kind, height, width, channels)


def _original_jpeg(data: bytes, spec: ImageSpec) -> EncodedImage:
  """A JPEG kept as is: its shape from libjpeg-turbo's header parse, its pixel count checked,
  then its end (see ``original``)."""
  height, width, channels = _jpeg_header(data)
  _check_pixels((width, height), spec)
  _check_jpeg_scans(data, spec)  # the reader decodes the kept bytes every epoch
  _check_jpeg_end(data)
  return EncodedImage(data, 'jpeg', height, width, channels)


def _jpeg_header(data: bytes) -> Tuple[int, int, int]:
  """(height, width, channels) of a JPEG as ``tf.io.decode_jpeg`` gives them, from its header
  (libjpeg-turbo's ``decode_jpeg_header``)."""
  try:
    height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data, strict=False)
  except Exception as error:  # decoder boundary: libjpeg-turbo's many errors
    raise ImageError(f'corrupt JPEG header (libjpeg-turbo: {error})') from None
  return height, width, 1 if colorspace == 'Gray' else 3  # CMYK/YCCK decode to RGB


def _check_jpeg_end(data: bytes) -> None:
  """Refuses a truncated JPEG. A file that does not end with the EOI marker is decoded once at
  1/8 scale to tell a truncated file (refused) from one with data after its end (kept:
  decoders stop at EOI). Call it after ``_check_pixels``."""
  if not data.rstrip(b'\0').endswith(b'\xff\xd9'):
    try:
      simplejpeg.decode_jpeg(data, colorspace='GRAY', min_factor=8, strict=True)
    except Exception as error:  # decoder boundary: any libjpeg-turbo error means unreadable
      raise ImageError(f'truncated or corrupt JPEG (no end-of-image marker): {error}') from None


def _bmp_channels(data: bytes, width: int, height: int, compression: int) -> int:
  """Channels ``tf.io.decode_bmp`` gives a BMP (3 or 4); ImageError for what it cannot read."""
  bits = int.from_bytes(data[28:30], 'little') if len(data) >= 30 else 0
  if compression != 0 or bits not in (24, 32):
    raise ImageError(f'BMP of {bits} bits per pixel, compression {compression}: '
                     'tf.io.decode_bmp reads uncompressed 24/32-bit BMPs only; use '
                     '--image_format=jpeg or png')
  pixel_offset = int.from_bytes(data[10:14], 'little')
  if len(data) < pixel_offset + (width * bits + 31) // 32 * 4 * height:
    raise ImageError('truncated BMP: the file is shorter than its pixel rows')
  return bits // 8


_PNG_CHANNELS = {'1': 1, 'L': 1, 'I': 1, 'I;16': 1, 'I;16B': 1, 'LA': 2, 'RGB': 3, 'RGBA': 4}


def encode(pixels: np.ndarray, spec: ImageSpec) -> EncodedImage:
  """Encodes ``uint8 [H, W, C]`` pixels (C = 3 RGB or 1 gray) as ``spec.image_format``.

  ``raw`` is the pixels' bytes, row-major ``[H, W, C]`` (``H * W * C`` bytes).
  """
  height, width, channels = pixels.shape
  pixels = np.ascontiguousarray(pixels)
  if spec.image_format == 'raw':
    data = pixels.tobytes()
  elif spec.image_format == 'jpeg':
    data = simplejpeg.encode_jpeg(
        pixels, quality=spec.jpeg_quality, colorspace='RGB' if channels == 3 else 'GRAY',
        colorsubsampling=spec.chroma_subsampling if channels == 3 else 'Gray')
  elif spec.image_format == 'png':
    ok, buffer = cv2.imencode(
        '.png', cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR) if channels == 3 else pixels)
    if not ok:
      raise ImageError('PNG encoding failed')
    data = buffer.tobytes()
  else:
    raise ValueError(f'encode() writes jpeg, png or raw, not {spec.image_format!r}')
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


def _check_pixels(size: Tuple[int, int], spec: ImageSpec) -> None:
  """Refuses a header that claims more than ``spec.max_pixels`` pixels, before any decoding."""
  width, height = size
  if width * height > spec.max_pixels:
    raise ImageError(
        f'image claims {width}x{height} = {width * height:,} pixels, more than '
        f'max_pixels={spec.max_pixels:,} (possible decompression bomb)')


def _check_jpeg_scans(data: bytes, spec: ImageSpec) -> None:
  """Refuses a JPEG of more than ``spec.max_jpeg_scans`` scans, before any decoding (nothing for
  other formats)."""
  found = jpeg_markers.jpeg_scans(data)
  if found.scans > spec.max_jpeg_scans:
    kind = 'progressive JPEG' if found.progressive else 'JPEG'
    raise ImageError(f'{kind} with {found.scans} scans (limit {spec.max_jpeg_scans}, '
                     '--max_jpeg_scans): each scan is a pass over the whole image')


def _describe_unknown(data: bytes) -> str:
  """Names what non-image bytes look like, for the failure report."""
  head = data[:512].lstrip().lower()
  if head.startswith((b'<!doctype html', b'<html')) or b'<html' in head:
    return 'HTML content (a web page saved with an image extension)'
  if b'<svg' in head or (head.startswith(b'<?xml') and b'svg' in data[:4096].lower()):
    return 'SVG vector graphics, not a raster image'
  if data[:3] == jpeg_markers.JPEG_SOI:
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


def upright_size(data: bytes) -> Tuple[int, int]:
  """``(width, height)`` of an image file after its EXIF orientation (5-8 swap the sides), as
  :func:`decode` turns it; read from the header (a PNG's EXIF needs a decode).

  Raises:
    PIL.UnidentifiedImageError: Pillow cannot read the header.
  """
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # a decompression-bomb warning: the decode refuses those
    image = Image.open(io.BytesIO(data))
  width, height = image.size
  return (height, width) if _exif_orientation(image) in (5, 6, 7, 8) else (width, height)


def _decode(data: bytes, spec: ImageSpec) -> Tuple[np.ndarray, Tuple[int, int]]:
  """(upright pixels ``uint8 [h, w, spec.channels]``, upright source ``(width, height)``).

  The pixels may be smaller than the source (DCT-domain downscaling of JPEGs); the source size
  is the full one, from the header, that ``resizing.resize_geometry`` works in.
  """
  _check_jpeg_scans(data, spec)
  shape = jpeg_markers.plain_upright_jpeg(data)
  if shape is not None and shape[0] * shape[1] <= spec.max_pixels:
    # what Pillow would open as an upright JPEG of mode RGB or L: its header parse (in Python,
    # about as costly as libjpeg-turbo's decode of a small photo) is skipped
    pixels = _decode_jpeg_fast(data, shape, spec)
    if pixels is not None:
      return pixels, (shape[1], shape[0])
  image = _open(data)
  _check_pixels(image.size, spec)
  width, height = image.size
  pixels = None
  if image.format == 'JPEG' and image.mode in ('RGB', 'L'):
    pixels = _decode_jpeg_fast(data, (height, width), spec)
  if pixels is None:
    # Pillow must decode before EXIF is read: for PNG, getexif() itself loads the pixels to find
    # an eXIf chunk after the image data, and would swallow a decode error.
    pixels = _decode_with_pillow(image, spec)
  orientation = _exif_orientation(image)
  if orientation >= 5:  # 5-8 transpose: the upright image is height x width
    width, height = height, width
  return _apply_orientation(pixels, orientation), (width, height)


def _decode_jpeg_fast(data: bytes, shape: Tuple[int, int], spec: ImageSpec) -> Optional[np.ndarray]:
  """libjpeg-turbo decode, DCT-scaled when the source is >= 2x the target; None on error.

  None sends the image to Pillow, which is more lenient (junk before markers, bad EXIF), so
  nothing Pillow can read is lost to libjpeg-turbo's strict mode.
  """
  min_size = _min_decoded_size(shape, spec)
  try:
    return simplejpeg.decode_jpeg(
        data, colorspace='RGB' if spec.channels == 3 else 'GRAY',
        min_height=min_size[0], min_width=min_size[1], strict=True)
  except Exception:  # decoder boundary: any libjpeg-turbo error sends the image to Pillow
    return None


def _min_decoded_size(shape: Tuple[int, int], spec: ImageSpec) -> Tuple[int, int]:
  """The smallest (height, width) decode that still gives ``resize`` all the pixels it needs.

  (0, 0) means full size: DCT scaling is used only when both sides are at least twice
  ``image_size`` (below that it costs more than it saves: docs/benchmarks.md).
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
  """Full decode with Pillow, first frame only, as ``uint8 [H, W, spec.channels]``."""
  try:
    image.seek(0)  # animated GIF/WebP, multi-page TIFF, MPO: the first frame
    if image.format in ('JPEG', 'MPO'):
      height, width = _min_decoded_size((image.height, image.width), spec)
      if height:
        image.draft(None, (width, height))  # DCT-domain downscaling, mode unchanged
    image.load()
  except Exception as error:  # decoder boundary: Pillow raises many types
    kind = 'truncated' if 'truncated' in str(error).lower() else 'corrupt'
    raise ImageError(f'{kind} image data ({image.format}): {error}') from None
  try:
    color, alpha = _color_and_alpha(image)
  except ImageError:
    raise
  except Exception as error:  # Pillow/NumPy raise many types for odd modes
    raise ImageError(f'unsupported pixel format {image.mode!r} ({image.format}): '
                     f'{type(error).__name__}: {error}') from None
  if alpha is not None:
    color = _composite(color, alpha, spec.background)
  return _to_channels(color, spec.channels)


def _color_and_alpha(image: Image.Image) -> Tuple[np.ndarray, Optional[np.ndarray]]:
  """(8-bit colour ``uint8 [H, W]`` gray or ``[H, W, 3]`` sRGB, alpha ``uint8 [H, W]`` or None).

  Alpha comes from an alpha band, or from a tRNS transparent colour (palette entries, or the
  one gray/RGB/16-bit value that the PNG's tRNS chunk names).
  """
  mode = image.mode
  transparency = image.info.get('transparency')
  if mode in ('RGBA', 'LA', 'PA', 'La', 'RGBa') or (mode == 'P' and transparency is not None):
    rgba = np.asarray(image.convert('RGBA'))
    return rgba[..., :3], rgba[..., 3]
  alpha = None
  if transparency is not None and mode in ('1', 'L', 'RGB', 'I', 'I;16', 'I;16B', 'I;16L'):
    samples = np.asarray(image)
    if mode == '1':
      samples = samples.astype(np.uint8) * 255
    if mode == 'RGB' and isinstance(transparency, tuple):
      opaque = np.any(samples != np.asarray(transparency, samples.dtype), axis=-1)
    elif isinstance(transparency, int):
      opaque = samples != transparency
    else:
      opaque = None  # a tRNS that does not fit the mode: ignored, as libpng does
    if opaque is not None:
      alpha = opaque.astype(np.uint8) * 255
  if mode in ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I'):
    # 16-bit (or 32-bit integer) samples: scale the full range down to 8 bits, never clip.
    samples = np.asarray(image, dtype=np.float64)
    top = 65535.0 if mode.startswith('I;16') or samples.max() <= 65535 else samples.max()
    return np.clip(np.rint(samples * (255.0 / top)), 0, 255).astype(np.uint8), alpha
  if mode == 'F':
    return np.clip(np.rint(np.asarray(image) * 255.0), 0, 255).astype(np.uint8), alpha
  if mode in ('CMYK', 'LAB'):
    return np.asarray(_icc_to_srgb(image)), alpha
  if mode in ('L', 'RGB'):
    return np.asarray(image), alpha
  if mode == '1':
    return np.asarray(image.convert('L')), alpha
  return np.asarray(image.convert('RGB')), alpha


def _icc_to_srgb(image: Image.Image) -> Image.Image:
  """A CMYK or LAB image as sRGB: through its embedded ICC profile with ImageCms (LittleCMS,
  perceptual intent) when it has a usable one, else Pillow's standard conversion."""
  profile = image.info.get('icc_profile')
  if profile:
    try:
      source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
      return ImageCms.profileToProfile(image, source, _SRGB, outputMode='RGB')
    except (ImageCms.PyCMSError, OSError, ValueError):
      pass  # a broken or mismatched profile: the standard conversion below
  if image.mode == 'LAB':
    return ImageCms.profileToProfile(image, ImageCms.createProfile('LAB'), _SRGB,
                                     outputMode='RGB')
  return image.convert('RGB')


def _composite(color: np.ndarray, alpha: np.ndarray, background: Tuple[int, int, int]
               ) -> np.ndarray:
  """``color`` (gray ``[H, W]`` or RGB ``[H, W, 3]``) over ``background``, as RGB uint8."""
  if color.ndim == 2:
    color = np.repeat(color[..., None], 3, axis=-1)
  weight = alpha[..., None].astype(np.float32) / 255.0
  out = color * weight + np.asarray(background, np.float32) * (1.0 - weight)
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _to_channels(color: np.ndarray, channels: int) -> np.ndarray:
  """Gray ``[H, W]`` or RGB ``[H, W, 3]`` uint8 -> ``[H, W, channels]`` (3 RGB or 1 luma)."""
  if color.ndim == 2:
    color = color[..., None]
  if color.shape[-1] == channels:
    return color
  if channels == 3:
    return np.repeat(color, 3, axis=-1)
  return cv2.cvtColor(np.ascontiguousarray(color), cv2.COLOR_RGB2GRAY)[..., None]


# Pillow must never silently return a partly decoded image: a truncated file is a failure.
ImageFile.LOAD_TRUNCATED_IMAGES = False
