"""Publish a dated run: move the staged output into place, ``_SUCCESS`` last, then ``LATEST``.

    PCollection[manifest dict] (one element, only when the metadata step succeeded)
      -> ROOT/_staging/dt=DATE/*  moved to  ROOT/dt=DATE/*
      -> ROOT/dt=DATE/_SUCCESS
      -> ROOT/LATEST = 'dt=DATE'   (unless a newer date is already published)

It is the pipeline's last step rather than the launcher's, so a run publishes on every runner,
also where the launching process does not wait for the job (a Dataflow Flex Template launch).
The move is one directory rename on a local filesystem; on object stores (``gs://``, ``s3://``)
it is Beam's per-file rename (copy + delete): the run's files appear one by one, and readers
ignore the directory until ``_SUCCESS`` appears; the run's output record
(``transforms.outputs.authorship``) moves first, so a move cut short leaves only proven files.
An earlier run of the same date (only reached with ``--overwrite``, or what a launch killed
while publishing moved there) loses its ``_SUCCESS`` first, then every entry its output record
names, then the record, so no shard of an older shard count stays behind. An entry that no
record names is not the job's: the step fails (the run exits 1) and deletes nothing.
``LATEST`` only moves forward, also with several dates publishing at once (:func:`point_latest`).
"""

import contextlib
import fcntl
import logging
import os
import posixpath
from typing import Iterator, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from imagerecords import contract

from transforms.files import conditional
from transforms.files.folders import delete_paths, files_under, is_local
from transforms.files.textfiles import read_text, replace_text, write_text
from transforms.outputs import authorship
from transforms.outputs import claim as run_claim

_LOG = logging.getLogger(__name__)


def _move_tree(source: str, destination: str) -> None:
  """Moves every file below ``source`` to the same relative path below ``destination``
  (which must hold no file), the output record first.

  Raises:
    NotWrittenByThisJob: ``destination`` is not empty (something came there after the
      earlier run was deleted); nothing is moved.
  """
  if '://' not in source:  # a local filesystem renames a whole directory at once
    left = authorship.remove_empty_folder(destination)
    if left:
      raise authorship.NotWrittenByThisJob(
          f'{destination} holds {", ".join(left)}, which came there after the earlier run was '
          'deleted: not written by imagerecords; the run publishes nothing over it')
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    os.rename(source, destination)
    # ROOT/_staging, once no other date stages there
    authorship.remove_empty_folder(os.path.dirname(source))
    return
  files = files_under(source)
  prefix = len(source.rstrip('/')) + 1
  record = authorship.record_path(source)
  # the record first: whatever of the run is in destination/ is proven by it, if the move is
  # cut short
  for group in ([f for f in files if f == record], [f for f in files if f != record]):
    if group:
      FileSystems.rename(group, [FileSystems.join(destination, f[prefix:]) for f in group])


LATEST_LOCK = 'LATEST.lock'
"""The lock file (in ``ROOT/.imagerecords/``) that local publishers take turns on."""

CAS_ATTEMPTS = 100
"""How often :func:`point_latest` reads and swaps again on an object store, each time because
another publisher wrote ``LATEST`` in between."""


def read_latest(root: str) -> Optional[str]:
  """The run ``ROOT/LATEST`` names (``dt=YYYY-MM-DD``), or None when there is none.

  Raises:
    NotWrittenByThisJob: ``LATEST`` holds anything else: not the job's pointer (a user's own
      file of that name), which the job never replaces.
  """
  latest = FileSystems.join(root, contract.LATEST_FILE)
  if not FileSystems.exists(latest):
    return None
  return _run_name(latest, read_text(latest))


def _run_name(latest: str, text: Optional[str]) -> Optional[str]:
  """The run name ``text`` (the content of ``latest``) holds; None for no file."""
  if text is None:
    return None
  name = text.strip()
  date = name[len(contract.RUN_DIR_PREFIX):]
  if not (name.startswith(contract.RUN_DIR_PREFIX) and contract.RUN_DATE_RE.match(date)):
    raise authorship.NotWrittenByThisJob(
        f'{latest} holds {name[:40]!r}, not the name of a published run '
        f'({contract.RUN_DIR_PREFIX}YYYY-MM-DD): not written by imagerecords, and the job '
        'replaces only its own LATEST: move it away, or choose another --output_dir')
  return name


@contextlib.contextmanager
def _turn_on_local_latest(root: str) -> Iterator[None]:
  """Holds an exclusive ``flock`` on ``ROOT/.imagerecords/LATEST.lock`` while the block runs:
  local publishers (threads, processes, hosts sharing an NFS mount) take turns. The lock goes
  with its holder's process, so a publisher that dies leaves no lock behind."""
  folder = os.path.join(root, run_claim.WORK_DIR)
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, LATEST_LOCK), 'a', encoding='utf-8') as handle:
    try:
      fcntl.flock(handle, fcntl.LOCK_EX)
    except OSError as error:  # ENOLCK, EOPNOTSUPP: a filesystem without locks (FUSE mounts)
      _LOG.warning('%s: no lock on this filesystem (%s); two runs publishing at the same '
                   'moment may move LATEST back', root, error)
    yield  # closing the file releases the lock


def point_latest(root: str, run_dir_name: str) -> bool:
  """Moves ``ROOT/LATEST`` forward to ``run_dir_name``: writes it unless it already names this
  run or a newer one (a backfill of an older date does not move it back); returns whether it
  was written. Readers never see a half-written pointer (``textfiles.replace_text``).

  It only moves forward, also when runs of several dates publish at the same moment: the
  value left is the newest of theirs and the one before. Per filesystem:

  * local disk (and NFS): the read, the comparison and the write hold an exclusive ``flock``
    on ``ROOT/.imagerecords/LATEST.lock``, so publishers take turns; a publisher that dies
    releases it with its process. A filesystem without locks: a warning, unlocked;
  * ``s3://``, ``gs://``: compare-and-swap: the write is conditional on the version read
    (S3's ETag, GCS's generation; ``transforms.files.conditional``); when another publisher
    wrote in between, it is read and compared again (``CAS_ATTEMPTS`` times at most);
  * any other filesystem: read, compare and write with no lock; a warning says so.

  Raises:
    NotWrittenByThisJob: ``LATEST`` holds something other than a run's name (see
      :func:`read_latest`); it is left as it is.
    RuntimeError: on an object store, ``LATEST`` changed under every one of the attempts.
  """
  latest = FileSystems.join(root, contract.LATEST_FILE)
  if conditional.has_conditional_writes(latest):
    for _ in range(CAS_ATTEMPTS):
      text, version = conditional.read_versioned(latest)
      current = _run_name(latest, text)
      if current is not None and current >= run_dir_name:
        return False
      if conditional.write_if_version(latest, run_dir_name + '\n', version):
        return True
    raise RuntimeError(f'{latest} changed under each of {CAS_ATTEMPTS} attempts to point it at '
                       f'{run_dir_name}')
  if is_local(latest):
    turn = _turn_on_local_latest(root)
  else:
    _LOG.warning('%s: no conditional writes on %s://; two runs publishing at the same moment '
                 'may move LATEST back', latest, FileSystems.get_scheme(latest))
    turn = contextlib.nullcontext()
  with turn:
    current = read_latest(root)
    if current is not None and current >= run_dir_name:
      return False
    replace_text(latest, run_dir_name + '\n')
  return True


PUBLICATION_MARKER = '_OLD_RUN_DELETED'
"""The marker a publication writes in staging once it deleted the earlier run of the date:
the run's id (see :class:`_PublishFn`)."""


class _PublishFn(beam.DoFn):
  """manifest -> manifest, after the staged run is published (see the module docstring).

  Safe to retry (runners retry a failed bundle): an earlier run of the date is deleted once,
  which a marker file holding this run's id records (first in staging, then moved with the
  rest); files already moved stay; and when nothing is left in staging, the move is done and
  only ``_SUCCESS`` and ``LATEST`` remain. The marker of another launch (one killed while
  publishing) does not count: what that launch left in ``dt=DATE/`` is deleted like any earlier
  run's files, as far as its output record proves them its own
  (``transforms.outputs.authorship``); anything else there fails the run and is kept.
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
    marker = FileSystems.join(self._staging_dir, PUBLICATION_MARKER)
    if not staged:  # a retry after the move: only _SUCCESS and LATEST may be missing
      if not FileSystems.exists(FileSystems.join(self._publish_dir, contract.MANIFEST_FILE)):
        raise RuntimeError(f'nothing staged in {self._staging_dir} and nothing published in '
                           f'{self._publish_dir}')
      moved = 0
    else:
      published_marker = FileSystems.join(self._publish_dir, PUBLICATION_MARKER)
      if not (self._marked_by_this_run(marker) or self._marked_by_this_run(published_marker)):
        self._delete_earlier_run()  # not yet done by an earlier attempt of this step
        write_text(marker, self._run_id)
      _move_tree(self._staging_dir, self._publish_dir)
      moved = len([f for f in staged if f not in (
          marker, authorship.record_path(self._staging_dir))])  # the run's own files
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
    launch killed while publishing moved there, without _SUCCESS), _SUCCESS first and its
    output record last.

    Raises:
      NotWrittenByThisJob: ``dt=DATE/`` holds an entry its record does not name (checked at
        launch too, so it came later); nothing is deleted.
    """
    old = authorship.own_folder_contents(
        self._publish_dir, 'publishing would delete them to replace the earlier run')
    if not old.files and not old.record:
      return
    old.delete()
    _LOG.info('deleted %d entries of the earlier run in %s', len(old.files), self._publish_dir)


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
