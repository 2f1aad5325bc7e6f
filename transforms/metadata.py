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
from typing import Dict, List

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from imagerecords import contract
from imagerecords.framing import record_spans

from transforms.elements import NOT_INPUTS, Failure


class RunFailed(RuntimeError):
  """The run's output must not be published; the message is the one-line reason."""


def write_text(path: str, text: str) -> None:
  """Writes ``text`` (UTF-8) to ``path`` on any filesystem Beam knows, replacing it."""
  with FileSystems.create(path, mime_type='text/plain',
                          compression_type=CompressionTypes.UNCOMPRESSED) as handle:
    handle.write(text.encode('utf-8'))


def read_text(path: str) -> str:
  """All of ``path`` as UTF-8 text, on any filesystem Beam knows."""
  with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
    return handle.read().decode('utf-8')


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


class _WriteMetadataFn(beam.DoFn):
  """None -> the metadata files; see the module docstring."""

  def __init__(self, config: dict):
    self._config = config

  def process(self, unused_element, shard_paths: List[str], class_names: List[str],
              split_stats: Dict[str, dict], failures: List[Failure]):
    config = self._config
    out = config['output_dir']

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
        num_failed, num_inputs, config['max_failure_fraction'], path(contract.FAILURES_FILE))

    manifest = {
        'format_version': contract.FORMAT_VERSION,
        'tool': config['tool'],
        'status': 'failed' if error else 'complete',
        'error': error,
        'created_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds'),
        'input_dir': config['input_dir'],
        'output_dir': out,
        'options': config['options'],
        contract.MANIFEST_IMAGE: config['image'],
        'split_source': config['split_source'],
        contract.MANIFEST_CLASSES: class_names,
        contract.MANIFEST_SPLITS: splits,
        'num_inputs': num_inputs,
        'num_examples': num_examples,
        'num_failures': num_failed,
        'num_skipped': num_skipped,
        'failures_by_stage': dict(sorted(by_stage.items())),
        'timings': {'wall_time_s': round(time.time() - config['start_time'], 3)},
    }
    write_text(path(contract.MANIFEST_FILE), json.dumps(manifest, indent=2, ensure_ascii=False))
    if error:
      raise RunFailed(error)
    write_text(path(contract.SUCCESS_FILE), '')
    yield manifest

  def _describe_splits(self, shard_paths, split_stats):
    """The manifest's ``splits`` section, and the integrity problems found."""
    by_split = collections.defaultdict(list)
    for shard in shard_paths:
      name = contract.parse_shard_file_name(posixpath.basename(shard.replace('\\', '/')))
      if name is not None:
        by_split[name.split].append(shard)
    sizes = {m.path: m.size_in_bytes
             for result in (FileSystems.match(sorted(shard_paths)) if shard_paths else [])
             for m in result.metadata_list}
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
  """

  def __init__(self, config, shard_paths, class_names, split_stats, failures):
    super().__init__()
    self._config = config
    self._sides = (shard_paths, class_names, split_stats, failures)

  def expand(self, pbegin):
    shard_paths, class_names, split_stats, failures = self._sides
    return (
        pbegin
        | 'once' >> beam.Create([None])
        | 'write labels, failures, manifest, _SUCCESS' >> beam.ParDo(
            _WriteMetadataFn(self._config),
            shard_paths=beam.pvalue.AsList(shard_paths),
            class_names=beam.pvalue.AsSingleton(class_names, default_value=[]),
            split_stats=beam.pvalue.AsSingleton(split_stats, default_value={}),
            failures=beam.pvalue.AsList(failures)))
