"""What the launcher does around the pipeline: guard the output directory, read the manifest
back, print the summary, and keep the console readable."""

import json
import logging
import re
from typing import Dict, List, Optional

from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from imagerecords import contract

from transforms import dedup, sorted_lines, statistics_tft, write
from transforms.elements import METRICS_NAMESPACE
from transforms.publish import delete_success_first
from transforms.textfiles import read_text, replace_text

_LOG = logging.getLogger('imagerecords')


class OutputNotEmpty(RuntimeError):
  """The output directory holds files and ``--overwrite`` was not given."""


def existing_outputs(output_dir: str) -> List[str]:
  """Paths of the files directly in ``output_dir`` that a run writes (shards and metadata)."""
  names = (contract.LABELS_FILE, contract.MANIFEST_FILE, contract.FAILURES_FILE,
           contract.SUCCESS_FILE, contract.IMAGES_INDEX_FILE,
           # --stats (folders, deleted whole on local disk) and the TFDS metadata
           contract.TRANSFORM_FN_DIR, contract.TRANSFORMED_METADATA_DIR,
           contract.TFDS_DATASET_INFO_FILE, contract.TFDS_FEATURES_FILE,
           contract.TFDS_CLASS_NAMES_FILE)
  found = []
  for result in FileSystems.match([FileSystems.join(output_dir, '*')]):
    for metadata in result.metadata_list:
      base = metadata.path.replace('\\', '/').rsplit('/', 1)[-1]
      if base.endswith(contract.DALI_INDEX_SUFFIX):  # a shard's DALI index (--dali_index)
        base = base[:-len(contract.DALI_INDEX_SUFFIX)]
      if base in names or contract.parse_shard_file_name(base):
        found.append(metadata.path)
  # the working folders of a run that died (hidden, so '*' does not match them)
  for name in (write.STAGING_DIR, statistics_tft.STAGING_DIR, sorted_lines.STAGING_DIR):
    path = FileSystems.join(output_dir, name)
    if FileSystems.exists(path):
      found.append(path)
  return sorted(found)


def prepare_output_dir(output_dir: str, overwrite: bool) -> None:
  """Refuses to mix two runs' files: an earlier run's files are an error, or, with
  ``overwrite``, deleted (``_SUCCESS`` first, so no reader trusts a half-deleted directory).

  Raises:
    OutputNotEmpty: files of an earlier run exist and ``overwrite`` is False.
  """
  found = existing_outputs(output_dir)
  if not found:
    return
  if not overwrite:
    raise OutputNotEmpty(
        f'{output_dir} already holds {len(found)} files of an earlier run '
        f'(e.g. {found[0]}); pass --overwrite to replace them')
  delete_success_first(found)
  _LOG.info('deleted %d files of an earlier run in %s', len(found), output_dir)


def read_manifest(output_dir: str) -> Optional[dict]:
  """The manifest.json of ``output_dir``, or None when there is none."""
  path = FileSystems.join(output_dir, contract.MANIFEST_FILE)
  if not FileSystems.exists(path):
    return None
  return json.loads(read_text(path))


def write_manifest(output_dir: str, manifest: dict) -> None:
  """Replaces ``output_dir``'s manifest.json; a reader never sees half of it (locally a
  temporary file renamed over it, on object stores one object write)."""
  replace_text(FileSystems.join(output_dir, contract.MANIFEST_FILE),
               json.dumps(manifest, indent=2, ensure_ascii=False))


def beam_counters(result) -> Dict[str, int]:
  """The job's Beam counters (namespace ``imagerecords``: files listed, images read,
  converted, failed per stage, bytes read and written), as the runner reports them at the end:
  committed values where the runner has them, else attempted ones. {} when it reports none."""
  counters = {}
  try:
    queried = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))['counters']
  except Exception as error:  # pylint: disable=broad-except
    _LOG.warning('the runner reported no metrics: %s: %s', type(error).__name__, error)
    return counters
  for counter in queried:
    value = counter.committed if counter.committed is not None else counter.attempted
    name = counter.key.metric.name
    counters[name] = counters.get(name, 0) + (value or 0)
  return dict(sorted(counters.items()))


def summary(manifest: dict) -> str:
  """A few lines for people: examples per split and class, failures, where the output is."""
  classes = manifest[contract.MANIFEST_CLASSES]
  # segmentation records have no class label: no per-class example counts to show
  segmentation = manifest.get(contract.MANIFEST_TASK) == contract.TASK_SEGMENTATION
  shown = [] if segmentation else classes[:8]
  header = f'  {"split":<12}{"examples":>9}{"shards":>8}' + ''.join(
      f'{name[:12]:>13}' for name in shown)
  lines = [header]
  for split, info in manifest[contract.MANIFEST_SPLITS].items():
    counts = info['class_counts']
    lines.append(f'  {split:<12}{info[contract.MANIFEST_NUM_EXAMPLES]:>9}'
                 f'{info[contract.MANIFEST_NUM_SHARDS]:>8}'
                 + ''.join(f'{counts.get(name, 0):>13}' for name in shown))
  if len(classes) > len(shown) and not segmentation:
    lines.append(f'  ... {len(classes) - len(shown)} more classes: see manifest.json')
  failures = manifest['num_failures']
  by_stage = ', '.join(f'{n} at {stage}' for stage, n in manifest['failures_by_stage'].items())
  lines.append(f'  {failures} inputs failed, {manifest["num_skipped"]} files skipped'
               + (f' ({by_stage}): see {contract.FAILURES_FILE}' if by_stage else ''))
  lines.extend(dedup.summary_lines(manifest.get('duplicates')))  # duplicates and leakage
  verdict = ('wrote' if manifest['status'] == 'complete' else 'FAILED:')
  title = (f'imagerecords {verdict} {manifest["num_examples"]} examples in '
           f'{len(classes)} classes to {manifest["output_dir"]} '
           f'in {manifest["timings"]["wall_time_s"]:.1f} s')
  return '\n'.join([title] + lines)


_WORKER_LOG = re.compile(
    r'message: "(?P<message>(?:[^"\\]|\\.)*)".*log_location: "(?P<where>[^"]*)"')


class _WorkerLogFilter(logging.Filter):
  """Unwraps the local runner's forwarded worker logs of this job into plain lines.

  In multi-process mode Beam forwards each worker's log entry as one long protobuf text line.
  This filter keeps the entries logged by this job's own modules (progress lines), rewritten as
  ``worker: <message>``, and drops the runner's routine worker chatter below ERROR.
  """

  def filter(self, record):
    text = record.getMessage()
    if not text.startswith('Worker: '):
      return True
    match = _WORKER_LOG.search(text)
    where = match['where'].replace('\\', '/') if match else ''
    if match and '/transforms/' in where and 'apache_beam/' not in where:  # ours, not Beam's
      record.msg, record.args = 'worker: %s', (match['message'],)
      return True
    # A run that fails on its own verdict (RunFailed) is reported by the launcher in one line.
    return record.levelno >= logging.ERROR and 'RunFailed' not in text


def configure_logging() -> None:
  """INFO lines from this job, warnings and errors from everything else."""
  logging.basicConfig(level=logging.WARNING, format='%(asctime)s %(levelname)s %(message)s',
                      datefmt='%H:%M:%S')
  for name in ('imagerecords', 'pipeline', 'transforms'):
    logging.getLogger(name).setLevel(logging.INFO)
  forwarded = logging.getLogger('apache_beam.runners.portability.local_job_service')
  forwarded.setLevel(logging.INFO)
  forwarded.addFilter(_WorkerLogFilter())
