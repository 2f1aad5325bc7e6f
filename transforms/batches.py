"""Batches of elements: a bundle's batched by their GroupByKey key before the shuffle, and the
job's examples in lists for the per-image analysis steps.

Beam's cost per element (each step's invocation, the coder, and on the local runner one entry
of the in-memory GroupByKey held by the launcher) is then paid once per key and bundle, not once
per image. Each batch travels as one ``bytes`` value, its entries (plain tuples of ``str``,
``bytes``, ``int``, ``None``) encoded by Beam's ``FastPrimitivesCoder``: the local runner's
GroupByKey (``GroupingBuffer``) keeps every value it receives decoded, as Python objects, in
the launcher until the next stage reads it, and one ``bytes`` per batch costs there about the
bytes themselves, where a list of tuples of strings costs about three times its encoded size
(an object header per tuple and string). :func:`entries_in` decodes them on the other side.
"""

import collections
from typing import Iterable, Iterator, Sequence

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

_CODER = beam.coders.FastPrimitivesCoder()


class BatchPerKeyFn(beam.DoFn):
  """element -> (key, bytes of [entry, ...]): a bundle's entries batched by their GroupByKey
  key, so that a bundle sends one element per key (and per ``max_held`` entries) instead of one
  per image; after the GroupByKey, :func:`entries_in` of a key's values gives its entries back.

  Args:
    entries_of: element -> iterable of (key, entry); a module-level function or a picklable
      callable (it is pickled to the workers).
    max_held: entries a worker holds before it sends them on (bounded memory in a large
      bundle; the local runner's bundles are a worker's whole share of the input).
  """

  def __init__(self, entries_of, max_held: int = 20_000):
    self._entries_of = entries_of
    self._max_held = max_held

  def start_bundle(self):
    self._batches = collections.defaultdict(list)
    self._held = 0

  def process(self, element):
    for key, entry in self._entries_of(element):
      self._batches[key].append(entry)
      self._held += 1
    if self._held >= self._max_held:
      yield from self._flush()

  def _flush(self):
    batches, self._batches, self._held = self._batches, collections.defaultdict(list), 0
    return ((key, encode_entries(entries)) for key, entries in batches.items())

  def finish_bundle(self):
    for element in self._flush():
      yield GlobalWindows.windowed_value(element)


def entries_in(batches: Iterable[bytes]) -> Iterator:
  """The entries of one key's batches (the values a GroupByKey gathered from
  :class:`BatchPerKeyFn`), batch by batch, each in the order it was added."""
  for batch in batches:
    yield from _CODER.decode(batch)


def encode_entries(entries: list) -> bytes:
  """One batch of entries as :class:`BatchPerKeyFn` sends it (for a step that regroups the
  entries of :func:`entries_in` under other keys)."""
  return _CODER.encode(entries)



EXAMPLES_PER_BATCH = 256
"""Examples per list that :class:`ExampleBatches` hands to the analysis steps (about one
shuffle bucket)."""


class ExampleBatches(beam.PTransform):
  """A tuple of PCollection[ConvertedExample], one per source (the night's converted examples),
  and the PCollection[List[ConvertedExample]] of sources that come in lists already
  (``batched``: a night's reused records, ``transforms.outputs.incremental``, listed per
  previous shard without their record bytes) -> PCollection[List[ConvertedExample]] of them all,
  in lists of ``EXAMPLES_PER_BATCH`` (fewer at a bundle's or a previous shard's end): the input
  of the per-image analysis steps (duplicates, counts, quality flags, the index, the
  statistics).

  The steps after it then pay Beam's cost per element (an invocation of each fused step, its
  counters) once per list: measured against each step batching on its own, which costs one
  invocation per image and step (docs/benchmarks.md, "The graph as drawn").

  One source and nothing ``batched`` is batched as it is. Otherwise the examples lose their
  record bytes (``serialized``), which no analysis step reads, and their lists are flattened
  with ``batched``: a Flatten makes the local runner hold its whole output in memory between
  two stages, so the records themselves never pass one; the writer
  (``transforms.outputs.write.WriteSplits``) takes each source apart.

  Args:
    batched: PCollections of List[ConvertedExample] without record bytes, flattened in as
      they are.
  """

  def __init__(self, batched: Sequence = ()):
    super().__init__()
    self._batched = tuple(batched)

  def expand(self, sources):
    if len(sources) == 1 and not self._batched:
      return sources[0] | 'batch' >> beam.BatchElements(
          min_batch_size=EXAMPLES_PER_BATCH, max_batch_size=EXAMPLES_PER_BATCH)
    examples = [source | f'source {number}: drop the record bytes' >> beam.Map(
        lambda example: example._replace(serialized=b''))
                for number, source in enumerate(sources)]
    if len(examples) > 1:
      examples = [examples | 'all sources' >> beam.Flatten()]
    batches = examples[0] | 'batch' >> beam.BatchElements(
        min_batch_size=EXAMPLES_PER_BATCH, max_batch_size=EXAMPLES_PER_BATCH)
    if not self._batched:
      return batches
    return (batches, *self._batched) | 'with the batched sources' >> beam.Flatten()
