"""Where a dated run (``--run_date``) stages and publishes, decided by the launcher.

A nightly job writes one complete output directory per run date under one root::

    ROOT/
      dt=2026-11-19/ ... _SUCCESS      published runs, never modified by a later night
      dt=2026-11-20/ ... _SUCCESS
      _staging/dt=2026-11-21/          the run in progress: shards and metadata, no _SUCCESS
      LATEST                           'dt=2026-11-20': the newest published run

The pipeline writes into the staging directory. Its last step (``transforms.outputs.publish``) moves
the files into ``dt=DATE/``, writes ``_SUCCESS`` there and then points ``LATEST`` at it. A run
that fails or is killed leaves ``LATEST`` and every published run as they were; what it staged
has no ``_SUCCESS`` and is cleared by the next run of the same date, wherever it died (listing,
converting, the statistics, writing shards or metadata, publishing): a scheduler's automatic
retry reruns the date to completion without ``--overwrite``. What it clears or replaces is only
what the job wrote: each of ``_staging/dt=DATE/`` and ``dt=DATE/`` holds the output record of
the run that wrote it (``transforms.outputs.authorship``), and anything the record does not
name stops the launch (exit 2) instead of being deleted.
"""

import datetime
import logging
import posixpath
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

from apache_beam.io.filesystems import FileSystems
from imagerecords import contract
from imagerecords import manifest_schema

from pipeline.outputs import read_manifest
from transforms.files.folders import escape_pattern, match
from transforms.outputs.authorship import own_folder_contents, remove_empty_folder
from transforms.outputs.publish import read_latest

_LOG = logging.getLogger('imagerecords')


class AlreadyPublished(RuntimeError):
  """The run date already has a complete output and ``--overwrite`` was not given."""


class RunLayout(NamedTuple):
  """The directories of one dated run (all under the same root, any filesystem Beam knows).

  root: the ``--output_dir`` given. publish_dir: ``ROOT/dt=DATE``. staging_dir:
  ``ROOT/_staging/dt=DATE``. previous_dir: the newest published run dated before this one
  (None on the first night); its ``labels.txt`` pins class ids and its ``images.jsonl`` is
  what the manifest's diff compares with.
  """
  root: str
  run_date: str
  publish_dir: str
  staging_dir: str
  previous_dir: Optional[str]


def check_run_date(text: str) -> str:
  """``text`` if it is a real calendar date written ``YYYY-MM-DD``; else ValueError."""
  if not contract.RUN_DATE_RE.match(text or ''):
    raise ValueError(f'--run_date={text!r}: expected YYYY-MM-DD (e.g. Airflow\'s {{{{ ds }}}})')
  try:
    datetime.date.fromisoformat(text)
  except ValueError as error:
    raise ValueError(f'--run_date={text!r}: {error}') from None
  return text


def plan_run(root: str, run_date: str, overwrite: bool) -> RunLayout:
  """Decides the run's directories, checks that what its publication will replace is the
  job's, and clears what an earlier, unfinished run of the same date staged.

  Raises:
    ValueError: ``run_date`` is not a ``YYYY-MM-DD`` date.
    AlreadyPublished: ``ROOT/dt=DATE/_SUCCESS`` exists and ``overwrite`` is False. (With
      ``overwrite`` the published run stays readable until the new one replaces it.)
    NotWrittenByThisJob: ``ROOT/dt=DATE/`` or ``ROOT/_staging/dt=DATE/`` holds an entry that
      no output record there names (``transforms.outputs.authorship``: photos of a data lake
      laid out by date, a user's files), or ``ROOT/LATEST`` is not the job's pointer; the
      message names them, and nothing was deleted.
  """
  check_run_date(run_date)
  read_latest(root)  # NotWrittenByThisJob: publication would replace a LATEST not the job's
  publish_dir = FileSystems.join(root, contract.run_dir_name(run_date))
  if (FileSystems.exists(FileSystems.join(publish_dir, contract.SUCCESS_FILE))
      and not overwrite):
    raise AlreadyPublished(
        f'{publish_dir} is already published (it has {contract.SUCCESS_FILE}); '
        'pass --overwrite to replace it')
  # an earlier run's, or what a launch killed while publishing moved there: publication
  # deletes it (not yet: a published run stays readable until the new one replaces it)
  own_folder_contents(publish_dir, f'publishing --run_date={run_date} would delete them')
  staging_dir = FileSystems.join(root, contract.STAGING_DIR, contract.run_dir_name(run_date))
  leftovers = own_folder_contents(
      staging_dir, 'the run would clear them as the files of an unfinished run of the date')
  if leftovers.files or leftovers.record:
    # whatever a dead attempt of this date left (shards, metadata, the working folders of the
    # shard writer, the statistics and the index, empty folders): never a reason to stop
    _LOG.info('clearing %d entries an unfinished run staged in %s', len(leftovers.files),
              staging_dir)
    leftovers.delete()
  remove_empty_folder(staging_dir)
  return RunLayout(root, run_date, publish_dir, staging_dir, previous_run(root, run_date))


def previous_run(root: str, run_date: str) -> Optional[str]:
  """The newest published run (one with ``_SUCCESS``) dated before ``run_date``, or None."""
  pattern = FileSystems.join(escape_pattern(root), f'{contract.RUN_DIR_PREFIX}*',
                             contract.SUCCESS_FILE)
  dates = []
  for metadata in match(pattern):
    name = posixpath.basename(posixpath.dirname(metadata.path.replace('\\', '/')))
    date = name[len(contract.RUN_DIR_PREFIX):]
    if contract.RUN_DATE_RE.match(date) and date < run_date:
      dates.append(date)
  if not dates:
    return None
  return FileSystems.join(root, contract.run_dir_name(max(dates)))



class IncrementalPlan(NamedTuple):
  """How a dated night reuses the previous run, decided at launch (``plan_incremental``).

  previous_run: the previous published run, or None on the first night. reuse: whether
  unchanged images' records are copied from it (``transforms.outputs.incremental``); when False,
  ``reason`` says why every image is converted. previous_index: its ``images.jsonl``.
  previous_shards: the paths of all its shards. settings: this night's conversion settings
  (``pipeline.options.conversion_settings``), kept in the manifest for the next night.
  """
  previous_run: Optional[str]
  reuse: bool
  reason: Optional[str]
  previous_index: Optional[str]
  previous_shards: Tuple[str, ...]
  settings: Dict[str, object]

  def manifest_section(self) -> manifest_schema.IncrementalSection:
    """The manifest's ``incremental`` section, less the counts the pipeline adds
    (``transforms.outputs.incremental.NightCounts.add_to``)."""
    return manifest_schema.IncrementalSection(
        previous_run=self.previous_run, reused_from=self.previous_run if self.reuse else None,
        full_rebuild_reason=self.reason, settings=self.settings)


def plan_incremental(previous_dir: Optional[str], settings: Dict[str, object],
                     label_map: Sequence[str], full_rebuild: bool) -> IncrementalPlan:
  """Decides whether a dated night reuses the records of ``previous_dir``, and logs why not.

  A night rebuilds fully when there is no previous run, with ``--full_rebuild``, when the
  previous run did not record its conversion settings (an older version) or recorded other
  ones (``settings``: image size, format, quality, resize mode, channels, background, label
  source, masks, the record format and tool versions), when its classes would not keep their
  ids (``label_map`` must start with the previous run's ``labels.txt``), or when its
  ``images.jsonl`` is missing.

  Raises:
    UnreadableFile, ReadFailed: the previous run's manifest cannot be read
      (``transforms.files.reads``).
  """
  def full(reason):
    if previous_dir:
      _LOG.info('full rebuild: %s', reason)
    return IncrementalPlan(previous_dir, False, reason, None, (), settings)

  if previous_dir is None:
    return full('the first night: no earlier published run')
  if full_rebuild:
    return full('--full_rebuild')
  manifest = read_manifest(previous_dir)
  if manifest is None:
    return full(f'{previous_dir} has no {contract.MANIFEST_FILE}')
  before = manifest.incremental and manifest.incremental.settings
  if before is None:
    return full(f'{previous_dir} was written by a version that did not record its settings')
  changed = [f'{name} {before.get(name)!r} -> {value!r}' for name, value in settings.items()
             if before.get(name) != value]
  if changed:
    return full(f'the conversion settings changed since {previous_dir}: ' + ', '.join(changed))
  classes = manifest.classes
  if list(label_map[:len(classes)]) != list(classes):
    return full(f'class ids would change: the label map does not start with the classes of '
                f'{previous_dir}')
  index = FileSystems.join(previous_dir, contract.IMAGES_INDEX_FILE)
  if not FileSystems.exists(index):
    return full(f'{previous_dir} has no {contract.IMAGES_INDEX_FILE}')
  shards = tuple(FileSystems.join(previous_dir, shard.file)
                 for info in manifest.splits.values() for shard in info.shards)
  _LOG.info('incremental night: unchanged images reuse their records of %s', previous_dir)
  return IncrementalPlan(previous_dir, True, None, index, shards, settings)
