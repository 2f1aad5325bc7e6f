"""Where a dated run (``--run_date``) stages and publishes, decided by the launcher.

A nightly job writes one complete output directory per run date under one root::

    ROOT/
      dt=2026-11-19/ ... _SUCCESS      published runs, never modified by a later night
      dt=2026-11-20/ ... _SUCCESS
      _staging/dt=2026-11-21/          the run in progress: shards and metadata, no _SUCCESS
      LATEST                           'dt=2026-11-20': the newest published run

The pipeline writes into the staging directory. Its last step (``transforms.publish``) moves
the files into ``dt=DATE/``, writes ``_SUCCESS`` there and then points ``LATEST`` at it. A run
that fails or is killed leaves ``LATEST`` and every published run as they were; what it staged
has no ``_SUCCESS`` and is cleared by the next run of the same date.
"""

import datetime
import logging
import posixpath
from typing import NamedTuple, Optional

from apache_beam.io.filesystems import FileSystems
from imagerecords import contract

from transforms.folders import delete_paths, escape_pattern, files_under, match

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
  """Decides the run's directories and clears what an earlier, unfinished run of the same
  date staged.

  Raises:
    ValueError: ``run_date`` is not a ``YYYY-MM-DD`` date.
    AlreadyPublished: ``ROOT/dt=DATE/_SUCCESS`` exists and ``overwrite`` is False. (With
      ``overwrite`` the published run stays readable until the new one replaces it.)
  """
  check_run_date(run_date)
  publish_dir = FileSystems.join(root, contract.run_dir_name(run_date))
  if (FileSystems.exists(FileSystems.join(publish_dir, contract.SUCCESS_FILE))
      and not overwrite):
    raise AlreadyPublished(
        f'{publish_dir} is already published (it has {contract.SUCCESS_FILE}); '
        'pass --overwrite to replace it')
  staging_dir = FileSystems.join(root, contract.STAGING_DIR, contract.run_dir_name(run_date))
  leftovers = files_under(staging_dir)
  if leftovers:
    _LOG.info('clearing %d files an unfinished run staged in %s', len(leftovers), staging_dir)
    delete_paths(leftovers)
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

