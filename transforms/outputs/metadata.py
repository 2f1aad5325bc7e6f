"""Write labels.txt, manifest.json and, last, _SUCCESS (failures.jsonl is written before:
``transforms.outputs.failures``).

One DoFn on one element, run after every shard is written (it takes the written shards'
summaries as a side input, so no runner can start it earlier). The writer counted each shard's
records and digested its bytes as it wrote them (``transforms.outputs.write.ShardSummary``: the
manifest's per-shard ``num_examples``, ``bytes`` and ``sha256``, which the reader can check), so
this step reads no shard; it checks the counts against the examples converted, and decides
whether the run succeeded:

* more failed inputs than ``max_failure_fraction`` of all image inputs, no image at all,
  shards whose records do not add up, or a classification run that ends with fewer than two
  classes (one only with ``--allow_single_class``; :func:`class_count_error`): the manifest says
  ``"status": "failed"`` with the reason,
  ``_SUCCESS`` is not written, and the step raises ``RunFailed`` so the job fails;
* otherwise ``_SUCCESS`` is written last, and readers may trust the directory.
"""

import collections
import dataclasses
import datetime
import json
import posixpath
import re
import time
from typing import Dict, List, Optional, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from imagerecords import contract
from imagerecords import manifest_schema

from transforms.files.textfiles import write_text
from transforms.outputs import claim as run_claim
from transforms.outputs import tfds_metadata
from transforms.outputs.failures import (FailureSummary, common_failure_reasons,
                                         failure_fraction_error, summarize)
from transforms.outputs.incremental import NightCounts
from transforms.outputs.write import ShardSummary


class RunFailed(RuntimeError):
  """The run's output must not be published; the message is the one-line reason."""


# The failures a run ends on by its own design: its verdict (RunFailed) and another run's claim
# on the output. Any retry fails the same way. A worker's exception reaches the launcher (and
# Flink's exception history) as text, so they are told apart by name.
FAILURES_BY_DESIGN = (run_claim.ClaimLost.__name__, RunFailed.__name__)
# The line of such a failure in a traceback's text (``transforms.outputs.metadata.RunFailed:
# <why>``), not a source line that merely names one in a comment: group 1 its name, 2 its message.
FAILURE_BY_DESIGN_LINE = re.compile(
    r'^\s*(?:[\w.]+\.)?(' + '|'.join(FAILURES_BY_DESIGN) + r'): (.*)$', re.M)


@dataclasses.dataclass(frozen=True)
class MetadataSettings:
  """What the metadata step knows at launch (``pipeline.config.JobConfig.from_options`` builds
  it once).

  launch: the manifest's launch-time entries (``tool``, ``input_dir``, ``output_dir``,
    ``options``, ``image``, ``embedding``, ``split_source``, ``task``, ``run_date``,
    ``incremental``: the night's settings, without its counts); this step fills in the rest.
  write_dir: where the metadata files go (a dated run's staging folder; ``launch.output_dir``
    names where it is published).
  write_success: False for a dated run, whose ``_SUCCESS`` comes with its publication.
  num_shards: split -> its fixed shard count. compressed: GZIP shards.
  max_failure_fraction: ``--max_failure_fraction``.
  required_classes: ``--strict_labels``: the classes that must keep an example.
  start_time: epoch seconds at launch (the manifest's ``timings``).
  label_source: ``--label_source`` of a classification run with labels, whose classes are
    counted at the end (:func:`class_count_error`); None: no count (segmentation,
    ``--label_source=none``).
  allow_single_class: ``--allow_single_class``: a run with labels may end with one class.
  """
  launch: manifest_schema.Manifest
  write_dir: str
  write_success: bool
  num_shards: Dict[str, int]
  compressed: bool
  max_failure_fraction: float
  required_classes: Tuple[str, ...] = ()
  start_time: float = 0.0
  label_source: Optional[str] = None
  allow_single_class: bool = False


def _label_source_hint(label_source: str, only_class: Optional[str]) -> str:
  """What to try when ``--label_source`` gave no class, or the one class ``only_class``."""
  kind, _, value = label_source.partition(':')
  if kind == 'directory':
    given = f'gave every image the class {only_class!r}' if only_class else 'gave no image a class'
    return (f"--label_source=directory (the image's parent folder name) {given}; try "
            "--label_source=file:PATH (a label file, e.g. Tiny ImageNet's val_annotations.txt), "
            '--label_source=filename:REGEX (the class in the file name) or --label_source=none '
            '(no labels)')
  if kind == 'filename':
    given = f'captured {only_class!r} in every file name' if only_class else 'matched no file name'
    return (f'the regex of --label_source=filename:{value} {given}; check its group, or try '
            '--label_source=directory or file:PATH')
  if kind == 'file':
    given = f'gives every image the class {only_class!r}' if only_class else 'labels no image'
    return (f'the label file {value} {given}; check its file names and label column, or try '
            '--label_source=directory or filename:REGEX')
  return f'check --label_source={label_source}'


def class_count_error(label_source: Optional[str], allow_single_class: bool,
                      splits: Dict[str, manifest_schema.SplitEntry], failures: FailureSummary,
                      num_inputs: int) -> Optional[str]:
  """The reason a classification run fails on its classes, or None.

  A classifier needs two classes: a run whose examples (all splits together) hold one class
  fails unless ``allow_single_class`` (``--allow_single_class``), and a run with image inputs
  but no example at all (every input failed, e.g. at stage ``label``, under a
  ``--max_failure_fraction`` that allowed it) always fails. Both are what labels taken from the
  wrong place look like: Beam's ``--labels`` swallowing a label file, every image in one
  folder, a regex that captures one value. The reason quotes the most common failure reasons
  (:func:`common_failure_reasons`) and the ``--label_source`` to try.

  Args:
    label_source: ``--label_source``; None: not a classification run with labels (no check).
    allow_single_class: one class is allowed.
    splits: the manifest's splits, with their class counts.
    failures: the run's failures, summarized (``transforms.outputs.failures``).
    num_inputs: image inputs (examples and failed inputs); 0: no check here (the run fails on
      finding no image, ``transforms.outputs.failures.failure_fraction_error``).
  """
  if label_source is None or num_inputs == 0:
    return None
  counts = collections.Counter()
  for info in splits.values():
    counts.update({name: n for name, n in info.class_counts.items() if n})
  if len(counts) > 1 or (len(counts) == 1 and allow_single_class):
    return None
  reasons = common_failure_reasons(failures)
  reasons = f'; most common failures: {reasons}' if reasons else ''
  if not counts:
    return (f'no class: none of the {num_inputs} image inputs became an example{reasons}; '
            + _label_source_hint(label_source, None))
  (name, count), = counts.items()
  return (f'only one class, {name!r} ({count} examples), and a classifier needs two{reasons}; '
          f'{_label_source_hint(label_source, name)}; or pass --allow_single_class if one class '
          'is meant')


def vanished_classes_error(required, splits: Dict[str, manifest_schema.SplitEntry]):
  """The reason a run fails when a class it must keep (``--strict_labels``: every class of the
  label map) has no example left in any split, or None."""
  counts = collections.Counter()
  for info in splits.values():
    counts.update(info.class_counts)
  vanished = [name for name in required if not counts.get(name)]
  if vanished:
    return (f'{len(vanished)} classes of the label map have no image any more (--strict_labels): '
            + ', '.join(vanished[:10]) + (' ...' if len(vanished) > 10 else ''))
  return None


class _WriteMetadataFn(beam.DoFn):
  """None -> the metadata files, and the manifest (:class:`imagerecords.manifest_schema.Manifest`);
  see the module docstring."""

  def __init__(self, settings: MetadataSettings, claim: Optional[run_claim.ClaimToken]):
    self._settings = settings
    self._claim = claim

  def process(self, unused_element, shards: List[ShardSummary], class_names: List[str],
              split_stats: Dict[str, dict], failures: FailureSummary,
              duplicates: Optional[manifest_schema.DuplicatesSection] = None,
              diff: Optional[manifest_schema.DiffSection] = None,
              statistics: Optional[manifest_schema.StatisticsSection] = None,
              incremental: Optional[NightCounts] = None,
              quality: Optional[manifest_schema.QualitySection] = None):
    settings = self._settings
    launch = settings.launch
    run_claim.check(self._claim)  # ClaimLost: another run owns the output now

    def path(name):
      return FileSystems.join(settings.write_dir, name)

    write_text(path(contract.LABELS_FILE), ''.join(f'{name}\n' for name in class_names))

    splits, problems = self._describe_splits(shards, split_stats, class_names)
    num_skipped, num_failed = failures.num_skipped, failures.num_failed
    num_examples = sum(split.num_examples for split in splits.values())
    num_inputs = num_examples + num_failed
    classes_error = class_count_error(settings.label_source, settings.allow_single_class, splits,
                                      failures, num_inputs)
    # no example at all: the class count's reason (the most common failures, what to try) first
    error = ('; '.join(problems) or (num_examples == 0 and classes_error)
             or failure_fraction_error(num_inputs, settings.max_failure_fraction,
                                       path(contract.FAILURES_FILE), failures,
                                       settings.label_source)
             or classes_error or vanished_classes_error(settings.required_classes, splits)
             or (incremental.reuse_error(launch.incremental and launch.incremental.reused_from)
                 if incremental else None))

    # The manifest, built here and only here: the launch's entries and this run's results.
    manifest = dataclasses.replace(
        launch,
        status='failed' if error else 'complete',
        error=error,
        created_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        classes=list(class_names),
        splits=splits,
        num_inputs=num_inputs,
        num_examples=num_examples,
        num_failures=num_failed,
        num_skipped=num_skipped,
        failures_by_stage=failures.by_stage,
        duplicates=duplicates,  # transforms.analysis.dedup.duplicates_section
        quality=quality,  # transforms.analysis.quality.quality_section
        diff=diff,  # transforms.outputs.image_index.DiffAgainstPrevious; None on a first run
        # --run_date: what the night reused of the previous run (transforms.outputs.incremental)
        incremental=launch.incremental and (incremental or NightCounts(0, 0)).add_to(
            launch.incremental),
        # transforms.analysis.statistics.TrainingStatistics (--stats) or statistics_tft's
        # AnalyzeTrainingSplit (--stats=tft), with its split's class counts
        statistics=statistics and dataclasses.replace(statistics, class_frequencies=dict(
            getattr(splits.get(statistics.split), 'class_counts', {}))),
        timings=manifest_schema.Timings(wall_time_s=round(time.time() - settings.start_time, 3)))
    write_text(path(contract.MANIFEST_FILE),
               json.dumps(manifest.to_json(), indent=2, ensure_ascii=False))
    if error:
      raise RunFailed(error)
    for name, text in tfds_metadata.metadata_files(manifest).items():
      write_text(path(name), text)  # dataset_info.json, features.json: TFDS reads the output
    if settings.write_success:  # a dated run's _SUCCESS comes with its publication
      run_claim.check(self._claim)
      write_text(path(contract.SUCCESS_FILE), '')
    yield manifest

  def _describe_splits(self, shards: List[ShardSummary], split_stats, class_names: List[str]
                       ) -> Tuple[Dict[str, manifest_schema.SplitEntry], List[str]]:
    """The manifest's ``splits`` section, and the integrity problems found. A segmentation
    split's class counts are the examples whose mask holds each class, by name
    (``contract.mask_class_name``: ``class <id>`` where ``class_names`` has none)."""
    by_split = collections.defaultdict(list)
    for shard in shards:
      name = contract.parse_shard_file_name(posixpath.basename(shard.path.replace('\\', '/')))
      if name is not None:
        by_split[name.split].append(shard)
    splits, problems = {}, []
    for split, num_shards in sorted(self._settings.num_shards.items()):
      stats = split_stats.get(split, {'num_examples': 0, 'class_counts': {},
                                      'fingerprint': None})
      entries = [manifest_schema.ShardEntry(
          file=posixpath.basename(shard.path.replace('\\', '/')), num_examples=shard.num_records,
          bytes=shard.bytes, sha256=shard.sha256) for shard in sorted(by_split.get(split, []))]
      counted = sum(entry.num_examples for entry in entries)
      if len(entries) != num_shards:
        problems.append(f'split {split}: {len(entries)} shards written, {num_shards} expected')
      if counted != stats['num_examples']:
        problems.append(f'split {split}: {counted} records in the shards, '
                        f'{stats["num_examples"]} examples converted')
      class_counts = stats['class_counts'] or {
          contract.mask_class_name(class_id, class_names): n
          for class_id, n in sorted(stats.get('mask_class_counts', {}).items())}
      splits[split] = manifest_schema.SplitEntry(
          num_examples=stats['num_examples'], num_shards=num_shards,
          compressed=self._settings.compressed, class_counts=class_counts,
          fingerprint=stats['fingerprint'], bytes=sum(entry.bytes for entry in entries),
          shards=entries)
    return splits, problems


class WriteMetadata(beam.PTransform):
  """PBegin -> a one-element PCollection holding the manifest written
  (:class:`imagerecords.manifest_schema.Manifest`).

  Args:
    settings: what is known at launch (:class:`MetadataSettings`).
    shards, class_names, split_stats, failures: PCollections used as side inputs
      (``WriteSplits``' ShardSummary of each shard, ``ClassNames``, ``SplitStatistics``
      outputs and the one ``transforms.outputs.failures.FailureSummary`` of
      ``WriteFailures``, emitted once failures.jsonl is written).
    duplicates: optional one-element PCollection of the manifest's ``duplicates`` section,
      a ``manifest_schema.DuplicatesSection`` (``transforms.analysis.dedup.ReportDuplicates``,
      emitted once duplicates.jsonl is written).
    quality: optional one-element PCollection of the manifest's ``quality`` section, a
      ``manifest_schema.QualitySection`` (``transforms.analysis.quality.ReportQuality``, emitted
      once quality.jsonl is written).
    diff: optional one-element PCollection, the diff against the previous run, a
      ``manifest_schema.DiffSection`` (``transforms.outputs.image_index.DiffAgainstPrevious``).
    written: optional PCollection of paths of other files the run writes (``images.jsonl``):
      the metadata, and ``_SUCCESS``, wait until it is complete (Beam's ``WaitOn``).
    statistics: optional one-element PCollection, the manifest's ``statistics``, a
      ``manifest_schema.StatisticsSection``
      (``transforms.analysis.statistics.TrainingStatistics``, or with ``--stats=tft``
      ``transforms.analysis.statistics_tft.AnalyzeTrainingSplit``, emitted once
      ``transform_fn/`` is written); the training split's class counts are added as
      ``class_frequencies``.
    incremental: optional one-element PCollection of a dated night's
      ``transforms.outputs.incremental.NightCounts``, added to the launch's ``incremental``
      section (``pipeline.nightly.IncrementalPlan``).
    claim: the run's ``transforms.outputs.claim.ClaimToken``, checked before anything is written and
      before ``_SUCCESS`` (None: no check).
  """

  def __init__(self, settings: MetadataSettings, shards, class_names, split_stats,
               failures, duplicates=None, diff=None, written=None, statistics=None,
               incremental=None, quality=None, claim: Optional[run_claim.ClaimToken] = None):
    super().__init__()
    self._settings = settings
    self._claim = claim
    self._sides = (shards, class_names, split_stats, failures)
    self._optional = {'duplicates': duplicates, 'diff': diff, 'quality': quality,
                      'incremental': incremental}
    self._written = written
    self._statistics = statistics

  def expand(self, pbegin):
    shards, class_names, split_stats, failures = self._sides
    extra = {name: beam.pvalue.AsSingleton(side)
             for name, side in self._optional.items() if side is not None}
    if self._statistics is not None:
      extra['statistics'] = beam.pvalue.AsSingleton(self._statistics, default_value=None)
    once = pbegin | 'once' >> beam.Create([None])
    if self._written is not None:
      once = once | 'after the other files' >> beam.transforms.util.WaitOn(self._written)
    return once | 'write labels, failures, manifest, _SUCCESS' >> beam.ParDo(
        _WriteMetadataFn(self._settings, self._claim),
        shards=beam.pvalue.AsList(shards),
        class_names=beam.pvalue.AsSingleton(class_names, default_value=[]),
        split_stats=beam.pvalue.AsSingleton(split_stats, default_value={}),
        failures=beam.pvalue.AsSingleton(failures, default_value=summarize(())), **extra)
