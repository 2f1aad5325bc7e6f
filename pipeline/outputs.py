"""What the launcher does around the pipeline: guard the output directory, read the manifest
back, print the summary, clean up after a failed run, and keep the console readable: one line
per event, the reason of a failure in the last line, tracebacks in the run's log file."""

import contextlib
import datetime
import errno
import json
import logging
import os
import re
import sys
import tempfile
from typing import Dict, List, Optional, Sequence

from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import monitoring_infos
from apache_beam.metrics.metric import MetricsFilter
from imagerecords import contract
from imagerecords import manifest_schema

import pipeline
from pipeline.options import STATS_TFT
from transforms.analysis import dedup, quality
from transforms.elements import METRICS_NAMESPACE, STAGE_DUPLICATE, STAGE_LIST, STAGE_MISSING
from transforms.files import working_folders
from transforms.files.folders import delete_tree, escape_pattern, files_under, is_local, match
from transforms.files.textfiles import read_text, replace_text, write_text
from transforms.outputs import authorship, claim
from transforms.outputs.metadata import FAILURE_BY_DESIGN_LINE, FAILURES_BY_DESIGN, RunFailed
from transforms.outputs.publish import PUBLICATION_MARKER

_LOG = logging.getLogger('imagerecords')


class OutputNotEmpty(RuntimeError):
  """The output directory holds files and ``--overwrite`` was not given."""




def _files_directly_in(directory: str) -> List[str]:
  """The paths of the entries directly in ``directory`` (local: files, links and folders; object
  stores: objects), taken literally; [] when it does not exist."""
  if is_local(directory):
    try:
      with os.scandir(directory) as entries:
        return [entry.path for entry in entries]
    except (FileNotFoundError, NotADirectoryError):
      return []
  pattern = FileSystems.join(escape_pattern(directory), '*')
  return [m.path for m in match(pattern)]


def existing_outputs(output_dir: str) -> List[str]:
  """Paths of what bears the name of something a run writes in ``output_dir`` (shards,
  metadata, the ``--stats=tft`` folders, a dead run's working folders:
  ``authorship.is_job_name``); never anything else, whatever its name."""
  found = []
  for path in _files_directly_in(output_dir):
    if authorship.is_job_name(path.rsplit('/', 1)[-1]):
      found.append(path)
  # object stores list the objects below a folder's name, not the folder
  for name in (*authorship.STATISTICS_DIRS, *working_folders.WORKING_FOLDERS):
    path = FileSystems.join(output_dir, name)
    if not is_local(path):
      found.extend(files_under(path))
  return sorted(set(found))


def entries_written(config) -> List[str]:
  """The names of the entries a run of ``config`` (the run's ``pipeline.config.JobConfig``,
  which imports this module through ``pipeline.nightly``) may write directly in its write
  folder (``config.output_dir``): what its output record names
  (``transforms.outputs.authorship``)."""
  shards = [contract.shard_file_name(split, index, count, config.compressed)
            for split, count in config.num_shards.items() for index in range(count)]
  tft = config.stats == STATS_TFT
  skipped = {contract.QUALITY_FILE} if not config.image_checks else set()
  if config.compressed:  # no TFDS metadata for GZIP shards (tfds_metadata.metadata_files)
    skipped |= {contract.TFDS_DATASET_INFO_FILE, contract.TFDS_FEATURES_FILE,
                contract.TFDS_CLASS_NAMES_FILE}
  return sorted({
      *shards, *(name + contract.DALI_INDEX_SUFFIX for name in shards if config.dali_index),
      *(name for name in authorship.METADATA_FILES if name not in skipped),
      *(authorship.STATISTICS_DIRS if tft else ()),
      *(name for name in working_folders.WORKING_FOLDERS
        if tft or name != working_folders.TFT_FOLDER),
      *((PUBLICATION_MARKER,) if config.publish_dir else ())})


def remove_working_folders(write_dir: str) -> None:
  """After a failed run: deletes its working folders in ``write_dir`` (staging records, shards
  not yet complete, sort runs, TFT's files), as far as it can; the manifest stays."""
  for name in working_folders.WORKING_FOLDERS:
    path = FileSystems.join(write_dir, name)
    try:
      delete_tree(path)
    except OSError as error:  # the next run clears them, or refuses without --overwrite
      _LOG.warning('could not remove %s: %s', path, error)


def prepare_output_dir(output_dir: str, overwrite: bool, entries: Sequence[str] = (),
                       run_id: str = '') -> None:
  """Refuses to mix two runs' files, and to touch any file the job did not write, then
  records what this run writes (``entries``, see :func:`entries_written`) in the folder's
  output record (``transforms.outputs.authorship``) before the run writes anything.

  What bears the job's names (:func:`existing_outputs`) must be named by the folder's record
  (or listed by an imagerecords ``manifest.json``, for an output of an older version);
  anything else of ``output_dir`` is never looked at. An earlier run's files are an error, or,
  with ``overwrite``, deleted (``_SUCCESS`` first, so no reader trusts a half-deleted
  directory). A local ``output_dir`` is then created by the launcher, so that the folder where
  it adds the runner's counters to manifest.json after the job is its own, also where the SDK
  workers run as another user (a worker pool in a container, as root: ``deploy/flink/``).

  Raises:
    NotWrittenByThisJob: a file or folder bearing one of the job's names was not written by
      it (a user's own ``manifest.json``, ``labels.txt``, ``transformed_metadata/``...); the
      message names them. Nothing is deleted, with or without ``overwrite``.
    OutputNotEmpty: files of an earlier, published run exist and ``overwrite`` is False (what
      a run that failed or was killed left is replaced without it, in one log line).
    OSError: the folder cannot be created.
  """
  found = existing_outputs(output_dir)
  authorship.refuse_foreign(output_dir, found, '--overwrite would replace or delete them, and '
                            'the run would write over them')
  if is_local(output_dir):
    os.makedirs(output_dir, exist_ok=True)
  if found and not overwrite and not _was_published(output_dir, found):
    _LOG.info('replacing the %d files of an earlier run in %s that failed or was interrupted '
              '(no %s, the manifest not complete)', len(found), output_dir,
              contract.SUCCESS_FILE)
    overwrite = True
  if found and not overwrite:
    raise OutputNotEmpty(
        f'{output_dir} already holds {len(found)} files of an earlier run '
        f'(e.g. {found[0]}); pass --overwrite to replace them')
  version = pipeline.__version__
  if found:
    # the record names the earlier run's entries too until they are gone: a deletion cut
    # short leaves them proven
    old = {authorship.entry_name(output_dir, path) for path in found}
    authorship.write_record(output_dir, [*entries, *old], run_id, version)
    authorship.delete_success_first(found)
    _LOG.info('deleted %d files of an earlier run in %s', len(found), output_dir)
  authorship.write_record(output_dir, entries, run_id, version)


def published_by(folder: str, run_id: str) -> bool:
  """Whether run ``run_id`` published ``folder``: its ``_SUCCESS`` is there and its output
  record (``transforms.outputs.authorship``, moved with the run on publication) names the run."""
  return (FileSystems.exists(FileSystems.join(folder, contract.SUCCESS_FILE))
          and authorship.record_run_id(folder) == run_id)


def _was_published(output_dir: str, found: Sequence[str]) -> bool:
  """Whether the job's files ``found`` in ``output_dir`` are a published run's (``_SUCCESS``
  among them, or a manifest whose status is ``complete``), which only ``--overwrite`` replaces;
  else they are what a run that failed or was killed left, which the next run replaces. A
  manifest that cannot be read counts as published: nothing is deleted on a guess."""
  names = {path.rstrip('/').rsplit('/', 1)[-1] for path in found}
  if contract.SUCCESS_FILE in names:
    return True
  if contract.MANIFEST_FILE not in names:
    return False
  try:
    manifest = read_manifest(output_dir)
  except (OSError, ValueError):
    return True
  return manifest is None or manifest.status == 'complete'


def _location(path: str) -> str:
  """``path`` as one comparable string: a local path made absolute with every link resolved
  (``os.path.realpath``; the parts that do not exist yet kept as they are); a URL with its
  scheme in lower case and no trailing ``/``. Object stores' keys are literal (``.``, ``..``
  and ``//`` are characters of a key there), so they are compared as written."""
  if is_local(path):
    return os.path.realpath(os.path.abspath(path))
  scheme, rest = path.split('://', 1)
  return f'{scheme.lower()}://{rest.rstrip("/")}'


def _within(inner: str, outer: str) -> bool:
  """True when the location ``inner`` is ``outer`` or below it (whole path components)."""
  separator = '/' if '://' in outer else os.sep
  return inner == outer or inner.startswith(outer.rstrip(separator) + separator)


def check_apart(input_dir: str, output_dir: str, run_date: Optional[str] = None) -> None:
  """Raises ValueError unless ``input_dir`` and ``output_dir`` (with ``run_date``: the root of
  the dated runs) are apart: neither is the other or inside it, compared as locations
  (:func:`_location`: local links resolved, ``gs://`` and ``s3://`` URLs as written). Checked
  at launch, before the run claims or writes anything.

  An output inside the input would be listed as input by the next run (and ``IN/train`` turns
  the input into split folders); an input inside the output (a dated run's root: its
  ``dt=DATE/`` folders included) is where the job writes, replaces and deletes.
  """
  source, target = _location(input_dir), _location(output_dir)
  output = f'--output_dir={output_dir}' + (
      f' (the root of the dated runs of --run_date={run_date})' if run_date else '')
  if source == target:
    raise ValueError(f'--input_dir={input_dir} and {output} are the same folder, {target}: the '
                     'job would write its records among the photos and read them back as '
                     'input on the next run; choose an output folder outside the input')
  if _within(target, source):
    raise ValueError(f'{output} is inside --input_dir={input_dir}: the next run would list the '
                     'records as input files (a folder named like a split, train/ or val/, '
                     'would even turn the input into split folders); choose an output folder '
                     'outside the input')
  if _within(source, target):
    raise ValueError(f'--input_dir={input_dir} is inside {output}, where the job writes, '
                     'replaces and deletes its output' + (
                         ' (its dt=DATE/ and _staging/ folders)' if run_date else '')
                     + '; move the input, or choose an output folder outside it')


def read_manifest(output_dir: str) -> Optional[manifest_schema.Manifest]:
  """The manifest.json of ``output_dir``, or None when there is none.

  Raises:
    ValueError: it is not JSON, or not a manifest (``manifest_schema.Manifest.from_json``).
  """
  path = FileSystems.join(output_dir, contract.MANIFEST_FILE)
  if not FileSystems.exists(path):
    return None
  return manifest_schema.Manifest.from_json(json.loads(read_text(path)))


def write_manifest(output_dir: str, manifest: manifest_schema.Manifest) -> None:
  """Replaces ``output_dir``'s manifest.json; a reader never sees half of it (locally a
  temporary file renamed over it, on object stores one object write)."""
  replace_text(FileSystems.join(output_dir, contract.MANIFEST_FILE),
               json.dumps(manifest.to_json(), indent=2, ensure_ascii=False))


def beam_counters(result) -> Dict[str, int]:
  """The job's Beam metrics (namespace ``imagerecords``): its counters (files listed, images
  read, converted, failed per stage, bytes read and written) and gauges (``images_to_convert``),
  as the runner reports them at the end: committed values where the runner has them, else
  attempted ones. {} when it reports none."""
  counters = {}
  try:
    queried = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
  except Exception as error:  # pylint: disable=broad-except
    # The boundary with each runner's metrics client (local, portable, Dataflow, Flink raise
    # their own types, NotImplementedError included): the counters only decorate a manifest
    # the job already wrote, so a runner without them costs a warning, never the run.
    _LOG.warning('the runner reported no metrics: %s: %s', type(error).__name__, error)
    return counters
  for counter in queried['counters']:
    value = counter.committed if counter.committed is not None else counter.attempted
    name = counter.key.metric.name
    counters[name] = counters.get(name, 0) + (value or 0)
  for gauge in queried.get('gauges', ()):  # the same value from every step that set it
    value = gauge.committed if gauge.committed is not None else gauge.attempted
    if value is not None and value.value is not None:
      counters[gauge.key.metric.name] = max(counters.get(gauge.key.metric.name, 0),
                                            int(value.value))
  return dict(sorted(counters.items()))


DATA_CHANNELS = '(data channels)'
"""The entry of ``step_msecs`` that holds the workers' time moving elements in and out of the
runner's data plane (decoding and encoding them), between the steps."""


def step_msecs(result) -> Optional[Dict[str, int]]:
  """Milliseconds each top-level step of the graph (``'convert images'``, ``'write shards'``,
  ...) spent running its own code, summed over its inner transforms and every worker (the
  steps that took at least 1 ms, costliest first). Elapsed time, as each worker's state
  sampler attributes it to the step it is in: on a machine whose cores are shared it includes
  the time the step waited for one, so it is CPU time only on a quiet machine. Beam's
  ``beam:metric:ptransform_execution_time:total_msecs`` monitoring infos (start, process and
  finish of each bundle), as Beam's local runner reports them (its state sampler attributes
  time in samples of 200 ms: a step of a few milliseconds may show none); None where the
  runner reports none (Dataflow and Flink show them in their own monitoring). The workers'
  reads and writes of the runner's data plane are one entry, ``DATA_CHANNELS``; what is in no
  entry is the runner's own work (its GroupByKeys, serving the data plane), start-up and the
  launcher's."""
  infos = getattr(result, 'monitoring_infos', None)
  if infos is None:
    return None
  totals: Dict[str, int] = {}
  try:
    for info in infos():
      if info.urn == monitoring_infos.TOTAL_MSECS_URN:
        step = info.labels.get(monitoring_infos.PTRANSFORM_LABEL, '').split('/', 1)[0]
        if step.startswith('ref_'):  # ref_PCollection_*: a worker's reads and writes of the
          step = DATA_CHANNELS       # runner's data plane, elements decoded and encoded
        if step:
          totals[step] = totals.get(step, 0) + monitoring_infos.extract_counter_value(info)
  except Exception as error:  # pylint: disable=broad-except
    # The same boundary as beam_counters: each runner's monitoring client raises its own
    # types; the step times only decorate a manifest the job already wrote.
    _LOG.warning('the runner reported no step times: %s: %s', type(error).__name__, error)
    return None
  return {step: msecs for step, msecs in sorted(totals.items(), key=lambda item: -item[1])
          if msecs} or None  # the steps that took at least a millisecond, costliest first


_SKIPPED_NOUNS = ((STAGE_LIST, 'file not taken for an image', 'files not taken for images'),
                  (STAGE_MISSING, 'label line without an image', 'label lines without an image'),
                  (STAGE_DUPLICATE, 'duplicate', 'duplicates'))
"""The stages of ``failures.jsonl`` that are not failed inputs (``transforms.elements.NOT_INPUTS``)
and what the summary calls one of their entries, and several."""


def counted(count: int, singular: str, plural: str = '') -> str:
  """``'1 file'``, ``'2 files'``, ``'9,900 label lines without an image'``: ``count`` with
  thousands separators and its noun, ``plural`` (default: ``singular`` and an ``s``) unless
  ``count`` is 1."""
  return f'1 {singular}' if count == 1 else f'{count:,} {plural or singular + "s"}'


SUMMARY_CLASSES = 8
"""Classes the console's summary counts per split; the others are named by their number."""
SUMMARY_WIDTH = dedup.SUMMARY_WIDTH
"""Columns the console's summary fits in (a terminal's default width), its duplicate lines too."""


def summary_table(splits: Dict[str, manifest_schema.SplitEntry],
                  classes: Sequence[str]) -> List[str]:
  """The summary's table: a column per split (at most as many as fit in SUMMARY_WIDTH, the
  others named by their number), rows of examples, shards and the examples of each of
  ``classes`` (names cut to fit)."""
  width = max([9] + [len(name) + 2 for name in splits])
  label = min(max([8] + [len(name) for name in classes]), 24)
  fit = max(1, (SUMMARY_WIDTH - 2 - label) // width)
  names = list(splits)[:fit]
  rows = [('examples', [splits[n].num_examples for n in names]),
          ('shards', [splits[n].num_shards for n in names])]
  rows += [(name, [splits[n].class_counts.get(name, 0) for n in names]) for name in classes]
  lines = [f'  {"":<{label}}' + ''.join(f'{name:>{width}}' for name in names)]
  lines += [f'  {title[:label]:<{label}}' + ''.join(f'{value:>{width},}' for value in values)
            for title, values in rows]
  if len(splits) > len(names):
    lines.append(f'  ... {counted(len(splits) - len(names), "more split", "more splits")}: '
                 'see manifest.json')
  return lines


def mask_classes(manifest: manifest_schema.Manifest) -> List[str]:
  """The class names a segmentation run's masks hold, in any split, in class id order: those
  ``manifest.classes`` names first (in its order, which is the ids'), then ``class <id>`` by
  id (``contract.mask_class_name``)."""
  found = {name for split in manifest.splits.values()
           for name, n in split.class_counts.items() if n}
  named = [name for name in manifest.classes if name in found]
  unnamed = sorted(found - set(named), key=lambda name: (len(name), name))  # 'class 10' last
  return named + unnamed


def summary(manifest: manifest_schema.Manifest, published: bool = True) -> str:
  """A few lines for people: examples per split and class, failures, where the output is.

  The title says ``imagerecords wrote N examples ... to OUTPUT`` only for a complete manifest
  of a run that was ``published`` (its ``_SUCCESS`` written; a dated run's moved into
  ``dt=DATE/``); any other says ``imagerecords FAILED: ... not published``, since a manifest
  may be complete and its run still fail after it (a full disk or a lost claim while
  publishing).
  """
  segmentation = manifest.task == contract.TASK_SEGMENTATION
  # segmentation: the classes the masks hold (examples whose mask holds each), named by
  # labels.txt where it names them, else 'class <id>'
  classes = mask_classes(manifest) if segmentation else manifest.classes
  shown = classes[:SUMMARY_CLASSES]
  lines = summary_table(manifest.splits, shown)
  if len(classes) > len(shown):
    lines.append(f'  ... {counted(len(classes) - len(shown), "more class", "more classes")}: '
                 'see manifest.json')
  by_stage = manifest.failures_by_stage
  skipped = [counted(by_stage[stage], singular, plural)
             for stage, singular, plural in _SKIPPED_NOUNS if by_stage.get(stage)]
  failed = ', '.join(f'{n} at {stage}' for stage, n in by_stage.items()
                     if stage not in {stage for stage, _, _ in _SKIPPED_NOUNS})
  lines.append(f'  {counted(manifest.num_failures, "input")} failed'
               + (f' ({failed})' if failed else '')
               + (f'; skipped: {", ".join(skipped)}' if skipped else '')
               + (f': see {contract.FAILURES_FILE}' if by_stage else ''))
  lines.extend(dedup.summary_lines(manifest.duplicates))  # duplicates and leakage
  lines.extend(quality.summary_lines(manifest.quality))  # flagged images
  seconds = manifest.timings.wall_time_s
  # no class names: an unlabeled run (--label_source=none), a segmentation run without them
  noun = ('mask class', 'mask classes') if segmentation else ('class', 'classes')
  what = counted(manifest.num_examples, 'example') + (
      f' in {counted(len(classes), *noun)}' if classes else '')
  if published and manifest.status == 'complete':
    title = f'imagerecords wrote {what} to {manifest.output_dir} in {seconds:.1f} s'
  else:
    title = f'imagerecords FAILED: {what} converted in {seconds:.1f} s, not published'
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
    return record.levelno >= logging.ERROR and RunFailed.__name__ not in text


_OUR_LOGGERS = ('imagerecords', 'pipeline', 'transforms')

LOG_FILE_ONLY = {'log_file_only': True}
"""``extra=`` of a log call whose record goes to the run's log file, not the console."""


class _ConsoleFilter(logging.Filter):
  """The console without ``--verbose`` drops other libraries' errors (a failing step's
  traceback, repeated by every layer of the runner): the run's last line says why it failed,
  and the log file holds them whole."""

  def filter(self, record):
    if getattr(record, 'log_file_only', False):
      return False
    return record.name.split('.')[0] in _OUR_LOGGERS or record.levelno < logging.ERROR


class _ConsoleFormatter(logging.Formatter):
  """The console without ``--verbose``: one line per record, never a traceback (other
  libraries' warnings shortened to their first line)."""

  def format(self, record):
    message = record.getMessage()
    if record.name.split('.')[0] not in _OUR_LOGGERS:
      message = message.split('\n', 1)[0][:300]
    return f'{self.formatTime(record, self.datefmt)} {record.levelname} {message}'


_FMT, _DATEFMT = '%(asctime)s %(levelname)s %(message)s', '%H:%M:%S'
_FORMAT = logging.Formatter(_FMT, datefmt=_DATEFMT)
_run_log_handlers: List[logging.Handler] = []
_kept_temporary_logs = set()


def configure_logging(verbose: bool = False) -> str:
  """INFO lines from this job, warnings and errors from everything else, on the console (only
  their first lines and no tracebacks unless ``verbose``) and, whole, in a log file of this run.

  Returns the log file's path (a local temporary file; :func:`keep_run_log` copies it beside
  the output when the run fails, :func:`close_run_log` ends it).
  """
  root = logging.getLogger()
  if not root.handlers:  # the command line (a test's or a host's logging stays as it is)
    console = logging.StreamHandler()
    console.set_name('imagerecords-console')
    root.addHandler(console)
    root.setLevel(logging.WARNING)
  for handler in root.handlers:
    if handler.get_name() == 'imagerecords-console':
      for old in [f for f in handler.filters if isinstance(f, _ConsoleFilter)]:
        handler.removeFilter(old)
      if not verbose:
        handler.addFilter(_ConsoleFilter())
      handler.setFormatter(_FORMAT if verbose else
                           _ConsoleFormatter(_FMT, datefmt=_DATEFMT))
  for name in ('imagerecords', 'pipeline', 'transforms'):
    logging.getLogger(name).setLevel(logging.INFO)
  forwarded = logging.getLogger('apache_beam.runners.portability.local_job_service')
  forwarded.setLevel(logging.INFO)
  if not any(isinstance(f, _WorkerLogFilter) for f in forwarded.filters):
    forwarded.addFilter(_WorkerLogFilter())
  close_run_log()
  fd, path = tempfile.mkstemp(prefix='imagerecords-run-', suffix='.log')
  os.close(fd)
  handler = logging.FileHandler(path, encoding='utf-8')
  handler.setFormatter(_FORMAT)
  handler.setLevel(logging.INFO)
  root.addHandler(handler)
  _run_log_handlers.append(handler)
  return path


def console_handler() -> Optional[logging.StreamHandler]:
  """The console handler :func:`configure_logging` set up, or None (a test's or a host's
  logging); while :func:`worker_output_to_log` runs, its stream is the terminal."""
  for handler in logging.getLogger().handlers:
    if handler.get_name() == 'imagerecords-console':
      return handler
  return None


@contextlib.contextmanager
def worker_output_to_log(log_path: str, verbose: bool):
  """While the pipeline runs, what is written to this process's standard error (file
  descriptor 2, which the local runner's worker processes inherit: their own tracebacks) goes
  to the run's log file; the console handler keeps writing to the terminal. A no-op with
  ``verbose``, and where the console is not this job's (tests, a host's logging)."""
  console = console_handler()
  if verbose or console is None:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  terminal = os.fdopen(os.dup(saved), 'w', buffering=1, encoding='utf-8', errors='replace')
  previous = console.setStream(terminal)
  log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)
  os.dup2(log_fd, 2)
  os.close(log_fd)
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    console.setStream(previous)
    terminal.close()


def close_run_log() -> None:
  """Detaches and closes the run's log file (started by :func:`configure_logging`)."""
  root = logging.getLogger()
  while _run_log_handlers:
    handler = _run_log_handlers.pop()
    root.removeHandler(handler)
    handler.close()


def keep_run_log(log_path: str, output_root: str, run_id: str) -> str:
  """Copies the run's log file into the output's working folder
  (``OUT/.imagerecords/run-<UTC time>-<run id>.log``) and returns where it is; where that
  cannot be written (a full disk), the local temporary file stays and its path is returned."""
  for handler in _run_log_handlers:
    handler.flush()
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
  target = FileSystems.join(output_root, claim.WORK_DIR, f'run-{stamp}-{run_id}.log')
  try:
    with open(log_path, encoding='utf-8', errors='replace') as handle:
      write_text(target, handle.read())
  except OSError:  # ENOSPC above all: the temporary file is the log
    _kept_temporary_logs.add(log_path)
    return log_path
  return target


def is_kept(log_path: str) -> bool:
  """True when the temporary log file ``log_path`` is the kept log of a failed run."""
  return log_path in _kept_temporary_logs


def is_claim_lost(error: BaseException) -> bool:
  """True when ``error`` is (or, from a worker, wraps) a ``ClaimLost``."""
  return isinstance(error, claim.ClaimLost) or any(
      found[1] == claim.ClaimLost.__name__ for found in FAILURE_BY_DESIGN_LINE.finditer(str(error)))


def failure_reason(error: BaseException, manifest: Optional[manifest_schema.Manifest],
                   lost: Optional[str],
                   write_dir: str = '') -> str:
  """One line on why a run failed: the run's own verdict (the manifest's ``error``), a lost
  claim, a full disk (naming the file, else ``write_dir``), or the error's type and last
  line.

  The local runner re-raises a worker's error as a RuntimeError holding the traceback's text,
  so the kind of error is recognised from the exception chain and from that text.
  """
  if manifest and manifest.status == 'failed' and manifest.error:
    return manifest.error
  if lost:
    return lost
  texts = []
  chain = error
  while chain is not None and len(texts) < 10:
    if isinstance(chain, OSError) and chain.errno == errno.ENOSPC:
      return f'disk full: no space left on the device (writing {chain.filename or write_dir})'
    texts.append(f'{type(chain).__name__}: {chain}')
    chain = chain.__cause__ or chain.__context__
  text = '\n'.join(texts)
  # each failure by design's first message, by name (reversed: the first one stays)
  messages = {kind: message.strip() for kind, message
              in reversed(FAILURE_BY_DESIGN_LINE.findall(text)) if message.strip()}
  reason = next((messages[kind] for kind in FAILURES_BY_DESIGN if kind in messages), None)
  if reason:
    return reason
  if 'No space left on device' in text or '[Errno 28]' in text:
    where = re.search(r"No space left on device: '([^']+)'", text)
    where = where.group(1) if where else write_dir
    return 'disk full: no space left on the device' + (f' (writing {where})' if where else '')
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return f'{type(error).__name__}: {lines[-1] if lines else ""}'[:500]
