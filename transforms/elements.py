"""The element types that flow between the job's PTransforms.

Small, picklable NamedTuples: paths and names travel through the graph, never image bytes
(those are read inside the DoFn that converts them). ``EncodedImage`` is the one type with
bytes: what the codec (``transforms.image.codec``) makes of an image and the record
(``transforms.image.example``) stores, passed between them inside the conversion step.
"""

import dataclasses
import json
from typing import NamedTuple, Optional, Tuple

# The stages an input can fail at, in pipeline order; each is a value of Failure.stage.
# 'list', 'missing' and 'duplicate' are reported but are not failed image inputs (NOT_INPUTS).
STAGE_LIST = 'list'  # met by the listing but not listed: not an image file extension, a link
# that leaves the root, dangles or loops, not a regular file, too large, a folder that cannot be
# listed (transforms.inputs.listing)
STAGE_LABEL = 'label'  # no label could be assigned
STAGE_MISSING = 'missing'  # named in the label file, but no such image (not an input)
STAGE_SPLIT = 'split'  # no split could be assigned
STAGE_DUPLICATE = 'duplicate'  # a duplicate of a file that is written (--dedup=keep_first[_near])
STAGE_READ = 'read'  # the file could not be read
STAGE_DECODE = 'decode'  # the bytes are not a decodable image
STAGE_MASK = 'mask'  # segmentation: the image's mask is missing, unreadable or of another size
STAGES = (STAGE_LIST, STAGE_MISSING, STAGE_LABEL, STAGE_SPLIT, STAGE_DUPLICATE, STAGE_READ,
          STAGE_DECODE, STAGE_MASK)

NOT_INPUTS = (STAGE_LIST, STAGE_MISSING, STAGE_DUPLICATE)
"""Stages whose reports are not image inputs: not counted against --max_failure_fraction."""

METRICS_NAMESPACE = 'imagerecords'
"""The namespace of the job's Beam counters (the manifest's ``metrics`` lists them)."""

FAILURES_TAG = 'failures'
"""The tag of every transform's dead-letter output (a PCollection of Failure)."""


class SourceFile(NamedTuple):
  """A listed input file.

  path: the full path or URL, as FileSystems takes it.
  relpath: the path relative to the input root, '/'-separated (stored as image/filename).
  split: the split a label file's ``split`` column names for it; None otherwise.
  size_in_bytes, mtime: the file's size and last modification time (epoch seconds) as the
    listing found them (Beam's ``FileMetadata``); None where the filesystem does not say.
  """
  path: str
  relpath: str
  split: Optional[str] = None
  size_in_bytes: Optional[int] = None
  mtime: Optional[float] = None


def source_version(source: SourceFile, mask: Optional[SourceFile] = None) -> Optional[str]:
  """What identifies this version of an input without reading it: ``'SIZE:MTIME'`` of the
  file (and ``'+SIZE:MTIME'`` of its mask), as the listing saw them; None when the filesystem
  gives no size or time. Two nights whose versions of a file are equal saw the same bytes,
  unless the file was rewritten with the same size and its time set back (see
  ``transforms.outputs.incremental``)."""
  versions = []
  for file in (source, mask):
    if file is None:
      continue
    if file.size_in_bytes is None or not file.mtime:
      return None
    versions.append(f'{file.size_in_bytes}:{file.mtime!r}')
  return '+'.join(versions)


class LabeledImage(NamedTuple):
  """An image file with its class name (None for unlabeled data) and its split.

  source_sha256: hex SHA-256 of the file's bytes when a step before the conversion hashed it
  (``--dedup=keep_first``), so the conversion does not hash them again; None otherwise.
  mask: segmentation (``--masks``): the SourceFile of the image's mask; None otherwise.
  version: ``source_version`` of the file (and mask) as listed; None when unknown.
  """
  path: str
  relpath: str
  label: Optional[str]
  split: str
  source_sha256: Optional[str] = None
  mask: Optional[SourceFile] = None
  version: Optional[str] = None


class ConvertedExample(NamedTuple):
  """One serialized tf.train.Example and what the statistics need to know about it.

  record_sha256: raw 32-byte SHA-256 digest of ``serialized`` (for the split's fingerprint).
  source_sha256: hex SHA-256 digest of the source file's bytes.
  pixel_sums: for the training split's examples when ``--stats`` is on, the stored image's
    ``transforms.image.pixel_sums.PixelSums``; else None.
  version: the source's ``source_version`` (kept in images.jsonl, so that the next night can
    tell an unchanged file without reading it); None when unknown.
  measures: the fields of the stored pixels' ``transforms.image.image_measures.ImageMeasures``
    (perceptual hash, quality measures) as a plain tuple (``ImageMeasures.of`` reads it): Beam's
    coder encodes a nested plain tuple several times faster than a nested NamedTuple (which it
    pickles), at every stage boundary the example crosses. None when no pixels were measured
    (``--image_format=original``, a segmentation example, ``--image_checks=false``).
  mask_classes: a segmentation example's class ids that its stored mask holds, ascending,
    void (255) left out (``transforms.image.masks.convert_with_mask``); None for a
    classification example.
  """
  split: str
  label: Optional[str]
  relpath: str
  serialized: bytes
  record_sha256: bytes
  source_sha256: str
  pixel_sums: Optional[tuple] = None
  version: Optional[str] = None
  measures: Optional[tuple] = None
  mask_classes: Optional[Tuple[int, ...]] = None


class Failure(NamedTuple):
  """An input that did not become an example: where it stopped and why, in words."""
  path: str
  relpath: str
  stage: str
  reason: str

  def to_json(self) -> str:
    """One line of failures.jsonl."""
    return json.dumps(self._asdict(), ensure_ascii=False, sort_keys=True)


@dataclasses.dataclass(frozen=True)
class EncodedImage:
  """An encoded image and the shape of its pixels (height, width in pixels; channels).

  ``format`` is the ``image/format`` value: ``jpeg``, ``png``, ``raw``, or with
  ``--image_format=original`` also ``gif`` or ``bmp``. Channels are 1 or 3, or for ``original``
  what ``tf.io.decode_image`` gives for the file (1-4).
  """
  data: bytes
  format: str
  height: int
  width: int
  channels: int
