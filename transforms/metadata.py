"""Write labels.txt, failures.jsonl, manifest.json and, last, _SUCCESS.

One DoFn on one element, run after every shard is written (it takes the written shard paths as
a side input, so no runner can start it earlier). It counts the records of each shard from the
TFRecord framing (the writer deals records to shards itself, so the counts per shard are read
back, not guessed), checks them against the examples converted, and decides whether the run
succeeded:

* more failed inputs than ``max_failure_fraction`` of all image inputs, no image at all, or
  shards whose records do not add up: the manifest says ``"status": "failed"`` with the reason,
  ``_SUCCESS`` is not written, and the step raises ``RunFailed`` so the job fails;
* otherwise ``_SUCCESS`` is written last, and readers may trust the directory.
"""

import collections
import datetime
import gzip
import json
import posixpath
import time
from typing import Dict, List, Optional

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from imagerecords import contract
from imagerecords.framing import record_spans

from transforms import claim as run_claim
from transforms import tfds_metadata
from transforms.elements import NOT_INPUTS, Failure
from transforms.folders import match_literal
from transforms.textfiles import write_text


class RunFailed(RuntimeError):
  """The run's output must not be published; the message is the one-line reason."""


def count_records(path: str) -> int:
  """The number of records in one TFRecord shard (``.gz`` shards are decompressed)."""
  with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
    stream = gzip.GzipFile(fileobj=raw) if path.endswith(contract.GZIP_SUFFIX) else raw
    return sum(1 for _ in record_spans(stream))


def failure_fraction_error(num_failed: int, num_inputs: int, limit: float, failures_path: str):
  """The reason a run fails on its failures, or None when it may succeed."""
  if num_inputs == 0:
    return 'no image files found under the input directory'
  if num_failed > limit * num_inputs:
    return (f'{num_failed} of {num_inputs} image inputs failed ({num_failed / num_inputs:.1%}), '
            f'more than --max_failure_fraction={limit}; see {failures_path}')
  return None


def vanished_classes_error(required, splits: Dict[str, dict]):
  """The reason a run fails when a class it must keep (``--strict_labels``: every class of the
  label map) has no example left in any split, or None."""
  counts = collections.Counter()
  for info in splits.values():
    counts.update(info['class_counts'])
  vanished = [name for name in required if not counts.get(name)]
  if vanished:
    return (f'{len(vanished)} classes of the label map have no image any more (--strict_labels): '
            + ', '.join(vanished[:10]) + (' ...' if len(vanished) > 10 else ''))
  return None


def reuse_error(counts: Optional[dict], section: Optional[dict]):
  """The reason a night fails when it found fewer records in the previous run's shards than it
  decided to reuse (shards that lack records their index lists), or None."""
  if not counts or counts['reused'] == counts['to_reuse']:
    return None
  return (f'{counts["to_reuse"]} unchanged images were to be reused from '
          f'{(section or {}).get("reused_from")}, but its shards hold {counts["reused"]} of '
          'their records; rerun with --full_rebuild')


class _WriteMetadataFn(beam.DoFn):
  """None -> the metadata files; see the module docstring."""

  def __init__(self, config: dict):
    self._config = config

  def process(self, unused_element, shard_paths: List[str], class_names: List[str],
              split_stats: Dict[str, dict], failures: List[Failure],
              duplicates: Optional[dict] = None, diff: Optional[dict] = None,
              unused_written: List[str] = (), statistics: Optional[dict] = None,
              incremental: Optional[dict] = None, quality: Optional[dict] = None):
    config = self._config
    out = config.get('write_dir') or config['output_dir']  # a dated run writes to staging
    run_claim.check(config.get('claim'))  # ClaimLost: another run owns the output now

    def path(name):
      return FileSystems.join(out, name)

    write_text(path(contract.LABELS_FILE), ''.join(f'{name}\n' for name in class_names))
    failures = sorted(failures, key=lambda f: (f.relpath, f.stage))
    write_text(path(contract.FAILURES_FILE), ''.join(f.to_json() + '\n' for f in failures))

    splits, problems = self._describe_splits(shard_paths, split_stats)
    by_stage = collections.Counter(f.stage for f in failures)
    num_skipped = sum(by_stage.get(stage, 0) for stage in NOT_INPUTS)
    num_failed = len(failures) - num_skipped
    num_examples = sum(s[contract.MANIFEST_NUM_EXAMPLES] for s in splits.values())
    num_inputs = num_examples + num_failed
    error = '; '.join(problems) or failure_fraction_error(
        num_failed, num_inputs, config['max_failure_fraction'], path(contract.FAILURES_FILE)
    ) or vanished_classes_error(config.get('required_classes', ()), splits
    ) or reuse_error(incremental, config.get('incremental'))

    manifest = {
        'format_version': contract.FORMAT_VERSION,
        'tool': config['tool'],
        'status': 'failed' if error else 'complete',
        'error': error,
        'created_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds'),
        'input_dir': config['input_dir'],
        'output_dir': config['output_dir'],  # where readers find it (published)
        'options': config['options'],
        contract.MANIFEST_IMAGE: config['image'],
        # --embedding_model: transforms.embedding.EmbeddingModel.manifest_section; else absent
        **({contract.MANIFEST_EMBEDDING: config[contract.MANIFEST_EMBEDDING]}
           if config.get(contract.MANIFEST_EMBEDDING) else {}),
        'split_source': config['split_source'],
        contract.MANIFEST_TASK: config.get(contract.MANIFEST_TASK, contract.TASK_CLASSIFICATION),
        contract.MANIFEST_CLASSES: class_names,
        contract.MANIFEST_SPLITS: splits,
        'num_inputs': num_inputs,
        'num_examples': num_examples,
        'num_failures': num_failed,
        'num_skipped': num_skipped,
        'failures_by_stage': dict(sorted(by_stage.items())),
        'duplicates': duplicates,  # transforms.dedup.duplicates_section
        'quality': quality,  # transforms.quality.quality_section
        'run_date': config.get('run_date'),
        'diff': diff,  # transforms.image_index.DiffAgainstPrevious; None on a first run
        # --run_date: what the night reused of the previous run (transforms.incremental)
        'incremental': config.get('incremental') and {
            **config['incremental'], 'reused': (incremental or {}).get('reused', 0),
            'converted': (incremental or {}).get('converted', 0)},
        # transforms.statistics.TrainingStatistics (--stats) or statistics_tft's
        # AnalyzeTrainingSplit (--stats=tft), with its split's class counts
        contract.MANIFEST_STATISTICS: statistics and {
            **statistics, contract.STATS_CLASS_FREQUENCIES: splits.get(
                statistics[contract.STATS_SPLIT], {}).get('class_counts', {})},
        'timings': {'wall_time_s': round(time.time() - config['start_time'], 3)},
    }
    write_text(path(contract.MANIFEST_FILE), json.dumps(manifest, indent=2, ensure_ascii=False))
    if error:
      raise RunFailed(error)
    for name, text in tfds_metadata.metadata_files(manifest).items():
      write_text(path(name), text)  # dataset_info.json, features.json: TFDS reads the output
    if config.get('write_success', True):  # a dated run's _SUCCESS comes with its publication
      run_claim.check(config.get('claim'))
      write_text(path(contract.SUCCESS_FILE), '')
    yield manifest

  def _describe_splits(self, shard_paths, split_stats):
    """The manifest's ``splits`` section, and the integrity problems found."""
    by_split = collections.defaultdict(list)
    for shard in shard_paths:
      name = contract.parse_shard_file_name(posixpath.basename(shard.replace('\\', '/')))
      if name is not None:
        by_split[name.split].append(shard)
    sizes = {path: getattr(match_literal(path), 'size_in_bytes', None) for path in shard_paths}
    splits, problems = {}, []
    for split, num_shards in sorted(self._config['num_shards'].items()):
      stats = split_stats.get(split, {'num_examples': 0, 'class_counts': {},
                                      'fingerprint': None})
      shards = []
      for shard in sorted(by_split.get(split, [])):
        shards.append({
            contract.MANIFEST_SHARD_FILE: posixpath.basename(shard.replace('\\', '/')),
            'num_examples': count_records(shard),
            'bytes': sizes.get(shard)})
      counted = sum(s['num_examples'] for s in shards)
      if len(shards) != num_shards:
        problems.append(f'split {split}: {len(shards)} shards written, {num_shards} expected')
      if counted != stats['num_examples']:
        problems.append(f'split {split}: {counted} records in the shards, '
                        f'{stats["num_examples"]} examples converted')
      splits[split] = {
          contract.MANIFEST_NUM_EXAMPLES: stats['num_examples'],
          contract.MANIFEST_NUM_SHARDS: num_shards,
          'compressed': self._config['compressed'],
          'class_counts': stats['class_counts'],
          'fingerprint': stats['fingerprint'],
          'bytes': sum(s['bytes'] or 0 for s in shards),
          contract.MANIFEST_SHARDS: shards,
      }
    return splits, problems


class WriteMetadata(beam.PTransform):
  """PBegin -> a one-element PCollection holding the manifest written.

  Args:
    config: plain-JSON job configuration: ``output_dir``, ``input_dir``, ``num_shards``
      ({split: n}), ``compressed``, ``max_failure_fraction``, ``tool``, ``options``, ``image``,
      ``split_source``, ``start_time`` (epoch seconds at launch).
    shard_paths, class_names, split_stats, failures: PCollections used as side inputs
      (``WriteSplits``, ``ClassNames``, ``SplitStatistics`` outputs and every Failure).
    duplicates: optional one-element PCollection of the manifest's ``duplicates`` section
      (``transforms.dedup.ReportDuplicates``, emitted once duplicates.jsonl is written).
    quality: optional one-element PCollection of the manifest's ``quality`` section
      (``transforms.quality.ReportQuality``, emitted once quality.jsonl is written).
    diff: optional one-element PCollection, the diff against the previous run
      (``transforms.image_index.DiffAgainstPrevious``).
    written: optional PCollection of paths of other files the run writes (``images.jsonl``):
      a side input only so that the metadata, and ``_SUCCESS``, come after them.
    statistics: optional one-element PCollection, the manifest's ``statistics``
      (``transforms.statistics.TrainingStatistics``, or with ``--stats=tft``
      ``transforms.statistics_tft.AnalyzeTrainingSplit``, emitted once ``transform_fn/`` is
      written); the training split's class counts are added as ``class_frequencies``.
    incremental: optional one-element PCollection of a dated night's counts
      (``transforms.incremental``: ``reused``, ``converted``, ``to_reuse``), added to the
      config's ``incremental`` section (``pipeline.nightly.IncrementalPlan``).
  ``claim``: the run's ``transforms.claim.ClaimToken``, checked before anything is written and
  before ``_SUCCESS`` (None: no check). Config keys for dated runs: ``write_dir`` (the staging directory written to; the manifest
  still names ``output_dir``, where the run is published), ``write_success`` (False: the
  publication writes ``_SUCCESS``), ``run_date``, ``required_classes`` (``--strict_labels``).
  """

  def __init__(self, config, shard_paths, class_names, split_stats, failures, duplicates=None,
               diff=None, written=None, statistics=None, incremental=None, quality=None):
    super().__init__()
    self._quality = quality
    self._incremental = incremental
    self._config = config
    self._sides = (shard_paths, class_names, split_stats, failures)
    self._duplicates = duplicates
    self._diff = diff
    self._written = written
    self._statistics = statistics

  def expand(self, pbegin):
    shard_paths, class_names, split_stats, failures = self._sides
    extra = ({} if self._duplicates is None
             else {'duplicates': beam.pvalue.AsSingleton(self._duplicates)})
    if self._diff is not None:
      extra['diff'] = beam.pvalue.AsSingleton(self._diff)
    if self._quality is not None:
      extra['quality'] = beam.pvalue.AsSingleton(self._quality)
    if self._written is not None:
      extra['unused_written'] = beam.pvalue.AsList(self._written)
    if self._incremental is not None:
      extra['incremental'] = beam.pvalue.AsSingleton(self._incremental)
    if self._statistics is not None:
      extra['statistics'] = beam.pvalue.AsSingleton(self._statistics, default_value=None)
    return (
        pbegin
        | 'once' >> beam.Create([None])
        | 'write labels, failures, manifest, _SUCCESS' >> beam.ParDo(
            _WriteMetadataFn(self._config),
            shard_paths=beam.pvalue.AsList(shard_paths),
            class_names=beam.pvalue.AsSingleton(class_names, default_value=[]),
            split_stats=beam.pvalue.AsSingleton(split_stats, default_value={}),
            failures=beam.pvalue.AsList(failures), **extra))
