"""Quality flags of every converted image, from its measures (``transforms.image.image_measures``):
placeholders, blank frames, thumbnails, images with no colour, odd shapes.

    ConvertedExample (with measures)
      -> flags (thresholds below)            ImageQuality, for the flagged images only
      -> OUT/quality.jsonl                   one line per flagged image, sorted by file
      -> counts per flag                     the manifest's ``quality`` section

The measures are taken on the stored pixels (after resizing), through a 64x64 thumbnail, so the
thresholds hold whatever ``--image_size``; the size flags read the source's size. The
thresholds were chosen on the shared real photos (1,698 photos of hymenoptera,
catdog_filenames and tiny_imagenet_val, and the 72 decodable files of messy/) so that the
"image not found" GIF of hymenoptera/train/ants/ is flagged and real photos rarely are; the
figures are in docs/images.md (``bench/near_duplicates.py`` prints them). The flags follow
cleanlab's CleanVision issue types (low information, dark, light, grayscale, odd size, odd
aspect ratio), with fixed thresholds instead of ones relative to the data set, so that a
worker decides alone.
"""

import collections
import json
from typing import List, NamedTuple, Optional

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows
from apache_beam.io.filesystems import FileSystems
from imagerecords import contract
from imagerecords import manifest_schema

from transforms.files.sorted_lines import WriteSortedLines
from transforms.image.image_measures import ImageMeasures

LOW_INFORMATION = 'low_information'
DARK = 'dark'
BRIGHT = 'bright'
GRAYSCALE = 'grayscale'
SMALL = 'small'
ODD_ASPECT = 'odd_aspect'
FLAGS = (LOW_INFORMATION, DARK, BRIGHT, GRAYSCALE, SMALL, ODD_ASPECT)

MIN_ENTROPY = 2.0
"""``low_information`` below this entropy of the luma histogram (bits, of 8): nearly uniform
frames, placeholders, a few flat colours. The hymenoptera placeholder has 1.18; real photos
5.2 or more at the 1st percentile, one white-background close-up 1.8."""

MAX_DARK = 20.0
"""``dark`` below this mean luma (0-255); the darkest real photo here has 21.6."""

MIN_BRIGHT = 235.0
"""``bright`` above this mean luma (0-255); the placeholder has 242, the brightest real
photos 240-242 (white backgrounds)."""

MAX_GRAY_COLOUR = 1.0
"""``grayscale`` (colour output only) below this RMS distance of the chroma from neutral gray
(``ImageMeasures.colour``): a picture with no colour, stored as colour. Gray JPEGs decode to
exactly 0, the placeholder GIF has 0.15; the least colourful colour photos here 1.2 (an ant on
gray concrete) and 2.0, most above 4."""

MIN_SIDE = 32
"""``small`` when the source's shorter side is below this many pixels (an icon or a
thumbnail, upscaled by the conversion)."""

MAX_ASPECT = 3.0
"""``odd_aspect`` when the source's longer side is more than this many times its shorter
side (banners, strips, panoramas, which a square crop mostly loses)."""


def flags_of(measures: ImageMeasures, channels: int = 3) -> List[str]:
  """The quality flags of one image's measures, in ``FLAGS`` order ([] when none)."""
  flags = []
  if measures.entropy < MIN_ENTROPY:
    flags.append(LOW_INFORMATION)
  if measures.mean < MAX_DARK:
    flags.append(DARK)
  if measures.mean > MIN_BRIGHT:
    flags.append(BRIGHT)
  if channels == 3 and measures.colour < MAX_GRAY_COLOUR:
    flags.append(GRAYSCALE)
  shorter = min(measures.source_width, measures.source_height)
  longer = max(measures.source_width, measures.source_height)
  if shorter < MIN_SIDE:
    flags.append(SMALL)
  if longer > MAX_ASPECT * shorter:
    flags.append(ODD_ASPECT)
  return flags


class ImageQuality(NamedTuple):
  """A flagged image: its file, split and class name, flags, measures."""
  file: str
  split: str
  label: Optional[str]
  flags: tuple
  measures: ImageMeasures

  def to_json(self) -> str:
    """One line of quality.jsonl::

        {"file": "train/ants/imageNotFound.gif", "split": "train", "label": "ants",
         "flags": ["low_information", "bright", "grayscale"], "source_width": 300,
         "source_height": 300, "mean": 242.17, "std": 22.67, "entropy": 1.18, "colour": 0.15}
    """
    entry = {'file': self.file, 'split': self.split, 'label': self.label,
             'flags': list(self.flags), **self.measures.to_dict()}
    return json.dumps(entry, ensure_ascii=False)  # "file" first: the lines sort by file


_COUNTS_TAG = 'counts'


class _FlagFn(beam.DoFn):
  """A list of ConvertedExample -> ImageQuality of each flagged image; on ``counts``, one
  Counter per bundle (measured, flagged, per flag), so that counting costs no element per
  image."""

  def __init__(self, channels: int):
    self._channels = channels

  def start_bundle(self):
    self._counts = collections.Counter()

  def process(self, batch):
    for example in batch:
      if example.measures is None:
        continue
      self._counts['num_measured'] += 1
      measures = ImageMeasures.of(example)
      flags = flags_of(measures, self._channels)
      if flags:
        self._counts['num_flagged'] += 1
        self._counts.update(flags)
        yield ImageQuality(example.relpath, example.split, example.label, tuple(flags),
                           measures)

  def finish_bundle(self):
    if self._counts:
      yield beam.pvalue.TaggedOutput(_COUNTS_TAG, GlobalWindows.windowed_value(self._counts))


def _add_counts(counts) -> collections.Counter:
  total = collections.Counter()
  for more in counts:
    total.update(more)
  return total


def quality_section(counts) -> manifest_schema.QualitySection:
  """The manifest's ``quality`` section::

      {"num_measured": 398, "num_flagged": 3, "file": "quality.jsonl",
       "flags": {"low_information": 2, "dark": 0, ...every flag}}

  ``num_measured``: the examples whose pixels were measured (not ``--image_format=original``,
  segmentation, or records reused from the previous night).
  """
  return manifest_schema.QualitySection(
      num_measured=int(counts.get('num_measured', 0)),
      num_flagged=int(counts.get('num_flagged', 0)), file=contract.QUALITY_FILE,
      flags={flag: int(counts.get(flag, 0)) for flag in FLAGS})


def summary_lines(section: Optional[manifest_schema.QualitySection]) -> List[str]:
  """The console summary's line for the ``quality`` section (none when nothing is flagged)."""
  if not section or not section.num_flagged:
    return []
  counts = ', '.join(f'{n} {flag}' for flag, n in section.flags.items() if n)
  return [f'  {section.num_flagged} of {section.num_measured} images flagged ({counts}): '
          f'see {section.file}']


class ReportQuality(beam.PTransform):
  """PCollection[List[ConvertedExample]] (``transforms.batches.ExampleBatches``) -> a
  one-element PCollection[manifest_schema.QualitySection], the manifest's ``quality`` section,
  emitted once ``OUT/quality.jsonl`` is written (flagged images only, one line each, sorted by
  file, by an external merge: ``transforms.files.sorted_lines``).

  ``channels``: of the stored images (``grayscale`` is raised for 3 only).
  """

  def __init__(self, output_dir: str, channels: int = 3):
    super().__init__()
    self._output_dir = output_dir
    self._channels = channels

  def expand(self, batches):
    path = FileSystems.join(self._output_dir, contract.QUALITY_FILE)
    channels = self._channels
    scanned = batches | 'flag images' >> beam.ParDo(_FlagFn(channels)).with_outputs(
        _COUNTS_TAG, main='flagged')
    written = (scanned.flagged
               | 'quality lines' >> beam.Map(ImageQuality.to_json)
               | 'write quality.jsonl' >> WriteSortedLines(path))
    return (scanned[_COUNTS_TAG]
            | 'add counts' >> beam.CombineGlobally(_add_counts)
            | 'manifest section' >> beam.Map(quality_section)
            | 'after the file' >> beam.transforms.util.WaitOn(written))
