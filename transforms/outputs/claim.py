"""One run per output at a time: the claim a run holds on its output directory (with
``--run_date``, on its date) from launch to the end.

    OUT/.imagerecords/claim.1                   a plain run's claim (generation 1)
    ROOT/.imagerecords/claim-dt=2026-11-21.4    a dated run's claim on its date (generation 4)

A claim is a small JSON file: the run's id, host, process id, start time, lease and the time of
its last heartbeat. The launcher creates it exclusively before it touches the output (before
``--overwrite`` deletes anything, before a dated run clears its staging folder), renews it from
a heartbeat thread every quarter of the lease, and deletes it when the run ends. A second run
that finds a live claim is refused with a message naming the claiming run.

A claim left by a run that died is taken over, without ``--overwrite``: at once when the claim
names a process of this host that is gone (or a reused process id: its start time differs),
else once its lease has passed without a heartbeat. Taking over never rewrites the old claim:
it creates the next generation (``claim.N+1``) exclusively, so of two runs that take over the
same dead claim exactly one wins, and a run that was only stalled, not dead, sees the newer
generation at its next heartbeat or check and fails ("lost the claim") instead of publishing.
The pipeline checks the claim (:func:`check`) before it writes ``_SUCCESS`` and before a dated
run is published, so a run that lost its claim never publishes.

Exclusive creation, the one primitive all of this needs, per filesystem:

* local disk: a temporary file hard-linked to the claim's name (``link`` fails when the name
  exists: atomic on local filesystems and NFS), falling back to ``O_CREAT | O_EXCL`` where
  hard links are not supported;
* ``s3://``: ``PutObject`` with ``If-None-Match: *`` (S3 conditional writes, August 2024);
  an S3-compatible server that ignores the header makes the create non-exclusive;
* ``gs://``: an upload with ``ifGenerationMatch=0``. Not exercised by the tests (no GCS
  emulator here). Both through ``transforms.files.conditional``;
* any other scheme: an existence check, then a write: not exclusive; a warning says so.

Limits: the lease is judged by the clock of the run that reads the claim against the heartbeat
time the holder wrote, so hosts sharing an output must agree on the time within the lease. A
runner that returns when the job is submitted (a Dataflow Flex Template launch) leaves no
launcher to renew the claim: it protects the launch and lapses one lease later. A process is
taken for gone when its host name and kernel boot id are this machine's and its process id is
not running (or is another process): containers that share an output, a kernel and a host name
but not their process ids must be given distinct host names (Docker's and Kubernetes'
default). Files the job writes in place before its checks (``images.jsonl``, ``transform_fn/``)
are not fenced: a run that lost its claim is stopped by its heartbeat, at once, not before.
"""

import json
import logging
import os
import posixpath
import re
import socket
import tempfile
import threading
import time
import uuid
from typing import Callable, List, NamedTuple, Optional, Tuple

from apache_beam.io.filesystems import FileSystems

from transforms.files import conditional
from transforms.files.folders import delete_paths, escape_pattern, is_local, match, match_literal
from transforms.files.textfiles import read_text, write_text

_LOG = logging.getLogger('imagerecords')

WORK_DIR = '.imagerecords'
"""The output's working folder: run claims and the logs of failed runs."""

DEFAULT_LEASE_S = 120.0
"""How long a claim lives without a heartbeat (``--claim_lease_seconds``)."""


class OutputClaimed(RuntimeError):
  """Another run, alive, holds the claim on this output (or date)."""


class ClaimLost(RuntimeError):
  """This run's claim was taken over by another run; its output must not be published."""


class ClaimToken(NamedTuple):
  """What identifies a held claim; small and picklable, so workers can :func:`check` it."""
  path: str
  run_id: str


def claim_name(run_date: Optional[str]) -> str:
  """The claim's file name without its generation: ``claim`` or ``claim-dt=DATE``."""
  return f'claim-dt={run_date}' if run_date else 'claim'


def _generation(name: str, base: str) -> Optional[int]:
  """N of a claim file named ``base.N``; None for any other name."""
  found = re.fullmatch(re.escape(base) + r'\.(\d+)', name)
  return int(found.group(1)) if found else None


def _generations(folder: str, base: str) -> List[Tuple[int, str]]:
  """(generation, path) of every claim file named ``base.N`` in ``folder``, oldest first."""
  if is_local(folder):
    try:
      names = os.listdir(folder)
    except FileNotFoundError:
      return []
    paths = [os.path.join(folder, name) for name in names]
  else:
    pattern = FileSystems.join(escape_pattern(folder), escape_pattern(base) + '.*')
    try:
      paths = [m.path for m in match(pattern)]
    except OSError:  # BeamIOError where nothing matches on some filesystems
      paths = []
  found = []
  for path in paths:
    generation = _generation(posixpath.basename(path), base)
    if generation is not None:
      found.append((generation, path))
  return sorted(found)


def _process_start(pid: int) -> Optional[str]:
  """The start time of process ``pid`` in clock ticks since boot (``/proc/PID/stat`` field 22),
  which tells a reused process id; None where it cannot be read (no such process, no /proc)
  and for a zombie (a process that ended, not yet reaped by its parent)."""
  try:
    with open(f'/proc/{pid}/stat', 'rb') as handle:
      fields = handle.read().rsplit(b')', 1)[1].split()
    return None if fields[0] == b'Z' else fields[19].decode()
  except (OSError, IndexError):
    return None


def _boot_id() -> str:
  """This kernel's boot id ('' where there is none): tells a rebooted host from itself."""
  try:
    with open('/proc/sys/kernel/random/boot_id', encoding='ascii') as handle:
      return handle.read().strip()
  except OSError:
    return ''


def _host() -> str:
  """This machine, as a claim names it: host name and kernel boot id."""
  return f'{socket.gethostname()}/{_boot_id()}'


def _gone_from_this_host(claim: dict) -> bool:
  """True when ``claim`` names a process of this host (same host name and boot) that is not
  running any more, or whose process id now belongs to another process."""
  if claim.get('host') != _host() or not isinstance(claim.get('pid'), int):
    return False
  pid = claim['pid']
  if os.path.isdir('/proc'):
    return _process_start(pid) != claim.get('pid_start')
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return True
  except OSError:  # PermissionError: a process of another user has that id; it lives
    return False
  return False


def _describe(claim: dict, now: float) -> str:
  """The claiming run in words, for the refusal."""
  started = time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(claim.get('started', 0)))
  beat = now - claim.get('heartbeat', 0)
  return (f'run {claim.get("run_id", "?")} (pid {claim.get("pid", "?")} on '
          f'{str(claim.get("host", "?")).split("/")[0]}, started {started}, last heartbeat '
          f'{beat:.0f} s ago, lease {claim.get("lease_s", 0):.0f} s)')


def _read_claim(path: str) -> Optional[dict]:
  """The claim at ``path``; None when it is gone. A file that is not a claim's JSON (a torn
  write on a filesystem without atomic replace, a stranger's file) counts as a claim of an
  unknown run renewed when the file was last modified, with the default lease."""
  try:
    text = read_text(path)
  except OSError:  # gone meanwhile (FileNotFoundError; BeamIOError on object stores)
    return None
  except UnicodeDecodeError:
    text = ''
  try:
    claim = json.loads(text)
  except ValueError:
    claim = None
  if not isinstance(claim, dict):
    metadata = match_literal(path)
    if metadata is None:
      return None
    claim = {'run_id': '?', 'heartbeat': metadata.last_updated_in_seconds,
             'lease_s': DEFAULT_LEASE_S}
  return claim


def _create_exclusive(path: str, text: str) -> bool:
  """Creates ``path`` holding ``text`` unless it exists; True when this call created it."""
  if is_local(path):
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=folder, prefix='.tmp-claim-')
    try:
      with os.fdopen(fd, 'w', encoding='utf-8') as handle:
        handle.write(text)
      try:
        os.link(temporary, path)
        return True
      except FileExistsError:
        return False
      except OSError:  # hard links not supported here (some FUSE mounts): exclusive open
        try:
          fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
          return False
        with os.fdopen(fd, 'w', encoding='utf-8') as handle:
          handle.write(text)
        return True
    finally:
      os.remove(temporary)
  if conditional.has_conditional_writes(path):  # s3://, gs://
    return conditional.write_if_version(path, text, None, content_type='application/json')
  _LOG.warning('%s: no exclusive create on %s://; two runs starting at the same moment may '
               'both claim this output', path, FileSystems.get_scheme(path))
  if FileSystems.exists(path):
    return False
  write_text(path, text)
  return True


def _replace(path: str, text: str) -> None:
  """Rewrites the claim file ``path`` (only its holder does): atomically locally, one object
  write on object stores."""
  if is_local(path):
    temporary = f'{path}.{os.getpid()}.tmp'
    with open(temporary, 'w', encoding='utf-8') as handle:
      handle.write(text)
    os.replace(temporary, path)
  else:
    write_text(path, text)


def check(token: Optional[ClaimToken]) -> None:
  """Raises ClaimLost unless the claim ``token`` names is still this run's and the newest.

  Called by the pipeline before anything is published (workers, any filesystem). A claim its
  launcher released (it ended, e.g. stopped by a signal while a cluster ran the job) counts as
  lost too. None (a pipeline built without a launcher's claim, in tests): no check.
  """
  if token is None:
    return
  folder, name = FileSystems.split(token.path)
  base = name.rsplit('.', 1)[0]
  newest = _generations(folder, base)
  if newest and newest[-1][1] != token.path:
    other = _read_claim(newest[-1][1]) or {}
    raise ClaimLost(f'lost the claim on the output: run {other.get("run_id", "?")} took it over '
                    f'from this run ({token.run_id}) in {newest[-1][1]}; this run publishes '
                    'nothing')
  claim = _read_claim(token.path)
  if claim is None or claim.get('run_id') != token.run_id:
    raise ClaimLost(f'lost the claim on the output: {token.path} no longer names this run '
                    f'({token.run_id}); another run took it over, so this run publishes nothing')
  if claim.get('released'):  # a job left running when its launcher was stopped
    raise ClaimLost(f'the launcher of this run ({token.run_id}) has ended and released its '
                    f'claim ({token.path}), so this run publishes nothing')


class Claim:
  """A claim this process holds (see the module docstring); made by :func:`acquire`."""

  def __init__(self, token: ClaimToken, record: dict, created: List[str],
               clock: Callable[[], float]):
    self.on_lost: Optional[Callable[[], None]] = None  # called once, from the heartbeat thread
    self.token = token
    self._record = record
    self._created = created  # local folders acquire() made, removed again when left empty
    self._clock = clock
    self._stop = threading.Event()
    self._thread = None
    self._lapsing = False
    self.lost: Optional[str] = None

  def renew(self) -> bool:
    """One heartbeat: checks the claim is still this run's, then rewrites its time. Returns
    False (and sets ``lost``) once it is not."""
    if self.lost:
      return False
    try:
      check(self.token)
    except ClaimLost as error:
      self.lost = str(error)
      _LOG.error('%s', error)
      if self.on_lost is not None:
        self.on_lost()
      return False
    self._record['heartbeat'] = self._clock()
    try:
      _replace(self.token.path, json.dumps(self._record))
    except OSError as error:  # a full disk, a network blip: the next beat tries again
      _LOG.warning('could not renew the claim %s: %s', self.token.path, error)
    return True

  def _beat(self, every_s: float) -> None:
    while not self._stop.wait(every_s):
      if not self.renew():
        return

  def start_heartbeat(self) -> None:
    """Renews the claim every quarter of its lease from a daemon thread, until :meth:`release`;
    calls ``on_lost`` when it finds the claim taken over (the launcher stops the run)."""
    every_s = max(self._record['lease_s'] / 4, 0.05)
    self._thread = threading.Thread(target=self._beat, args=(every_s,),
                                    name='imagerecords-claim-heartbeat', daemon=True)
    self._thread.start()

  def leave_to_lapse(self) -> None:
    """Stops the heartbeat and keeps the claim: it lapses one lease later. For a job that runs
    on after the launcher returns (a template launch): its own checks still hold until then."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    self._lapsing = True

  def release(self, forget: bool = False) -> None:
    """Stops the heartbeat and gives the claim up if it is still this run's.

    The claim file stays, marked released, so generations only grow and the next run takes
    it over at once by creating the next one (two runs starting then: one wins). ``forget``
    (a launch that stopped before writing anything) deletes it instead, and the folders
    :func:`acquire` created when they are left empty; a run starting in that instant may then
    claim a generation beside another's, and is told it lost the claim at its first check.
    """
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    if self._lapsing:
      return
    claim = _read_claim(self.token.path)
    if claim is None or claim.get('run_id') != self.token.run_id:
      return
    try:
      if forget:
        delete_paths([self.token.path])
      else:
        self._record['released'] = self._clock()
        _replace(self.token.path, json.dumps(self._record))
    except OSError as error:  # a full disk: the claim lapses with its lease instead
      _LOG.warning('could not release the claim %s: %s', self.token.path, error)
    if forget:
      for folder in reversed(self._created):
        try:
          os.rmdir(folder)
        except OSError:  # not empty (another run's claim, a log): it stays
          pass


def _missing_local_folders(folder: str) -> List[str]:
  """The folders of ``folder``'s path that do not exist yet, outermost first."""
  missing = []
  while folder and not os.path.exists(folder):
    missing.append(folder)
    parent = os.path.dirname(folder)
    if parent == folder:
      break
    folder = parent
  return list(reversed(missing))


def acquire(output_root: str, run_date: Optional[str], lease_s: float,
            clock: Callable[[], float] = time.time) -> Claim:
  """Claims ``output_root`` (with ``run_date``: that date of it) for this process.

  Returns the held Claim (its heartbeat not started yet). Takes over a claim of a dead run
  (see the module docstring), logging whose.

  Raises:
    OutputClaimed: a live run holds the claim; the message names it.
    OSError: the output cannot be written.
  """
  folder = FileSystems.join(output_root, WORK_DIR)
  base = claim_name(run_date)
  created = _missing_local_folders(folder) if is_local(folder) else []
  run_id = uuid.uuid4().hex[:12]
  record = {'run_id': run_id, 'host': _host(), 'pid': os.getpid(),
            'pid_start': _process_start(os.getpid()), 'started': clock(), 'heartbeat': clock(),
            'lease_s': lease_s, 'output_dir': output_root, 'run_date': run_date}
  for _ in range(10):  # each round: another run created a generation meanwhile
    generations = _generations(folder, base)
    taken_over = None
    if generations:
      newest, newest_path = generations[-1]
      claim = _read_claim(newest_path)
      if claim is not None:
        now = clock()
        dead = _gone_from_this_host(claim)
        expired = now - claim.get('heartbeat', 0) > claim.get('lease_s', 0)
        if not (claim.get('released') or dead or expired):
          what = f'--run_date={run_date} of {output_root}' if run_date else output_root
          raise OutputClaimed(
              f'{what} is in use by another {_describe(claim, now)}; wait for it to end (a '
              'run that died is taken over once its lease passes without a heartbeat)')
        if not claim.get('released'):
          taken_over = (claim, 'its process is gone' if dead else 'its lease expired')
      generation = newest + 1
    else:
      generation = 1
    path = FileSystems.join(folder, f'{base}.{generation}')
    if not _create_exclusive(path, json.dumps(record)):
      continue
    if taken_over:
      claim, why = taken_over
      _LOG.warning('took over the claim on %s of %s: %s', output_root, _describe(claim, clock()),
                   why)
    older = [p for _, p in generations]  # the newest of them included: this one is newer
    if older:
      try:
        delete_paths(older)
      except OSError as error:  # another taker deleted them first; they are stale either way
        _LOG.debug('older claims already gone: %s', error)
    return Claim(ClaimToken(path, run_id), record, created, clock)
  raise OutputClaimed(f'{output_root}: could not claim it; other runs keep claiming it')
