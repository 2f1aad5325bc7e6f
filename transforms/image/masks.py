"""Segmentation masks, the pixel side: decode a mask of class indices and convert it exactly as
its image is converted (pairing images with masks: ``transforms.inputs.pairing``).

Masks stay class indices: a palette PNG (Pillow mode ``P``) is read as its indices, never as the
palette's colours; a grayscale mask (``L``) as its values; 1-bit as 0/1; 16- and 32-bit masks
as their values when they fit in 8 bits. 255 is the void / ignore class (VOC's convention) and
is kept. A mask must have its image's upright size (after the image's EXIF orientation; masks
themselves are never rotated). It gets the image's own geometry (``resizing.resize_geometry``: the
same crop box in source pixels, the same output size) with nearest-neighbour sampling aligned on
pixel centres (OpenCV ``INTER_NEAREST_EXACT``, the same as Pillow's ``NEAREST``), so it holds
only values of the source mask; padding (``--resize_mode=pad``) is filled with 255. It is stored
as an 8-bit grayscale PNG (mode ``L``), not a palette PNG: ``tf.io.decode_png`` expands a
palette to its colours, a grayscale PNG decodes to the indices themselves (DeepLab's
``remove_gt_colormap.py`` converts VOC masks the same way).
"""

import io
import warnings
from typing import List, Tuple

import cv2
import numpy as np
from imagerecords import contract
from PIL import Image, UnidentifiedImageError

from transforms.elements import EncodedImage, SourceFile
from transforms.files import reads
from transforms.image import codec, resizing

VOID = contract.MASK_VOID
"""The void / ignore class of VOC masks; kept as it is, and the fill of padding."""

MASK_FORMAT = 'png'
"""How a converted mask is stored: an 8-bit grayscale PNG of class indices."""


class MaskError(codec.ImageError):
  """The image is fine, its mask is not; ``str(error)`` is the reason, naming the mask."""


# --- masks: decode, resize, encode ---------------------------------------------------------------

def decode_mask(data: bytes, name: str = 'mask') -> np.ndarray:
  """A mask file's class indices, ``uint8 [H, W]``.

  Palette images give their indices (never the palette's colours), grayscale their values,
  1-bit images 0/1, 16/32-bit images their values when all fit in 0-255.

  Raises:
    MaskError: empty or undecodable data, colour (RGB) masks, values above 255; the reason
      starts with ``name``.
  """
  if not data:
    raise MaskError(f'{name}: empty file (0 bytes)')
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')
      image = Image.open(io.BytesIO(data))
      image.load()
  except UnidentifiedImageError:
    raise MaskError(f'{name}: not an image') from None
  except Exception as error:  # decoder boundary: Pillow raises many types for bad data
    raise MaskError(f'{name}: corrupt or truncated: {type(error).__name__}: {error}') from None
  mode = image.mode
  if mode in ('P', 'L'):
    return np.asarray(image, dtype=np.uint8)
  if mode == '1':
    return np.asarray(image, dtype=np.uint8)  # bool -> 0/1
  if mode in ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N'):
    values = np.asarray(image)
    if values.size and (values.min() < 0 or values.max() > 255):
      raise MaskError(f'{name}: class ids {values.min()}-{values.max()} do not fit in 0-255 '
                      '(8-bit masks)')
    return values.astype(np.uint8)
  raise MaskError(f'{name}: a {mode} image, not class indices (a palette or grayscale PNG '
                  'is expected; colour-coded masks must be mapped to indices first)')


def resize_mask(mask: np.ndarray, geometry: resizing.Geometry) -> np.ndarray:
  """``uint8 [H, W]`` class indices cropped, resized and padded as ``geometry`` says.

  Nearest-neighbour sampling aligned on pixel centres (``cv2.INTER_NEAREST_EXACT``), so every
  output value is a value of ``mask``; padding is ``VOID``. Returns ``uint8 [out_h, out_w]``.
  """
  left, top, right, bottom = geometry.crop_box
  mask = mask[top:bottom, left:right]
  out_w, out_h = geometry.size
  if mask.shape != (out_h, out_w):
    mask = cv2.resize(np.ascontiguousarray(mask), (out_w, out_h),
                      interpolation=cv2.INTER_NEAREST_EXACT)
  pad_left, pad_top, pad_right, pad_bottom = geometry.pad
  if any(geometry.pad):
    mask = np.pad(mask, ((pad_top, pad_bottom), (pad_left, pad_right)), constant_values=VOID)
  return mask


def encode_mask(mask: np.ndarray) -> bytes:
  """``uint8 [H, W]`` class indices -> 8-bit grayscale PNG bytes."""
  ok, buffer = cv2.imencode('.png', np.ascontiguousarray(mask, dtype=np.uint8))
  if not ok:
    raise MaskError('PNG encoding of the mask failed')
  return buffer.tobytes()


def read_mask_bytes(mask: SourceFile) -> bytes:
  """The mask file's bytes (any filesystem); MaskError naming it when it cannot be read."""
  try:  # transient errors are retried, then fail the run (transforms.files.reads.ReadFailed)
    return reads.read_bytes(mask.path)
  except reads.UnreadableFile as error:
    raise MaskError(f'mask {mask.relpath}: cannot read: {error}') from None


def convert_with_mask(data: bytes, mask: SourceFile, spec: codec.ImageSpec,
                      num_classes: int = 0) -> Tuple[EncodedImage, bytes, Tuple[int, ...]]:
  """Converts an image as ``codec.convert`` does, and its mask with the same geometry.

  Args:
    data: the image file's bytes.
    mask: the mask's SourceFile (read here).
    spec: the conversion settings of every image.
    num_classes: when positive, mask values must be below it (or be ``VOID``).

  With ``--image_format=original`` the image is stored as it is (neither oriented nor resized),
  and so is its mask, which must then have the stored size.

  Returns:
    (the encoded image, its mask as 8-bit grayscale PNG bytes of the same height and width,
    the class ids the stored mask holds, ascending, void (``VOID``) left out).

  Raises:
    MaskError: the mask cannot be read or decoded, is not class indices, differs in size from
      the image (upright), or holds a class id >= ``num_classes``.
    codec.ImageError: the image itself cannot be converted.
  """
  encoded = codec.convert(data, spec)
  if spec.image_format == 'original':  # the source bytes as they are: not oriented, not resized
    width, height = encoded.width, encoded.height
    geometry = resizing.Geometry((0, 0, width, height), (width, height))
  else:
    width, height = codec.upright_size(data)
    geometry = resizing.resize_geometry(width, height, spec)
  indices = decode_mask(read_mask_bytes(mask), f'mask {mask.relpath}')
  if indices.shape != (height, width):
    raw = Image.open(io.BytesIO(data)).size
    turned = (f' (EXIF-oriented from {raw[0]}x{raw[1]}; masks are not rotated)'
              if raw != (width, height) else '')
    raise MaskError(f'mask {mask.relpath} is {indices.shape[1]}x{indices.shape[0]}, its image '
                    f'is {width}x{height}{turned}')
  if num_classes:
    bad = np.unique(indices[(indices >= num_classes) & (indices != VOID)])
    if bad.size:
      raise MaskError(f'mask {mask.relpath} holds class ids {bad[:8].tolist()} beyond the '
                      f'{num_classes} class names (0-{num_classes - 1}, {VOID} = void)')
  resized = resize_mask(indices, geometry)
  if resized.shape != (encoded.height, encoded.width):
    raise MaskError(f'mask {mask.relpath}: resized to {resized.shape[1]}x{resized.shape[0]} '
                    f'but the image to {encoded.width}x{encoded.height} (a codec geometry bug)')
  class_ids = np.flatnonzero(np.bincount(resized.ravel(), minlength=256)[:VOID])
  return encoded, encode_mask(resized), tuple(class_ids.tolist())


def mask_values(encoded_mask: bytes) -> List[int]:
  """The distinct values of an encoded mask, sorted (for reports and tests)."""
  return np.unique(decode_mask(encoded_mask)).tolist()
