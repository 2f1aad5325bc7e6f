"""What the job measures of every converted image, from the pixels the conversion already holds.

One 64x64 thumbnail of the stored (resized) pixels serves both measures, so neither decodes the
file again nor touches the full-size pixels twice::

    stored pixels uint8 [H, W, C]          (what codec.encode is about to encode)
      -> thumbnail uint8 [64, 64, C]       cv2.resize, bilinear
      -> luma uint8 [64, 64]               Y of ITU-R BT.601 YCbCr (cv2.COLOR_RGB2YCrCb)
           -> 32x32 area mean -> pHash     OpenCV contrib's img_hash.PHash: 64 bits, the signs of
                                           the 8x8 lowest DCT frequencies against their mean
                                           (Zauner 2010, "Implementation and Benchmarking of
                                           Perceptual Image Hash Functions")
           -> mean, standard deviation, entropy of the 256-bin histogram
      -> chroma (Cb, Cr) [64, 64, 2]       colour: RMS distance from neutral gray
      -> 8x8 luma + 4x4 Cr + 4x4 Cb        ``pixels``: 96 bytes of area means, on which the
                                           near duplicates the hash finds are confirmed

plus the source's upright width and height from its header. ``transforms.analysis.near_duplicates``
groups the hashes and confirms them on ``pixels``, ``transforms.analysis.quality`` turns the rest
into flags. Their cost is a few percent of a conversion (docs/benchmarks.md, "Near
duplicates and quality flags: the cost").
"""

import base64
import math
import threading
from typing import NamedTuple, Optional, Tuple

import cv2
import numpy as np

from transforms.image.resizing import opencv_without_ipp

THUMBNAIL_SIZE = 64
"""Side of the square thumbnail every measure is taken on, in pixels."""

_PIXELS = THUMBNAIL_SIZE * THUMBNAIL_SIZE
_THUMBNAIL_SHAPE = (THUMBNAIL_SIZE, THUMBNAIL_SIZE)
_LOG2_PIXELS = np.log2(_PIXELS)
_C_LOG2_C = np.concatenate([[0.0], np.arange(1, _PIXELS + 1) * np.log2(np.arange(1, _PIXELS + 1))])
_HASH_INPUT = 32  # pHash's DCT input side (img_hash resizes to 32x32 itself; given it, it keeps it)
# One cv2.img_hash.PHash per thread, made on first use (not picklable). Not one per process: the
# object keeps its working images between calls, and an SDK worker runs bundles in several
# threads (on Flink, the two subtasks of the conversion in one worker), and one shared between
# threads crashes the worker (SIGSEGV in cv2).
_PHASH = threading.local()

PIXELS_LUMA_SIDE = 8
PIXELS_CHROMA_SIDE = 4
"""``ImageMeasures.pixels``: the area means of the 64x64 thumbnail's luma on a
``PIXELS_LUMA_SIDE`` square grid, then of its Cr and of its Cb on a ``PIXELS_CHROMA_SIDE`` one,
``uint8``, rows first: 64 + 16 + 16 = 96 bytes. The smallest of the sizes compared by
``bench/near_duplicates.py --parts=measures`` that confirmed the known copies as well as
the larger ones (docs/benchmarks.md)."""
_NEUTRAL_CHROMA = bytes([128]) * (2 * PIXELS_CHROMA_SIDE * PIXELS_CHROMA_SIDE)


class ImageMeasures(NamedTuple):
  """Measures of one converted image (all of its stored pixels, after resizing).

  phash: the 64-bit perceptual hash, as an unsigned int (bit 63 = first bit of OpenCV's first
    byte); near-identical pictures differ in few bits (``hamming``).
  source_width, source_height: the source image's upright size in pixels (EXIF orientation
    applied), from its header.
  The four measures below are rounded to 2 decimals.
  mean: mean luma, 0-255 (BT.601 weights).
  std: standard deviation of luma, 0-127.5.
  entropy: Shannon entropy of the luma histogram (256 bins), in bits, 0-8.
  colour: root mean square distance of the chroma (Cb, Cr of BT.601 YCbCr, 0-255) from
    neutral gray (128, 128), 0-181; 0 for a gray picture and for one-channel images.
  pixels: the picture in 96 bytes (``PIXELS_LUMA_SIDE``: 8x8 luma, 4x4 Cr, 4x4 Cb; chroma 128
    for one-channel images), on which ``transforms.analysis.near_duplicates`` confirms the
    pairs the hash finds; None in measures kept by a run that did not take it.
  """
  phash: int
  source_width: int
  source_height: int
  mean: float
  std: float
  entropy: float
  colour: float
  pixels: Optional[bytes] = None

  @classmethod
  def of(cls, example) -> 'ImageMeasures':
    """The measures a ConvertedExample carries (as a plain tuple: see ``elements``); the
    caller checks ``example.measures`` is not None."""
    return cls(*example.measures)

  def to_index(self) -> dict:
    """The measures as images.jsonl keeps them (``phash`` as 16 hex digits, ``pixels`` in
    base64, floats exact), so that a later night reusing the record reuses them too
    (``from_index``)."""
    entry = {**self._asdict(), 'phash': f'{self.phash:016x}'}
    if self.pixels is None:
      del entry['pixels']
    else:
      entry['pixels'] = base64.b64encode(self.pixels).decode('ascii')
    return entry

  @classmethod
  def from_index(cls, entry: dict) -> 'ImageMeasures':
    """The inverse of ``to_index`` (``pixels`` None when the entry has none: an index written
    before they were measured). Raises KeyError, ValueError on a malformed entry."""
    pixels = entry.get('pixels')
    return cls(**{**entry, 'phash': int(entry['phash'], 16),
                  'pixels': None if pixels is None else base64.b64decode(pixels)})

  def to_dict(self) -> dict:
    """The measures as quality.jsonl lists them (no hash)."""
    return {'source_width': self.source_width, 'source_height': self.source_height,
            'mean': self.mean, 'std': self.std, 'entropy': self.entropy, 'colour': self.colour}


def phash(luma: np.ndarray) -> int:
  """OpenCV contrib's pHash of a ``uint8 [h, w]`` luma image, as a 64-bit unsigned int.

  ``luma`` should be small (the 32x32 area mean of the thumbnail here): img_hash shrinks its
  input to 32x32 bilinearly, which aliases a large image.
  """
  hasher = getattr(_PHASH, 'hasher', None)
  if hasher is None:
    hasher = _PHASH.hasher = cv2.img_hash.PHash_create()
  return int.from_bytes(hasher.compute(np.ascontiguousarray(luma)).tobytes(), 'big')


def hamming(a: int, b: int) -> int:
  """The number of bits in which two hashes differ, 0-64."""
  return (a ^ b).bit_count()


def measure(pixels: np.ndarray, source_size: Tuple[int, int]) -> ImageMeasures:
  """The measures of one image.

  Args:
    pixels: the stored image, ``uint8 [H, W, C]`` with C = 1 (gray) or 3 (RGB), H, W >= 1.
    source_size: ``(width, height)`` of the source, upright, in pixels.

  Returns:
    ImageMeasures (see there).
  """
  opencv_without_ipp()  # the same measures on any CPU (see there)
  pixels = np.ascontiguousarray(pixels)
  if pixels.shape[:2] == _THUMBNAIL_SHAPE:  # cv2.resize to the same size is a copy of it
    thumbnail = pixels
  else:
    thumbnail = cv2.resize(pixels, (THUMBNAIL_SIZE, THUMBNAIL_SIZE),
                           interpolation=cv2.INTER_LINEAR)
  if thumbnail.ndim == 3 and thumbnail.shape[2] == 3:
    # Y of BT.601 YCbCr is the luma (as cv2.COLOR_RGB2GRAY); one meanStdDev gives the luma's
    # mean and deviation and the chroma's, whose distance from neutral (128, 128) is the colour
    ycc = cv2.cvtColor(thumbnail, cv2.COLOR_RGB2YCrCb)
    luma = cv2.extractChannel(ycc, 0)
    means, stds = cv2.meanStdDev(ycc)
    mean, mean_cr, mean_cb = means.ravel().tolist()
    std, std_cr, std_cb = stds.ravel().tolist()
    colour = math.sqrt(std_cr ** 2 + std_cb ** 2 + (mean_cr - 128.0) ** 2
                       + (mean_cb - 128.0) ** 2)
    chroma = cv2.resize(ycc, (PIXELS_CHROMA_SIDE, PIXELS_CHROMA_SIDE),
                        interpolation=cv2.INTER_AREA)
    chroma = chroma[..., 1].tobytes() + chroma[..., 2].tobytes()  # Cr, then Cb
  else:
    luma = thumbnail.reshape(THUMBNAIL_SIZE, THUMBNAIL_SIZE)
    means, stds = cv2.meanStdDev(luma)
    mean, std = means.item(0), stds.item(0)
    colour, chroma = 0.0, _NEUTRAL_CHROMA
  small = cv2.resize(luma, (_HASH_INPUT, _HASH_INPUT), interpolation=cv2.INTER_AREA)
  picture = cv2.resize(small, (PIXELS_LUMA_SIDE, PIXELS_LUMA_SIDE),
                       interpolation=cv2.INTER_AREA).tobytes() + chroma
  # Shannon entropy of the histogram: log2(n) - sum(c log2 c) / n, c the bin counts
  counts = np.bincount(luma.reshape(-1), minlength=256)
  entropy = float(_LOG2_PIXELS - _C_LOG2_C[counts].sum() / _PIXELS)
  # rounded to 2 decimals, as quality.jsonl shows them and images.jsonl keeps them exactly
  return ImageMeasures(phash(small), int(source_size[0]), int(source_size[1]),
                       round(mean, 2), round(std, 2), round(entropy, 2), round(colour, 2),
                       picture)
