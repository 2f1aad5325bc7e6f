"""The run's image index (``images.jsonl``) and its diff against the previous run's index.

    PCollection[ConvertedExample]
      -> images.jsonl: one line per example, sorted by file:
         {"file": "ants/1.jpg", "label": "ants", "sha256": "<source bytes>",
          "record_sha256": "<the record's bytes>", "split": "train",
          "version": "<size>:<mtime>", "pixel_sums": [...] (--stats' training split)}
      -> with a previous run's images.jsonl, keyed by file, co-grouped with this run's (and
         the files only one run has, keyed by their SHA-256, paired again: renamed photos):
         a one-element PCollection of the diff the manifest carries
         (a night that reuses records: the reuse step, which pairs the previous index with the
         night's files anyway, hands on the previous entries of the files it does not reuse,
         and only those meet the night's converted examples here; each reused image counts
         as unchanged, per list: transforms.outputs.incremental)

A nightly job over a growing folder wants to know what changed since last night: images
added, removed, or changed in content (same file name, other SHA-256), per class; and whether
anything moved between splits or classes, which a stable job never does on its own. The diff
is computed in the pipeline (a CoGroupByKey of two small records per image), so it scales
with the data like the rest of the job.
"""

import collections
import dataclasses
import json
from typing import Dict, List, Optional, Tuple

import apache_beam as beam
from apache_beam.io.textio import ReadFromText
from imagerecords import contract
from imagerecords import manifest_schema

from transforms.files.folders import escape_pattern
from transforms.files.sorted_lines import WriteSortedLines
from transforms.image.image_measures import ImageMeasures

# The diff's per-image verdicts: each is the name of its count in the manifest's diff
# (manifest_schema.DiffSection, which fails to build with any other) and of its entries in by_class.
ADDED, REMOVED, CHANGED, UNCHANGED = 'added', 'removed', 'changed', 'unchanged'
MOVED_SPLIT, RELABELED, RENAMED = 'moved_split', 'relabeled', 'renamed'
VERDICTS = (ADDED, REMOVED, CHANGED, UNCHANGED, MOVED_SPLIT, RELABELED, RENAMED)
_UNPAIRED = 'unpaired'  # the tag of the files only one run has, paired again by their digest


def index_line(example) -> str:
  """The images.jsonl line of a ConvertedExample (keys sorted, UTF-8 kept).

  ``record_sha256`` (hex SHA-256 of the serialized record, ``ConvertedExample.record_sha256``)
  is what the next night checks a record it copies against (``transforms.outputs.incremental``).
  ``version`` (the source's size and time as listed, ``elements.source_version``),
  ``pixel_sums`` (``--stats``' training split: ``[[sum per channel], [sum of squares per
  channel], pixels]``) and ``measures`` (``--image_checks``: the perceptual hash and quality
  measures, ``ImageMeasures.to_index``) are there when known: the next night reuses the record
  of a file whose version is unchanged, with these, instead of converting it again
  (``transforms.outputs.incremental``).
  """
  entry = {'file': example.relpath, 'label': example.label, 'sha256': example.source_sha256,
           'record_sha256': example.record_sha256.hex(), 'split': example.split}
  if example.version is not None:
    entry['version'] = example.version
  if example.pixel_sums is not None:
    entry['pixel_sums'] = [list(example.pixel_sums[0]), list(example.pixel_sums[1]),
                           example.pixel_sums[2]]
  if example.measures is not None:  # transforms.image.image_measures: reused with the record
    entry['measures'] = ImageMeasures.of(example).to_index()
  if example.mask_classes is not None:  # a segmentation record: its mask's class ids
    entry['mask_classes'] = list(example.mask_classes)
  return json.dumps(entry, ensure_ascii=False, sort_keys=True)


class WriteImageIndex(beam.PTransform):
  """PCollection[List[ConvertedExample]] (``transforms.batches.ExampleBatches``) -> writes
  ``<output_dir>/images.jsonl``; returns the path.

  One file (~250 bytes per image), lines sorted by file name so two runs' indexes compare
  with ``diff``; sorted by an external merge (``transforms.files.sorted_lines``), so no worker holds
  every line.
  """

  def __init__(self, output_dir: str):
    super().__init__()
    self._output_dir = output_dir

  def expand(self, batches):
    path = beam.io.filesystems.FileSystems.join(self._output_dir, contract.IMAGES_INDEX_FILE)
    return (
        batches
        | 'index lines' >> beam.FlatMap(lambda batch: [index_line(e) for e in batch])
        | 'write images.jsonl' >> WriteSortedLines(path))


def keyed_by_file(line: str):
  """An images.jsonl line -> (its file, the whole entry as a dict)."""
  entry = json.loads(line)
  return entry['file'], entry


def _verdicts(element):
  """(file, {'now': [entry], 'before': [entry]}) -> (verdict, class name) pairs; a file only
  one run has is also sent, keyed by its digest, to the ``_UNPAIRED`` output."""
  _, grouped = element
  now, before = list(grouped['now']), list(grouped['before'])
  if now and not before:
    yield ADDED, now[0]['label']
    if now[0].get('sha256'):
      yield beam.pvalue.TaggedOutput(_UNPAIRED, (now[0]['sha256'], ('now', now[0])))
    return
  if before and not now:
    yield REMOVED, before[0]['label']
    if before[0].get('sha256'):
      yield beam.pvalue.TaggedOutput(_UNPAIRED, (before[0]['sha256'], ('before', before[0])))
    return
  now, before = now[0], before[0]
  yield (UNCHANGED if now['sha256'] == before['sha256'] else CHANGED), now['label']
  yield from _moves(before, now)


def _moves(before: dict, now: dict):
  """The verdicts of one image in both runs beyond its content: (MOVED_SPLIT, class) when its
  split differs, (RELABELED, class) when its class does."""
  if now['split'] != before['split']:
    yield MOVED_SPLIT, now['label']
  if now['label'] != before['label']:
    yield RELABELED, now['label']


def pair_renamed(removed: List[dict], added: List[dict]) -> List[Tuple[dict, dict]]:
  """Pairs the entries of files of the previous run whose path is gone (``removed``) with
  those of new paths (``added``), all of the same bytes (one SHA-256): the same photo renamed
  or moved to another folder (a class folder renamed). Returns (before, now) pairs, at most
  one per entry: first those of the same split and class, then of the same split, then of the
  same class, then the rest, each in file order, so that the fewest pairs count as split moves
  (a photo held twice is not taken for a move)."""
  removed = sorted(removed, key=lambda entry: entry['file'])
  added = sorted(added, key=lambda entry: entry['file'])
  pairs = []
  for same in (lambda a, b: a['split'] == b['split'] and a['label'] == b['label'],
               lambda a, b: a['split'] == b['split'],
               lambda a, b: a['label'] == b['label'],
               lambda a, b: True):
    for before in list(removed):
      now = next((entry for entry in added if same(before, entry)), None)
      if now is not None:
        pairs.append((before, now))
        removed.remove(before)
        added.remove(now)
  return pairs


def _renamed_verdicts(element):
  """(sha256, [('before' or 'now', entry)]) of the files only one run has -> (RENAMED,
  class) for each renamed photo (:func:`pair_renamed`), with its split move and relabelling."""
  _, tagged = element
  removed = [entry for side, entry in tagged if side == 'before']
  added = [entry for side, entry in tagged if side == 'now']
  for before, now in pair_renamed(removed, added):
    yield RENAMED, now['label']
    yield from _moves(before, now)


class _DiffFn(beam.CombineFn):
  """(verdict, class name) -> the manifest's diff (``manifest_schema.DiffSection``) less its
  ``previous_run``: a count per verdict, and per class the counts of its verdicts but
  ``unchanged``."""

  def create_accumulator(self):
    return collections.Counter()

  def add_input(self, accumulator, verdict_and_class):
    accumulator[verdict_and_class] += 1
    return accumulator

  def merge_accumulators(self, accumulators):
    merged = collections.Counter()
    for accumulator in accumulators:
      merged.update(accumulator)
    return merged

  def extract_output(self, accumulator) -> manifest_schema.DiffSection:
    totals = collections.Counter()
    by_class: Dict[str, Dict[str, int]] = collections.defaultdict(dict)
    for (verdict, label), count in accumulator.items():
      totals[verdict] += count
      if label is not None and verdict != UNCHANGED:
        by_class[str(label)][verdict] = count
    return manifest_schema.DiffSection(
        **{verdict: totals.get(verdict, 0) for verdict in VERDICTS},
        by_class={name: by_class[name] for name in sorted(by_class)})


class DiffAgainstPrevious(beam.PTransform):
  """PCollection[List[ConvertedExample]] (``transforms.batches.ExampleBatches``) -> a
  one-element PCollection[manifest_schema.DiffSection]: the diff with the previous run
  (``previous_run``).

  Its counts: ``added``, ``removed``, ``changed`` and ``unchanged`` count files by path:
  ``changed``, those whose name stayed and whose bytes (SHA-256) did not.
  ``renamed`` counts the photos among the removed and added files that are one file moved (the
  same SHA-256 under another path: a renamed file or class folder; :func:`pair_renamed`).
  ``moved_split`` and ``relabeled`` count the images whose split or class differs from the
  previous run's: a file of the same path, or a renamed photo (a class folder renamed changes
  the hash split of its photos and their class).

  On a night that reuses records (``transforms.outputs.incremental``), the reuse step has read
  the previous index and paired it with the night's files already: a reused record's file has
  the same path, label, split and source SHA-256 as before, so it is ``unchanged``, with no
  other verdict, and is counted so in bulk, per list (``unchanged_batches``); the pairing by
  file then sees only the night's converted examples (the input) against the previous entries
  of the files not reused (``previous_entries``). The counts are those of pairing every
  example with the whole previous index.

  Args:
    previous_index: the previous run's ``images.jsonl``, read when ``previous_entries`` is None.
    previous_run: the previous run's folder, named in the diff.
    previous_entries: PCollection[(file, previous index entry)] to pair the input with, in place
      of the whole previous index; None: read ``previous_index``.
    unchanged_batches: PCollection[List[ConvertedExample]] of examples that count as unchanged
      without being paired (a night's reused records); None: none.
  """

  def __init__(self, previous_index: str, previous_run: Optional[str] = None,
               previous_entries=None, unchanged_batches=None):
    super().__init__()
    self._previous_index = previous_index
    self._previous_run = previous_run
    self._previous_entries = previous_entries
    self._unchanged_batches = unchanged_batches

  def expand(self, batches):
    now = batches | 'key this run by file' >> beam.FlatMap(
        lambda batch: [(example.relpath, json.loads(index_line(example))) for example in batch])
    before = self._previous_entries
    if before is None:
      before = (
          batches.pipeline
          | 'read the previous index' >> ReadFromText(escape_pattern(self._previous_index))
          | 'key the previous run by file' >> beam.Map(keyed_by_file))
    previous_run = self._previous_run
    compared = (
        {'now': now, 'before': before}
        | 'pair by file' >> beam.CoGroupByKey()
        | 'compare' >> beam.FlatMap(_verdicts).with_outputs(_UNPAIRED, main='verdicts'))
    renamed = (
        compared[_UNPAIRED]
        | 'pair the rest by digest' >> beam.GroupByKey()
        | 'compare renamed files' >> beam.FlatMap(_renamed_verdicts))
    diff = (
        (compared.verdicts, renamed)
        | 'all verdicts' >> beam.Flatten()
        | 'count' >> beam.CombineGlobally(_DiffFn()))
    if self._unchanged_batches is not None:
      unchanged = (self._unchanged_batches
                   | 'count unchanged' >> beam.Map(len)
                   | 'all unchanged' >> beam.CombineGlobally(sum))
      diff = diff | 'and the unchanged' >> beam.Map(
          lambda diff, more: dataclasses.replace(diff, unchanged=diff.unchanged + more),
          beam.pvalue.AsSingleton(unchanged))
    return diff | 'name the previous run' >> beam.Map(
        lambda diff: dataclasses.replace(diff, previous_run=previous_run))
