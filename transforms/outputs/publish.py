"""Publish a dated run: move the staged output into place, ``_SUCCESS`` last, then ``LATEST``.

    PCollection[manifest dict] (one element, only when the metadata step succeeded)
      -> ROOT/_staging/dt=DATE/*  moved to  ROOT/dt=DATE/*
      -> ROOT/dt=DATE/_SUCCESS
      -> ROOT/LATEST = 'dt=DATE'   (unless a newer date is already published)

It is the pipeline's last step rather than the launcher's, so a run publishes on every runner,
also where the launching process does not wait for the job (a Dataflow Flex Template launch).
The move is one directory rename on a local filesystem; on object stores (``gs://``, ``s3://``)
it is Beam's per-file rename (copy + delete): the run's files appear one by one, and readers
ignore the directory until ``_SUCCESS`` appears. An earlier run of the same date (only reached
with ``--overwrite``) loses its ``_SUCCESS`` first and then every file, so no shard of an older
shard count stays behind.
"""

import logging
import os
import posixpath
import shutil
from typing import List

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from imagerecords import contract

from transforms.files.folders import delete_paths, files_under
from transforms.files.textfiles import read_text, replace_text, write_text
from transforms.outputs import claim as run_claim

_LOG = logging.getLogger(__name__)


def delete_success_first(paths: List[str]) -> None:
  """Deletes ``paths`` (files or folders of one output directory), its ``_SUCCESS`` marker
  before anything else, so that no reader trusts a half-deleted directory."""
  success = [p for p in paths
             if posixpath.basename(p.replace('\\', '/')) == contract.SUCCESS_FILE]
  if success:
    delete_paths(success)
  rest = [p for p in paths if p not in success]
  if rest:
    delete_paths(rest)


def _move_tree(source: str, destination: str) -> int:
  """Moves every file below ``source`` to the same relative path below ``destination``
  (which must not hold files); returns the number of files moved."""
  files = files_under(source)
  if '://' not in source:  # a local filesystem renames a whole directory at once
    if os.path.isdir(destination):
      shutil.rmtree(destination)
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    os.rename(source, destination)
    try:
      os.rmdir(os.path.dirname(source))  # ROOT/_staging, once no other date stages there
    except OSError:
      pass
    return len(files)
  prefix = len(source.rstrip('/')) + 1
  FileSystems.rename(files, [FileSystems.join(destination, f[prefix:]) for f in files])
  return len(files)


def point_latest(root: str, run_dir_name: str) -> bool:
  """Writes ``ROOT/LATEST`` = ``run_dir_name`` unless it already names a newer run (a backfill
  of an older date does not move it back); returns whether it was written.

  Readers never see a half-written pointer (``textfiles.replace_text``).
  """
  latest = FileSystems.join(root, contract.LATEST_FILE)
  if FileSystems.exists(latest):
    current = read_text(latest).strip()
    if current > run_dir_name:
      return False
  replace_text(latest, run_dir_name + '\n')
  return True


_OLD_RUN_DELETED = '_OLD_RUN_DELETED'


class _PublishFn(beam.DoFn):
  """manifest -> manifest, after the staged run is published (see the module docstring).

  Safe to retry (runners retry a failed bundle): an earlier run of the date is deleted once,
  which a marker file holding this run's id records (first in staging, then moved with the
  rest); files already moved stay; and when nothing is left in staging, the move is done and
  only ``_SUCCESS`` and ``LATEST`` remain. The marker of another launch (one killed while
  publishing) does not count: what that launch left in ``dt=DATE/`` is deleted like any earlier
  run's files.
  """

  def __init__(self, root: str, staging_dir: str, publish_dir: str, claim=None,
               run_id: str = ''):
    self._root = root
    self._staging_dir = staging_dir
    self._publish_dir = publish_dir
    self._claim = claim
    self._run_id = run_id

  def _marked_by_this_run(self, marker: str) -> bool:
    return FileSystems.exists(marker) and read_text(marker) == self._run_id

  def process(self, manifest):
    run_claim.check(self._claim)  # ClaimLost: another run owns the date now; publish nothing
    staged = files_under(self._staging_dir)
    marker = FileSystems.join(self._staging_dir, _OLD_RUN_DELETED)
    if not staged:  # a retry after the move: only _SUCCESS and LATEST may be missing
      if not FileSystems.exists(FileSystems.join(self._publish_dir, contract.MANIFEST_FILE)):
        raise RuntimeError(f'nothing staged in {self._staging_dir} and nothing published in '
                           f'{self._publish_dir}')
      moved = 0
    else:
      published_marker = FileSystems.join(self._publish_dir, _OLD_RUN_DELETED)
      if not (self._marked_by_this_run(marker) or self._marked_by_this_run(published_marker)):
        self._delete_earlier_run()  # not yet done by an earlier attempt of this step
        write_text(marker, self._run_id)
      moved = _move_tree(self._staging_dir, self._publish_dir) - 1
      delete_paths([published_marker])  # moved with the rest; not part of the run
    write_text(FileSystems.join(self._publish_dir, contract.SUCCESS_FILE), '')
    name = posixpath.basename(self._publish_dir.replace('\\', '/').rstrip('/'))
    if point_latest(self._root, name):
      _LOG.info('published %d files to %s; LATEST -> %s', moved, self._publish_dir, name)
    else:
      _LOG.info('published %d files to %s; LATEST names a newer run and stays',
                moved, self._publish_dir)
    yield manifest

  def _delete_earlier_run(self):
    """Deletes an earlier run of the date (published: only reached with --overwrite; or what a
    launch killed while publishing moved there, without _SUCCESS), _SUCCESS first."""
    old = files_under(self._publish_dir)
    if not old:
      return
    delete_success_first(old)
    _LOG.info('deleted %d files of the earlier run in %s', len(old), self._publish_dir)


class PublishRun(beam.PTransform):
  """PCollection[manifest] (the metadata step's one element) -> the same, once published.

  Args:
    root: the root of the dated runs (``--output_dir``).
    staging_dir: ``ROOT/_staging/dt=DATE``, where the pipeline wrote the run.
    publish_dir: ``ROOT/dt=DATE``.
    claim: the run's ``transforms.outputs.claim.ClaimToken`` on its date, checked before publishing;
      None: no check.
    run_id: this launch's id (unique per launch), written in the publication's marker.
  """

  def __init__(self, root: str, staging_dir: str, publish_dir: str, claim=None,
               run_id: str = ''):
    super().__init__()
    self._args = (root, staging_dir, publish_dir, claim, run_id)

  def expand(self, manifests):
    return manifests | 'move into place, _SUCCESS, LATEST' >> beam.ParDo(_PublishFn(*self._args))
