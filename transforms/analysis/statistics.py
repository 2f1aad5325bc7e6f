"""Count examples per split and class, and fingerprint each split's content, in one combine;
the training split's pixel statistics.

A split's fingerprint is the sum, modulo 2**256, of the SHA-256 digests (as integers) of its
serialized records, written as 64 hex digits. It does not depend on the order of the records or
on how they are sharded, so two runs on different runners that wrote the same set of records have
the same fingerprint, and any changed, missing or extra record changes it.

With ``--stats`` (the default) the training split's exact per-channel pixel mean and standard
deviation are added up here too, from integer sums, with Beam combiners alone
(:class:`TrainingStatistics`); ``--stats=tft`` computes the same numbers inside a
tensorflow-transform analysis that also writes ``transform_fn/``
(``transforms.analysis.statistics_tft``).
"""

import collections
import fractions
import math
from typing import Dict, List, Optional, Tuple

import apache_beam as beam
from imagerecords import manifest_schema

from transforms.image.pixel_sums import PixelSums

_MOD = 2**256


def fingerprint_hex(total: int) -> str:
  """The 64-hex-digit form of a fingerprint sum."""
  return f'{total % _MOD:064x}'


class _SplitCounts:
  """One split's running counts: examples, examples per class label, examples per mask class
  id, and the fingerprint's sum."""
  __slots__ = ('examples', 'labels', 'mask_classes', 'total')

  def __init__(self):
    self.examples = 0
    self.labels = collections.Counter()
    self.mask_classes = collections.Counter()
    self.total = 0

  def add(self, example) -> None:
    self.examples += 1
    if example.label is not None:
      self.labels[example.label] += 1
    if example.mask_classes:
      self.mask_classes.update(example.mask_classes)
    self.total = (self.total + int.from_bytes(example.record_sha256, 'big')) % _MOD

  def merge(self, other: '_SplitCounts') -> None:
    self.examples += other.examples
    self.labels.update(other.labels)
    self.mask_classes.update(other.mask_classes)
    self.total = (self.total + other.total) % _MOD


class _SplitStatisticsFn(beam.CombineFn):
  """Lists of ConvertedExample -> the element :class:`SplitStatistics` describes."""

  def create_accumulator(self):
    return {}

  def add_input(self, accumulator, examples):
    for example in examples:
      counts = accumulator.get(example.split)
      if counts is None:
        counts = accumulator[example.split] = _SplitCounts()
      counts.add(example)
    return accumulator

  def merge_accumulators(self, accumulators):
    merged = {}
    for accumulator in accumulators:
      for split, counts in accumulator.items():
        if split in merged:
          merged[split].merge(counts)
        else:
          merged[split] = counts
    return merged

  def extract_output(self, accumulator) -> Dict[str, dict]:
    return {
        split: {
            'num_examples': counts.examples,
            'class_counts': {str(label): n for label, n in sorted(
                counts.labels.items(), key=lambda kv: str(kv[0]))},
            'mask_class_counts': dict(sorted(counts.mask_classes.items())),
            'fingerprint': fingerprint_hex(counts.total),
        } for split, counts in sorted(accumulator.items())
    }


class SplitStatistics(beam.PTransform):
  """PCollection[List[ConvertedExample]] (``transforms.batches.ExampleBatches``) -> a
  one-element PCollection of per-split statistics.

  The element: ``{split: {'num_examples': int, 'class_counts': {class name: int},
  'mask_class_counts': {mask class id: examples whose mask holds it}, 'fingerprint': str}}``;
  ``{}`` when there are no examples.
  """

  def expand(self, batches):
    return batches | 'count and fingerprint' >> beam.CombineGlobally(_SplitStatisticsFn())


# --- the training split's pixel statistics (--stats): exact, Beam combiners only ----------------

def training_split(splits: List[str]) -> Optional[str]:
  """The split the statistics describe: ``train`` if present, else the first split by name.

  None when there is no split at all.
  """
  if 'train' in splits:
    return 'train'
  return sorted(splits)[0] if splits else None


class AddPixelSums(beam.CombineFn):
  """PixelSums of many images -> their PixelSums (per-channel totals and pixel count; exact
  Python ints). Nothing added: zeros of ``channels`` channels."""

  def __init__(self, channels: int):
    self._channels = channels

  def create_accumulator(self):
    return PixelSums((0,) * self._channels, (0,) * self._channels, 0)

  def add_input(self, accumulator, sums):
    return PixelSums(tuple(a + b for a, b in zip(accumulator.sums, sums.sums)),
                     tuple(a + b for a, b in zip(accumulator.squares, sums.squares)),
                     accumulator.num_pixels + sums.num_pixels)

  def merge_accumulators(self, accumulators):
    total = self.create_accumulator()
    for accumulator in accumulators:
      total = self.add_input(total, accumulator)
    return total

  def extract_output(self, accumulator):
    return accumulator


def mean_and_std(sums: PixelSums) -> Tuple[List[float], List[float]]:
  """Per-channel population mean and standard deviation (divide by N) of the pixels that
  ``sums`` adds up, 0-255 scale: ``mean = S / N``, ``std = sqrt(Q / N - mean^2)``, the variance
  computed exactly as ``(Q N - S^2) / N^2`` in integers before the one rounding to float.

  Raises:
    ZeroDivisionError: ``sums`` covers no pixel.
  """
  n = sums.num_pixels
  mean = [float(fractions.Fraction(s, n)) for s in sums.sums]
  std = [math.sqrt(fractions.Fraction(q * n - s * s, n * n))
         for s, q in zip(sums.sums, sums.squares)]
  return mean, std


def statistics_section(split: str, num_examples: int,
                       sums: PixelSums) -> manifest_schema.StatisticsSection:
  """The manifest's ``statistics``, without the class frequencies that
  ``transforms.outputs.metadata.WriteMetadata`` adds: ``pixel_mean``/``pixel_std`` are 3 (or 1)
  floats rounded to 6 decimals, None for an empty split; ``transform_fn`` None (none written)."""
  mean, std = mean_and_std(sums) if sums.num_pixels else (None, None)
  return manifest_schema.StatisticsSection(
      split=split, num_examples=num_examples, num_pixels=sums.num_pixels,
      pixel_mean=mean and [round(v, 6) for v in mean],
      pixel_std=std and [round(v, 6) for v in std], transform_fn=None)


class TrainingStatistics(beam.PTransform):
  """PCollection[List[ConvertedExample]] (``transforms.batches.ExampleBatches``) -> a
  one-element PCollection: the manifest's ``statistics`` of the training split ``split`` (see
  :func:`statistics_section`), exact.

  The examples of ``split`` carry their stored image's
  :class:`~transforms.image.pixel_sums.PixelSums` (computed by the conversion step from the bytes it
  had just encoded, as the reader decodes them); this adds them up with a lifted combiner (a few
  integers per bundle travel), so no worker imports TensorFlow. ``--stats=tft`` adds the
  tensorflow-transform analysis and its ``transform_fn/`` on top of the same sums
  (``transforms.analysis.statistics_tft``).

  Args:
    split: the training split's name (:func:`training_split`).
    channels: the run's ``--channels`` (3: RGB, 1: grayscale).
  """

  def __init__(self, split: str, channels: int = 3):
    super().__init__()
    self._split = split
    self._channels = channels

  def expand(self, batches):
    split, adder = self._split, AddPixelSums(self._channels)

    def count_and_sums(batch):
      sums = [e.pixel_sums for e in batch if e.split == split]
      return len(sums), adder.merge_accumulators(sums)

    return (
        batches
        | 'count and pixel sums' >> beam.Map(count_and_sums)
        | 'add up' >> beam.CombineGlobally(beam.combiners.TupleCombineFn(
            sum, AddPixelSums(self._channels)))
        | 'mean and std' >> beam.MapTuple(
            lambda count, sums: statistics_section(split, count, sums)))
