"""Decode, orient, resize and re-encode one image: the per-element work of the job.

Pure functions on bytes and numpy arrays, with no Beam in them, so that the pipeline's DoFn and
the benchmarks call exactly the same code.

The fast path is libjpeg-turbo through simplejpeg for JPEG sources (decode, with DCT-domain
downscaling when the source is at least twice the target) plus OpenCV for resizing; every other
format, and any JPEG that libjpeg-turbo refuses in strict mode, goes through Pillow. Measured on
these machines (DESIGN.md): about 1.5 ms per ~500x375 photo with the fast path, 2.2-3 ms with
Pillow.

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
  * resizing follows ``resize_geometry``, with area interpolation when shrinking 2x or more,
    bilinear when shrinking less (what is left after a JPEG's DCT-domain downscale) and bicubic
    when enlarging (OpenCV's own code, never Intel IPP's: ``opencv_without_ipp``), so the same
    source gives the same pixels on any x86 CPU.

Pixel arrays are ``uint8``, shape ``[height, width, channels]``, channels last, RGB order.
"""

import dataclasses
import io
import re
import threading
import warnings
from typing import Iterator, NamedTuple, Optional, Tuple

import cv2
import numpy as np
import simplejpeg
from PIL import Image, ImageCms, ImageFile, UnidentifiedImageError

from transforms.elements import EncodedImage

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

RESIZE_MODES = ('shorter_side', 'center_crop', 'pad', 'stretch', 'none')
IMAGE_FORMATS = ('jpeg', 'png', 'original', 'raw')
CHROMA_SUBSAMPLINGS = ('420', '444')
CHANNELS = (3, 1)
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # 89,478,485: Pillow's decompression-bomb limit
DEFAULT_MAX_JPEG_SCANS = 100
"""``ImageSpec.max_jpeg_scans``' default. Of the 1,823 JPEGs in ``../shared/data`` (photos,
scans, wallpapers and libjpeg-turbo's and Pillow's test files), 1,816 have 1 scan and the
progressive ones 7 to 11 (libjpeg's standard progression has 10 for colour, 6 for gray): 100 is
nine times the most found. A JPEG of 2,000 repeated scans of one real photo (enlarged to
8000x6015) took Pillow 55 s to decode here, 27 ms a scan (docs/images.md)."""
WHITE = (255, 255, 255)

_JPEG_SOI = b'\xff\xd8\xff'

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
      ignoring the aspect ratio; ``none`` keeps the source size. See ``resize_geometry``.
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
    if self.resize_mode not in RESIZE_MODES:
      raise ValueError(f'resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}')
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
  pixels = resize(pixels, spec.image_size, spec.resize_mode, background=background,
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
  if _plain_jpeg_frame(data):  # most photos: libjpeg-turbo's header parse alone, no Pillow
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


_PLAIN_JPEG_FRAMES = (0xC0, 0xC1, 0xC2)  # SOF0-2: baseline, extended, progressive (Huffman)


_SOS, _EOI = 0xDA, 0xD9  # start of scan, end of image
_STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xD8)])  # TEM, RST0-7: no length field

# The next marker in entropy-coded data or junk: 0xFF then a byte that is not a stuffed zero, a
# restart marker (RST0-7, which only a scan's data holds) or a fill 0xFF (ITU-T T.81 B.1.1.2-5).
_NEXT_MARKER = re.compile(rb'\xff[^\x00\xd0-\xd7\xff]')


def _jpeg_segments(data: bytes, min_bytes: int,
                   resync: bool = False) -> Iterator[Tuple[Optional[int], int]]:
  """(marker, position) of each marker of a JPEG after SOI, walked by the segments' lengths
  (nothing is decoded; fill bytes skipped) while ``min_bytes`` (at least 4: the marker and its
  length) remain from the marker.

  Without ``resync`` (a header's walk): (None, position) at a byte that is not a marker, and no
  more; the caller stops at the marker it looks for, at the latest the first scan (0xDA), past
  which the walk would read entropy-coded data as markers.

  With ``resync`` (the whole file's walk, as libjpeg reads it): each scan's entropy-coded data,
  and bytes that are not a marker (which libjpeg skips with a warning, 'extraneous bytes before
  marker'), are skipped to the next marker; the walk ends at EOI (0xD9), or at the end of the
  data. Segment payloads (EXIF thumbnails, ICC profiles) are stepped over by their lengths, so
  markers inside them are not seen.
  """
  position, size = 2, len(data)
  while position + min_bytes <= size:
    if data[position] != 0xFF or (resync and data[position + 1] == 0):
      if not resync:
        yield None, position
        return
      found = _NEXT_MARKER.search(data, position)
      if found is None:
        return
      position = found.start()
      continue
    marker = data[position + 1]
    if marker == 0xFF:  # a fill byte
      position += 1
      continue
    yield marker, position
    if resync and marker == _EOI:
      return
    if resync and marker in _STANDALONE_MARKERS:
      position += 2
      continue
    position += 2 + (data[position + 2] << 8 | data[position + 3])  # big-endian length
    if resync and marker == _SOS:  # the scan's header, then its entropy-coded data
      found = _NEXT_MARKER.search(data, position)
      if found is None:
        return
      position = found.start()


class JpegScans(NamedTuple):
  """What ``jpeg_scans`` finds in a JPEG's first image.

  scans: its SOS markers, each a pass of the decoder over the image's coefficients.
  progressive: its frame is progressive (SOF2, SOF6, SOF10, SOF14).
  """
  scans: int
  progressive: bool


_PROGRESSIVE_FRAMES = (0xC2, 0xC6, 0xCA, 0xCE)


def jpeg_scans(data: bytes) -> JpegScans:
  """Counts the scans of a JPEG's first image (up to its EOI) from its markers alone, walked
  as libjpeg reads them (``_jpeg_segments`` with ``resync``): nothing is decoded, and the
  entropy-coded data is only searched for its next marker (0.05 ms for a 100 KB photo, 0.7 ms
  for an 8.9 MB one, here).

  Each scan costs the decoder a pass over the whole image, so the count bounds a decode's work
  (``ImageSpec.max_jpeg_scans``). Returns ``JpegScans(0, False)`` for data that is not a JPEG.
  """
  if data[:3] != _JPEG_SOI:
    return JpegScans(0, False)
  scans, progressive = 0, False
  for marker, _ in _jpeg_segments(data, 4, resync=True):
    if marker == _SOS:
      scans += 1
    elif marker in _PROGRESSIVE_FRAMES:
      progressive = True
  return JpegScans(scans, progressive)


def _plain_jpeg_frame(data: bytes) -> bool:
  """True for a JPEG whose markers up to the frame header are well formed and whose frame is
  8-bit baseline, extended or progressive, which every ``tf.io.decode_jpeg`` decodes (the
  markers are walked by their lengths; nothing is decoded). Anything else (12-bit, lossless
  or arithmetic-coded frames, junk bytes between markers) goes the way of other formats:
  Pillow's stricter parse decides."""
  if data[:3] != _JPEG_SOI:
    return False
  for marker, position in _jpeg_segments(data, 10):  # a frame header's fields: 10 bytes
    if marker is None:
      return False
    if marker in _PLAIN_JPEG_FRAMES:
      return data[position + 4] == 8  # the frame's sample precision, in bits
    if 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) or marker == 0xDA:
      return False  # another frame type, or the scan before any frame
  return False


def _plain_upright_jpeg(data: bytes) -> Optional[Tuple[int, int]]:
  """(height, width) of a JPEG that Pillow opens as format ``JPEG`` in mode ``RGB`` or ``L``
  with EXIF orientation 1, told from its markers alone (walked by their lengths up to the first
  scan; nothing is decoded): one 8-bit baseline, extended or progressive frame of 1 or 3
  components, and no APP1 segment (EXIF and XMP, where an orientation is written) nor APP2
  ``MPF`` segment (a multi-picture file, which Pillow opens as ``MPO``). None for anything
  else, which then takes the general path (Pillow's parse first)."""
  if data[:3] != _JPEG_SOI:
    return None
  shape = None
  for marker, position in _jpeg_segments(data, 4):
    if marker is None:
      return None
    if marker == 0xDA:  # the first scan: every header segment has been seen
      return shape
    if marker == 0xE1 or 0xD0 <= marker <= 0xD8 or marker == 0x01:
      return None  # EXIF/XMP, or a stand-alone marker before the scan: Pillow decides
    if marker == 0xE2 and data[position + 4:position + 8] == b'MPF\x00':
      return None
    if marker in _PLAIN_JPEG_FRAMES:
      if shape is not None or position + 10 > len(data):
        return None
      height = int.from_bytes(data[position + 5:position + 7], 'big')
      width = int.from_bytes(data[position + 7:position + 9], 'big')
      if data[position + 4] != 8 or data[position + 9] not in (1, 3) or not height or not width:
        return None
      shape = (height, width)
    elif 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
      return None  # another frame type
  return None


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


def resize_geometry(width: int, height: int, spec: 'ImageSpec') -> Geometry:
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
    spec: the conversion settings; only ``image_size`` and ``resize_mode`` are used.

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


def apply_geometry(pixels: np.ndarray, geometry: Geometry, nearest: bool = False,
                   background=(255, 255, 255),
                   scale: Tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
  """Crops, resizes and pads ``uint8 [H, W, C]`` (or ``[H, W]``) pixels by ``geometry``.

  Args:
    pixels: the image (or a mask of class indices) the geometry was computed for.
    geometry: from ``resize_geometry``.
    nearest: nearest-neighbour resizing (for masks of class indices); otherwise area
      interpolation when shrinking 2x or more, bilinear when shrinking less, bicubic when
      enlarging (OpenCV, without IPP: ``opencv_without_ipp``).
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
    if nearest:
      interpolation = cv2.INTER_NEAREST
    elif out_w * 2 <= pixels.shape[1] or out_h * 2 <= pixels.shape[0]:
      interpolation = cv2.INTER_AREA  # shrinking 2x or more: average every source pixel
    elif out_w * out_h < pixels.shape[0] * pixels.shape[1]:
      # Shrinking less than 2x (every JPEG after its DCT-domain downscale): bilinear's two taps
      # still reach every source pixel, at a fifth of INTER_AREA's cost at non-integer factors
      # (0.16 vs 0.75 ms for a 500x375 photo to 256 px; docs/benchmarks.md).
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
  found = jpeg_scans(data)
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
  if data[:3] == _JPEG_SOI:
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


def _decode(data: bytes, spec: ImageSpec) -> Tuple[np.ndarray, Tuple[int, int]]:
  """(upright pixels ``uint8 [h, w, spec.channels]``, upright source ``(width, height)``).

  The pixels may be smaller than the source (DCT-domain downscaling of JPEGs); the source size
  is the full one, from the header, that ``resize_geometry`` works in.
  """
  _check_jpeg_scans(data, spec)
  shape = _plain_upright_jpeg(data)
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
