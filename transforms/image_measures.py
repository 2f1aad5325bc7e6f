"""What the job measures of every converted image, from the pixels the conversion already holds.

One 64x64 thumbnail of the stored (resized) pixels serves both measures, so neither decodes the
file again nor touches the full-size pixels twice::

    stored pixels uint8 [H, W, C]          (what codec.encode is about to encode)
      -> thumbnail uint8 [64, 64, C]       cv2.resize, bilinear
      -> luma uint8 [64, 64]               ITU-R BT.601 weights (cv2.COLOR_RGB2GRAY)
           -> 32x32 area mean -> pHash     OpenCV contrib's img_hash.PHash: 64 bits, the signs of
                                           the 8x8 lowest DCT frequencies against their mean
                                           (Zauner 2010, "Implementation and Benchmarking of
                                           Perceptual Image Hash Functions")
           -> mean, standard deviation, entropy of the 256-bin histogram
      -> colour spread                     mean over pixels of (max - min channel)

plus the source's upright width and height from its header. ``transforms.near_duplicates``
groups the hashes, ``transforms.quality`` turns the rest into flags. Measured cost: about 0.05 ms
per image, against about 2.5 ms for the conversion itself (docs/benchmarks.md).
"""

from typing import NamedTuple, Tuple

import cv2
import numpy as np

THUMBNAIL_SIZE = 64
"""Side of the square thumbnail every measure is taken on, in pixels."""

_HASH_INPUT = 32  # pHash's DCT input side (img_hash resizes to 32x32 itself; given it, it keeps it)
_PHASH = None  # one cv2.img_hash.PHash per process, made on first use (not picklable)


class ImageMeasures(NamedTuple):
  """Measures of one converted image (all of its stored pixels, after resizing).

  phash: the 64-bit perceptual hash, as an unsigned int (bit 63 = first bit of OpenCV's first
    byte); near-identical pictures differ in few bits (``hamming``).
  source_width, source_height: the source image's upright size in pixels (EXIF orientation
    applied), from its header.
  mean: mean luma, 0-255 (BT.601 weights).
  std: standard deviation of luma, 0-127.5.
  entropy: Shannon entropy of the luma histogram (256 bins), in bits, 0-8.
  colour: mean over pixels of max minus min of R, G, B, 0-255; 0 for one-channel images.
  """
  phash: int
  source_width: int
  source_height: int
  mean: float
  std: float
  entropy: float
  colour: float

  def to_index(self) -> dict:
    """The measures as images.jsonl keeps them (``phash`` as 16 hex digits, floats exact), so
    that a later night reusing the record reuses them too (``from_index``)."""
    return {**self._asdict(), 'phash': f'{self.phash:016x}'}

  @classmethod
  def from_index(cls, entry: dict) -> 'ImageMeasures':
    """The inverse of ``to_index``. Raises KeyError, ValueError on a malformed entry."""
    return cls(**{**entry, 'phash': int(entry['phash'], 16)})

  def to_dict(self) -> dict:
    """The measures as quality.jsonl lists them (rounded to 2 decimals; no hash)."""
    return {'source_width': self.source_width, 'source_height': self.source_height,
            'mean': round(self.mean, 2), 'std': round(self.std, 2),
            'entropy': round(self.entropy, 2), 'colour': round(self.colour, 2)}


def phash(luma: np.ndarray) -> int:
  """OpenCV contrib's pHash of a ``uint8 [h, w]`` luma image, as a 64-bit unsigned int.

  ``luma`` should be small (the 32x32 area mean of the thumbnail here): img_hash shrinks its
  input to 32x32 bilinearly, which aliases a large image.
  """
  global _PHASH
  if _PHASH is None:
    _PHASH = cv2.img_hash.PHash_create()
  return int.from_bytes(_PHASH.compute(np.ascontiguousarray(luma)).tobytes(), 'big')


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
  thumbnail = cv2.resize(np.ascontiguousarray(pixels), (THUMBNAIL_SIZE, THUMBNAIL_SIZE),
                         interpolation=cv2.INTER_LINEAR)
  if thumbnail.ndim == 3 and thumbnail.shape[2] == 3:
    luma = cv2.cvtColor(thumbnail, cv2.COLOR_RGB2GRAY)
    spread = thumbnail.max(axis=2) - thumbnail.min(axis=2)  # uint8: max >= min, no wrap
    colour = float(spread.mean())
  else:
    luma = thumbnail.reshape(THUMBNAIL_SIZE, THUMBNAIL_SIZE)
    colour = 0.0
  small = cv2.resize(luma, (_HASH_INPUT, _HASH_INPUT), interpolation=cv2.INTER_AREA)
  mean, std = cv2.meanStdDev(luma)
  counts = np.bincount(luma.reshape(-1), minlength=256)
  p = counts[counts > 0] / luma.size
  entropy = float(-(p * np.log2(p)).sum())
  return ImageMeasures(phash(small), int(source_size[0]), int(source_size[1]),
                       float(mean[0, 0]), float(std[0, 0]), entropy, colour)

