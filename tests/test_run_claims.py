"""One run per output at a time (issue 12, case 6): two real runs (``python -m pipeline.run``
subprocesses) on one output, or on one date, on real photos.

The first run is frozen with SIGSTOP as soon as its claim exists, so the second one meets a
live, claiming run whatever the machine's speed; SIGCONT lets it finish. A run killed with
SIGKILL, and one frozen for longer than its lease, show the two ways a claim is taken over.
"""

import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO, SAMPLES, manifest_of
from transforms.outputs import claim

FLAGS = ('--image_size=32', '--resize_mode=center_crop', '--stats=false')
TIMEOUT_S = 600


def _env() -> dict:
  return dict(os.environ, PYTHONPATH=f'{REPO}{os.pathsep}{REPO / "reader"}')


def _command(out, *flags):
  return [sys.executable, '-m', 'pipeline.run', f'--input_dir={SAMPLES}', f'--output_dir={out}',
          *FLAGS, *flags]


def _start(log: pathlib.Path, out, *flags) -> subprocess.Popen:
  with open(log, 'wb') as handle:
    return subprocess.Popen(_command(out, *flags), cwd=REPO, env=_env(), stdout=handle,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _run(out, *flags) -> subprocess.CompletedProcess:
  return subprocess.run(_command(out, *flags), cwd=REPO, env=_env(), capture_output=True,
                        text=True, timeout=TIMEOUT_S, check=False)


def _frozen_once_claimed(process: subprocess.Popen, path: pathlib.Path, log: pathlib.Path) -> dict:
  """Waits until ``process`` has written its claim ``path``, freezes it (SIGSTOP) and returns
  the claim."""
  deadline = time.monotonic() + TIMEOUT_S
  while not path.exists():
    if process.poll() is not None or time.monotonic() > deadline:
      pytest.fail(f'the first run never claimed {path}:\n{log.read_text()[-3000:]}')
    time.sleep(0.02)
  process.send_signal(signal.SIGSTOP)
  return json.loads(path.read_text())


def _finish(process: subprocess.Popen) -> int:
  process.send_signal(signal.SIGCONT)
  return process.wait(timeout=TIMEOUT_S)


def _last_line(text: str) -> str:
  return text.strip().splitlines()[-1]


def _digests(root: pathlib.Path) -> dict:
  return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(root.rglob('*')) if p.is_file() and claim.WORK_DIR not in p.parts}


@pytest.mark.slow
def test_a_second_run_on_the_same_output_is_refused_naming_the_first(tmp_path):
  out, log = tmp_path / 'out', tmp_path / 'first.log'
  first = _start(log, out, '--num_shards=2')
  try:
    holder = _frozen_once_claimed(first, out / claim.WORK_DIR / 'claim.1', log)
    second = _run(out, '--num_shards=3', '--overwrite')
  finally:
    status = _finish(first)
  assert second.returncode == 2, second.stderr[-3000:]
  refusal = _last_line(second.stderr)
  assert 'in use by another run' in refusal
  assert holder['run_id'] in refusal and f'pid {first.pid}' in refusal
  assert status == 0, log.read_text()[-3000:]
  # only the first run's files: its shard count, its counts on its console
  assert sorted(p.name for p in out.glob('*.tfrecord')) == [
      f'{split}-0000{i}-of-00002.tfrecord' for split in ('train', 'validation') for i in (0, 1)]
  assert manifest_of(out)['num_examples'] == 48
  assert 'wrote 48 examples' in log.read_text()
  # released: the next run takes the claim over at once (and refuses the earlier output)
  third = _run(out, '--num_shards=3')
  assert third.returncode == 2 and 'already holds' in _last_line(third.stderr)


@pytest.mark.slow
def test_two_runs_of_one_date_are_refused_and_other_dates_go_on(tmp_path):
  root, log = tmp_path / 'root', tmp_path / 'first.log'
  first = _start(log, root, '--run_date=2026-11-21', '--num_shards=1')
  try:
    path = root / claim.WORK_DIR / 'claim-dt=2026-11-21.1'
    holder = _frozen_once_claimed(first, path, log)
    same_date = _run(root, '--run_date=2026-11-21', '--num_shards=2')
    other_date = _run(root, '--run_date=2026-11-20', '--num_shards=2')
  finally:
    status = _finish(first)
  assert same_date.returncode == 2, same_date.stderr[-3000:]
  refusal = _last_line(same_date.stderr)
  assert '--run_date=2026-11-21' in refusal and holder['run_id'] in refusal
  assert other_date.returncode == 0, other_date.stderr[-3000:]
  assert status == 0, log.read_text()[-3000:]
  assert sorted(p.name for p in (root / 'dt=2026-11-21').glob('*.tfrecord')) == [
      'train-00000-of-00001.tfrecord', 'validation-00000-of-00001.tfrecord']
  assert (root / 'dt=2026-11-20' / '_SUCCESS').exists()
  assert (root / 'LATEST').read_text().strip() == 'dt=2026-11-21'


@pytest.mark.slow
def test_the_claim_of_a_killed_run_is_taken_over_without_overwrite(tmp_path):
  out, log = tmp_path / 'out', tmp_path / 'first.log'
  first = _start(log, out)
  holder = _frozen_once_claimed(first, out / claim.WORK_DIR / 'claim.1', log)
  first.kill()
  first.wait(timeout=TIMEOUT_S)
  second = _run(out)
  assert second.returncode == 0, second.stderr[-3000:]
  assert 'took over the claim' in second.stderr and holder['run_id'] in second.stderr
  assert 'its process is gone' in second.stderr
  assert (out / '_SUCCESS').exists()
  assert sorted(p.name for p in (out / claim.WORK_DIR).glob('claim.*')) == ['claim.2']


@pytest.mark.slow
def test_a_run_stalled_past_its_lease_loses_its_claim_and_publishes_nothing(tmp_path):
  out, log = tmp_path / 'out', tmp_path / 'first.log'
  first = _start(log, out, '--claim_lease_seconds=1')
  try:
    path = out / claim.WORK_DIR / 'claim.1'
    holder = _frozen_once_claimed(first, path, log)
    while time.time() - json.loads(path.read_text())['heartbeat'] <= 1.5:
      time.sleep(0.1)  # its lease passes without a heartbeat: the run looks dead
    second = _run(out, '--num_shards=1')
    assert second.returncode == 0, second.stderr[-3000:]
    assert 'took over the claim' in second.stderr and 'its lease expired' in second.stderr
    published = _digests(out)
  finally:
    status = _finish(first)
  assert status == 1, log.read_text()[-3000:]
  assert 'lost the claim' in _last_line(log.read_text())
  assert holder['run_id'] in log.read_text()
  assert _digests(out) == published  # the second run's output, untouched by the first


# --- the claim module itself, on a local folder and on S3 --------------------------------------

def test_an_expired_claim_is_taken_over_and_its_holder_learns_it(tmp_path):
  now = [1000.0]
  first = claim.acquire(str(tmp_path), None, lease_s=10, clock=lambda: now[0])
  with pytest.raises(claim.OutputClaimed, match=first.token.run_id):
    claim.acquire(str(tmp_path), None, lease_s=10, clock=lambda: now[0])
  now[0] += 5
  assert first.renew()  # a heartbeat: the lease starts again
  now[0] += 9
  with pytest.raises(claim.OutputClaimed):
    claim.acquire(str(tmp_path), None, lease_s=10, clock=lambda: now[0])
  now[0] += 2  # 11 s without a heartbeat
  second = claim.acquire(str(tmp_path), None, lease_s=10, clock=lambda: now[0])
  assert second.token.path.endswith('claim.2')
  claim.check(second.token)
  with pytest.raises(claim.ClaimLost):
    claim.check(first.token)
  assert not first.renew() and 'lost the claim' in first.lost
  second.release()
  third = claim.acquire(str(tmp_path), None, lease_s=10, clock=lambda: now[0])  # released
  assert third.token.path.endswith('claim.3')


def test_a_released_claim_lets_no_step_of_its_run_publish(tmp_path):
  """A launcher stopped by a signal releases its claim; a job a cluster still runs for it
  must not publish after that (its metadata and publication steps check the claim)."""
  held = claim.acquire(str(tmp_path), None, lease_s=60)
  claim.check(held.token)
  held.release()
  with pytest.raises(claim.ClaimLost, match='released its claim'):
    claim.check(held.token)


def test_exclusive_create_lets_one_of_many_claimants_win(tmp_path):
  from concurrent.futures import ThreadPoolExecutor  # pylint: disable=import-outside-toplevel

  def attempt(_):
    try:
      return claim.acquire(str(tmp_path), '2026-11-21', lease_s=60).token
    except claim.OutputClaimed:
      return None

  with ThreadPoolExecutor(8) as pool:
    tokens = [t for t in pool.map(attempt, range(16)) if t is not None]
  assert len(tokens) == 1


def test_a_claim_on_s3_is_exclusive(s3_bucket):
  first = claim.acquire(s3_bucket, None, lease_s=60)
  assert first.token.path == f'{s3_bucket}/{claim.WORK_DIR}/claim.1'
  with pytest.raises(claim.OutputClaimed, match=first.token.run_id):
    claim.acquire(s3_bucket, None, lease_s=60)
  claim.check(first.token)
  # the conditional write itself refuses the name a racing run created first
  assert not claim._create_exclusive(first.token.path, '{}')  # pylint: disable=protected-access
  first.release()
  second = claim.acquire(s3_bucket, None, lease_s=60)
  assert second.token.path.endswith('claim.2')
