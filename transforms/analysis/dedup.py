"""Find byte-identical source files, report every group of duplicates (exact, and the near ones
of ``transforms.analysis.near_duplicates``) with the train/test leakage and label conflicts they
cause, and, with ``--dedup=keep_first`` (or ``keep_first_near``), write one file of each exact
group.

Two files are exact duplicates when the SHA-256 of their bytes is the same (the digest every
record carries as ``image/key/sha256``). Duplicates under different names are common in scraped
data (``catdog_filenames`` holds 20 such pairs); when the copies of one image land in two
splits, the evaluation set holds training images (leakage), which inflates every metric
measured on it; when they carry two class names (the same photo under rose/ and tulip/), the
labels conflict.

    --dedup=keep_all (default): every file is written; the groups come from the digests the
      conversion computes anyway, so finding them costs no extra read:

        ConvertedExample -> (sha256 prefix, [(sha256, file, split, label)] per bundle)
          -> GroupByKey -> by whole sha256 -> DuplicateGroup (2+ files)

    --dedup=keep_first (and keep_first_near, for the exact copies): the files are hashed BEFORE
      the conversion (a streaming read through FileSystems, no decoding), grouped by digest, and
      only the first file of each group by sorted relative path is converted; the others become
      failures at stage ``duplicate`` naming the file kept (reported, not counted against
      --max_failure_fraction):

        LabeledImage -> + source_sha256 -> (sha256, LabeledImage) -> GroupByKey
          -> the first LabeledImage (carrying its digest, so the conversion does not hash again)
          -> Failure(stage='duplicate') for the others
          -> DuplicateGroup

    every group, exact and near -> duplicates.jsonl (one line each, sorted)
                                -> the manifest's ``duplicates``: counts per kind, 5 examples

Only small tuples of paths and names reach a GroupByKey (the local runner holds its contents in
memory); image bytes never do. With ``keep_first`` a leaking group is written in one split only
(the split of the first file by sorted path, which need not be the split a person would pick),
so the written records no longer leak, but the source data does and the group stays flagged:
the dropped copies' splits lost an image, and a hash split would have put it elsewhere had the
names differed.
"""

import collections
import dataclasses
import json
from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from imagerecords import contract
from imagerecords import manifest_schema

from transforms.files import reads
from transforms.batches import BatchPerKeyFn, entries_in
from transforms.files.sorted_lines import WriteSortedLines
from transforms.elements import (FAILURES_TAG, METRICS_NAMESPACE, STAGE_DUPLICATE, Failure,
                                 LabeledImage)

KEEP_ALL = 'keep_all'
KEEP_FIRST = 'keep_first'
KEEP_FIRST_NEAR = 'keep_first_near'
DEDUP_MODES = (KEEP_ALL, KEEP_FIRST, KEEP_FIRST_NEAR)
DEFAULT_DEDUP = KEEP_ALL
"""Writing every file is the default: the record count then equals the number of decodable
inputs (no silent change), and the report costs no extra read of the data."""

GROUPS_TAG = 'groups'
"""The tag of ``DropDuplicates``' output of DuplicateGroup."""


EXACT = 'exact'
NEAR = 'near'
KINDS = (EXACT, NEAR)


class DuplicateFile(NamedTuple):
  """One file of a duplicate group: its relative path, split and class name (None: unlabeled)."""
  file: str
  split: str
  label: Optional[str]


class DuplicateGroup(NamedTuple):
  """Files that hold the same picture.

  kind: ``exact`` (byte-identical: same SHA-256) or ``near`` (perceptual hashes within
    ``--near_duplicate_distance`` bits and pixels alike, linked through one another:
    ``transforms.analysis.near_duplicates``; at least two different contents).
  files: the DuplicateFiles, sorted by relative path.
  sha256: hex SHA-256 of the content (``exact``); None for ``near``.
  kept: with ``--dedup=keep_first`` (exact) or ``keep_first_near`` the one file written
    (``files[0].file``); None when all are.
  similarity: ``near``: the lowest similarity of the pixels (0-1,
    ``near_duplicates.similarity``) of the pairs that joined the group; None for ``exact``.
  hash_distance: ``near``: the largest Hamming distance (bits of 64) of their hashes; None
    for ``exact``.
  """
  kind: str
  files: Tuple[DuplicateFile, ...]
  sha256: Optional[str] = None
  kept: Optional[str] = None
  similarity: Optional[float] = None
  hash_distance: Optional[int] = None

  @property
  def leaks(self) -> bool:
    """True when the copies lie in two or more splits (train/test leakage)."""
    return len({f.split for f in self.files}) > 1

  @property
  def label_conflict(self) -> bool:
    """True when the copies carry two or more class names (the same picture, two labels)."""
    return len({f.label for f in self.files if f.label is not None}) > 1

  def entry(self) -> manifest_schema.DuplicateGroupEntry:
    """The group as the contract writes it, in duplicates.jsonl and the manifest's examples::

        {"kind": "exact", "files": [{"file": "train/a.jpg", "split": "train", "label": "cat"},
         ...], "leaks_across_splits": false, "label_conflict": false, "sha256": "..."}

    (``sha256`` for exact groups only, ``similarity`` and ``hash_distance`` for near ones;
    ``kept`` when one file was written).
    """
    return manifest_schema.DuplicateGroupEntry(
        kind=self.kind,
        files=[manifest_schema.DuplicateFileEntry(file=f.file, split=f.split, label=f.label)
               for f in self.files],
        leaks_across_splits=self.leaks, label_conflict=self.label_conflict, sha256=self.sha256,
        kept=self.kept, similarity=self.similarity, hash_distance=self.hash_distance)

  def to_dict(self) -> dict:
    """:meth:`entry` as JSON values."""
    return self.entry().to_json()

  def to_json(self) -> str:
    """``to_dict`` as one JSON line (keys sorted, so that lines sort by their files)."""
    return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)


def group_of(kind: str, files: Iterable[DuplicateFile], sha256: Optional[str] = None,
             kept: Optional[str] = None, similarity: Optional[float] = None,
             hash_distance: Optional[int] = None) -> DuplicateGroup:
  """A DuplicateGroup with its files sorted by path."""
  return DuplicateGroup(kind, tuple(sorted(files)), sha256, kept, similarity, hash_distance)


_NUM_EXAMPLES = 5


def _priority(group: DuplicateGroup):
  """Sort key of the groups worth showing first: conflicts, then leaks, then by file."""
  return (not group.label_conflict, not group.leaks, group.kind, group.files[0].file)


class _SectionFn(beam.CombineFn):
  """DuplicateGroup -> the manifest's ``duplicates`` section (see ``duplicates_section``);
  holds counts and at most ``_NUM_EXAMPLES`` groups, never one entry per file."""

  def create_accumulator(self):
    return collections.Counter(), []

  def add_input(self, accumulator, group):
    counts, examples = accumulator
    kind = group.kind
    counts[f'{kind}.num_groups'] += 1
    counts[f'{kind}.num_files'] += len(group.files)
    if group.kept is not None:
      counts[f'{kind}.num_dropped'] += len(group.files) - 1
    counts[f'{kind}.num_leaking_groups'] += group.leaks
    counts[f'{kind}.num_label_conflicts'] += group.label_conflict
    examples.append(group)
    examples.sort(key=_priority)
    del examples[_NUM_EXAMPLES:]
    return accumulator

  def merge_accumulators(self, accumulators):
    counts, examples = collections.Counter(), []
    for more_counts, more_examples in accumulators:
      counts.update(more_counts)
      examples.extend(more_examples)
    examples.sort(key=_priority)
    return counts, examples[:_NUM_EXAMPLES]

  def extract_output(self, accumulator):
    counts, examples = accumulator
    return duplicates_section(counts, examples)


_COUNTS = tuple(field.name for field in dataclasses.fields(manifest_schema.DuplicateCounts))
"""The counts of each kind (``num_groups``, ...), named by the contract."""


def duplicates_section(counts, examples: Sequence[DuplicateGroup] = ()
                       ) -> manifest_schema.DuplicatesSection:
  """The manifest's ``duplicates`` section: counts per kind, and a few groups to show::

      {"exact": {"num_groups": 20, "num_files": 40, "num_dropped": 0,
                 "num_leaking_groups": 0, "num_label_conflicts": 0},
       "near": {...the same counts...},
       "file": "duplicates.jsonl",
       "examples": [<up to 5 groups as in duplicates.jsonl: label conflicts, then leaks first>]}

  ``counts``: {'KIND.COUNT': n} (absent: 0). ``num_dropped``: files not written
  (``--dedup=keep_first``, ``keep_first_near``). Every group is in duplicates.jsonl; the
  manifest stays small whatever the number of groups.
  """
  exact, near = (manifest_schema.DuplicateCounts(**{
      name: int(counts.get(f'{kind}.{name}', 0)) for name in _COUNTS}) for kind in KINDS)
  return manifest_schema.DuplicatesSection(
      exact=exact, near=near, file=contract.DUPLICATES_FILE,
      examples=[group.entry() for group in sorted(examples, key=_priority)])


def _groups(count: int) -> str:
  return f'{count} group' + ('' if count == 1 else 's')


_WHAT = {EXACT: 'byte-identical files', NEAR: 'near-identical pictures'}


SHOWN_GROUPS = 3
"""Leaking or conflicting groups the console's summary shows (the manifest keeps more)."""
SHOWN_PER_GROUP = 3
"""Files of a leaking or conflicting group the console's summary names, one per line."""
SUMMARY_WIDTH = 80
"""Columns the console's summary fits in (a terminal's default width; ``pipeline.outputs``
fits its table in the same)."""


def _fit(text: str, width: int) -> str:
  """``text``, or its end after '...' when longer than ``width`` (a path's file name stays)."""
  return text if len(text) <= width else '...' + text[-max(width - 3, 8):]


def summary_lines(section: Optional[manifest_schema.DuplicatesSection]) -> List[str]:
  """Lines of the console summary for the manifest's ``duplicates`` section (none when there
  are no duplicates): the counts per kind, then the example groups with their splits and
  labels."""
  kinds = ((EXACT, section.exact), (NEAR, section.near)) if section else ()
  if not any(counts.num_groups for _, counts in kinds):
    return []
  lines = []
  for kind, counts in kinds:
    if not counts.num_groups:
      continue
    dropped = counts.num_dropped
    written = (f'one of each written, {dropped} dropped' if dropped else 'all written')
    problems = [f'{_groups(counts.num_leaking_groups)} across splits (LEAKAGE)'
                if counts.num_leaking_groups else '',
                f'{_groups(counts.num_label_conflicts)} with two labels (LABEL CONFLICT)'
                if counts.num_label_conflicts else '']
    problems = '; '.join(p for p in problems if p)
    lines.append(f'  {_groups(counts.num_groups)} of {_WHAT[kind]} ({counts.num_files} '
                 f'files): {written}')
    if problems:
      lines.append(f'    {problems}')
  shown = [group for group in section.examples
           if group.leaks_across_splits or group.label_conflict]
  for group in shown[:SHOWN_GROUPS]:
    alike = f', similarity {group.similarity:.3f}' if group.similarity is not None else ''
    kept = f', kept {_fit(group.kept, 40)}' if group.kept else ''
    lines.append(f'    {group.kind} group of {len(group.files)} files{alike}{kept}:')
    for copy in group.files[:SHOWN_PER_GROUP]:
      where = f' ({copy.split}' + (f', {copy.label})' if copy.label is not None else ')')
      lines.append(f'      {_fit(copy.file, SUMMARY_WIDTH - 6 - len(where))}{where}')
    if len(group.files) > SHOWN_PER_GROUP:
      lines.append(f'      ... and {len(group.files) - SHOWN_PER_GROUP} more')
  more = (f' ({len(shown) - SHOWN_GROUPS} more leaking or conflicting shown there)'
          if len(shown) > SHOWN_GROUPS else '')
  lines.append(f'  every group{more}: {section.file}')
  return lines


class _HashSourceFn(beam.DoFn):
  """LabeledImage -> the same with ``source_sha256`` set (left None when the file cannot be
  read: the conversion reads it again and reports the failure with its reason)."""

  def __init__(self):
    self._hashed = beam.metrics.Metrics.counter(METRICS_NAMESPACE, 'dedup_files_hashed')

  def process(self, image: LabeledImage) -> Iterable[LabeledImage]:
    try:  # a transient error is retried, then fails the run (reads.ReadFailed)
      digest = reads.file_sha256(image.path)
    except reads.UnreadableFile:  # reported with its reason by the conversion's own read
      yield image
      return
    self._hashed.inc()
    yield image._replace(source_sha256=digest)


class _KeepFirstFn(beam.DoFn):
  """(key, [LabeledImage]) -> the first image by relative path; Failure(stage='duplicate') for
  the others; a DuplicateGroup on ``groups`` when there are others."""

  def __init__(self, mode: str):
    self._mode = mode
    self._dropped = beam.metrics.Metrics.counter(METRICS_NAMESPACE, 'duplicates_dropped')

  def process(self, element) -> Iterable:
    _, images = element
    images = sorted(images, key=lambda image: image.relpath)
    first = images[0]
    yield first
    if len(images) == 1 or first.source_sha256 is None:
      return
    for image in images[1:]:
      self._dropped.inc()
      yield beam.pvalue.TaggedOutput(FAILURES_TAG, Failure(
          image.path, image.relpath, STAGE_DUPLICATE,
          f'byte-identical to {first.relpath} (SHA-256 {first.source_sha256[:16]}...), '
          f'which is written instead (--dedup={self._mode})'))
    yield beam.pvalue.TaggedOutput(GROUPS_TAG, group_of(
        EXACT, (DuplicateFile(image.relpath, image.split, image.label) for image in images),
        first.source_sha256, kept=first.relpath))


class DropDuplicates(beam.PTransform):
  """PCollection[LabeledImage] -> a dict of PCollections:

  * ``images``: PCollection[LabeledImage], one per group of byte-identical files, each carrying
    its ``source_sha256``; unreadable files pass through unhashed;
  * ``failures``: PCollection[Failure] at stage ``duplicate``, one per file not written;
  * ``groups``: PCollection[DuplicateGroup] of the groups found.

  With ``mode='keep_all'`` nothing is read: ``images`` is the input, the other two are empty
  (the groups are then found after the conversion, by ``ReportDuplicates``).
  """

  def __init__(self, mode: str = DEFAULT_DEDUP):
    super().__init__()
    if mode not in DEDUP_MODES:
      raise ValueError(f'--dedup must be one of {", ".join(DEDUP_MODES)}; got {mode!r}')
    self._mode = mode  # keep_first_near drops the exact copies here, like keep_first

  def expand(self, images):
    if self._mode == KEEP_ALL:
      return {'images': images,
              FAILURES_TAG: images.pipeline | 'no dropped files' >> beam.Create([]),
              GROUPS_TAG: images.pipeline | 'no groups' >> beam.Create([])}
    kept = (
        images
        | 'hash source bytes' >> beam.ParDo(_HashSourceFn())
        # (sha256, LabeledImage); an unhashed (unreadable) file is a group of its own
        | 'key by sha256' >> beam.Map(
            lambda image: (image.source_sha256 or 'unread:' + image.relpath, image))
        | 'group identical files' >> beam.GroupByKey()
        | 'keep the first by path' >> beam.ParDo(_KeepFirstFn(self._mode)).with_outputs(
            FAILURES_TAG, GROUPS_TAG, main='images'))
    return {'images': kept.images, FAILURES_TAG: kept[FAILURES_TAG],
            GROUPS_TAG: kept[GROUPS_TAG]}


SHA_PREFIX_HEX = 2
"""The GroupByKey key of ``ExactGroups``: the first hex digits of the source's SHA-256 (256
keys). Each worker batches a bundle's files by key before the shuffle, so a bundle sends at most
256 elements whatever its size, instead of one (digest, file) element per image."""


def _digest_entries(batch) -> Iterable[Tuple[str, Tuple[str, str, str, str]]]:
  """A list of ConvertedExample -> each one's (digest prefix, (sha256, relpath, split,
  label)) entry."""
  for example in batch:
    digest = example.source_sha256
    yield digest[:SHA_PREFIX_HEX], (digest, example.relpath, example.split, example.label)


def _exact_groups_of_key(element) -> Iterable[DuplicateGroup]:
  """(digest prefix, [batches]) -> a DuplicateGroup per digest held by two or more files."""
  _, batches = element
  by_digest = collections.defaultdict(list)
  for digest, relpath, split, label in entries_in(batches):
    by_digest[digest].append(DuplicateFile(relpath, split, label))
  for digest, copies in by_digest.items():
    if len(copies) > 1:
      yield group_of(EXACT, copies, digest)


class ExactGroups(beam.PTransform):
  """PCollection[List[ConvertedExample]] (``transforms.batches.ExampleBatches``) ->
  PCollection[DuplicateGroup] of the byte-identical files among them (by ``source_sha256``).

  Each bundle's files are batched by the first ``SHA_PREFIX_HEX`` hex digits of their digest
  and grouped on that prefix (at most 256 keys), then split by whole digest: the shuffle
  carries a few hundred elements per bundle rather than one per image, and only
  (digest, path, split, label) tuples."""

  def expand(self, batches):
    return (
        batches
        | 'batch by source sha256' >> beam.ParDo(BatchPerKeyFn(_digest_entries))
        | 'group by digest prefix' >> beam.GroupByKey()
        | 'groups of two or more' >> beam.FlatMap(_exact_groups_of_key))


class ReportDuplicates(beam.PTransform):
  """PCollection[DuplicateGroup] (every kind) -> a one-element
  PCollection[manifest_schema.DuplicatesSection], the manifest's ``duplicates`` section
  (``duplicates_section``), and ``OUT/duplicates.jsonl`` written, one group per line
  (``DuplicateGroup.entry``, keys sorted), lines sorted, by an external merge
  (``transforms.files.sorted_lines``).

  The section is emitted once the file is written, so the manifest (and ``_SUCCESS``) comes
  after it.
  """

  def __init__(self, output_dir: str):
    super().__init__()
    self._output_dir = output_dir

  def expand(self, groups):
    path = FileSystems.join(self._output_dir, contract.DUPLICATES_FILE)
    written = (groups
               | 'duplicate lines' >> beam.Map(DuplicateGroup.to_json)
               | 'write duplicates.jsonl' >> WriteSortedLines(path))
    return (
        groups
        | 'count duplicates' >> beam.CombineGlobally(_SectionFn())
        | 'after the file' >> beam.transforms.util.WaitOn(written))
