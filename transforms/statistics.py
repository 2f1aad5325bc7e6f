"""Count examples per split and class, and fingerprint each split's content, in one combine.

A split's fingerprint is the sum, modulo 2**256, of the SHA-256 digests (as integers) of its
serialized records, written as 64 hex digits. It does not depend on the order of the records or
on how they are sharded, so two runs on different runners that wrote the same set of records have
the same fingerprint, and any changed, missing or extra record changes it.
"""

import collections
from typing import Dict

import apache_beam as beam

_MOD = 2**256


def fingerprint_hex(total: int) -> str:
  """The 64-hex-digit form of a fingerprint sum."""
  return f'{total % _MOD:064x}'


class _SplitStatisticsFn(beam.CombineFn):
  """ConvertedExample -> {split: {'num_examples', 'class_counts', 'fingerprint'}}."""

  def create_accumulator(self):
    return {}

  def add_input(self, accumulator, example):
    counts, total = accumulator.get(example.split, (collections.Counter(), 0))
    counts[example.label] += 1
    accumulator[example.split] = (
        counts, (total + int.from_bytes(example.record_sha256, 'big')) % _MOD)
    return accumulator

  def merge_accumulators(self, accumulators):
    merged = {}
    for accumulator in accumulators:
      for split, (counts, total) in accumulator.items():
        merged_counts, merged_total = merged.get(split, (collections.Counter(), 0))
        merged_counts.update(counts)
        merged[split] = (merged_counts, (merged_total + total) % _MOD)
    return merged

  def extract_output(self, accumulator) -> Dict[str, dict]:
    return {
        split: {
            'num_examples': sum(counts.values()),
            'class_counts': {str(label): n for label, n in sorted(
                counts.items(), key=lambda kv: str(kv[0])) if label is not None},
            'fingerprint': fingerprint_hex(total),
        } for split, (counts, total) in sorted(accumulator.items())
    }


class SplitStatistics(beam.PTransform):
  """PCollection[ConvertedExample] -> a one-element PCollection of per-split statistics.

  The element: ``{split: {'num_examples': int, 'class_counts': {class name: int},
  'fingerprint': str}}``; ``{}`` when there are no examples.
  """

  def expand(self, examples):
    return examples | 'count and fingerprint' >> beam.CombineGlobally(_SplitStatisticsFn())
