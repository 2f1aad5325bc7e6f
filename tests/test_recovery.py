"""A killed night heals on its own: real runs of one date are killed (SIGKILL of the process
group, as an out-of-memory kill or a lost node does) while converting, while computing the
statistics and after writing shards; each next attempt starts without --overwrite, and the one
that finishes publishes what a clean run publishes. A launch that died while publishing (moved
into dt=DATE/, no _SUCCESS yet) is healed the same way."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO, copy_photos, shared_data
from tests.test_nightly import _comparable, _split_records

DATE = '2026-11-24'
# --stats=tft: its analysis writes a staging folder, the phase that is one to kill (the default
# --stats is a Beam combine inside the conversion's phases)
FLAGS = ('--image_size=64', '--resize_mode=center_crop', '--num_shards=2',
         '--direct_running_mode=in_memory', '--stats=tft')
RUN_TIMEOUT_S = 300
# what each phase leaves in ROOT/_staging/dt=DATE/ while it runs
PHASES = (('converting', '.staging-write'), ('statistics', '.staging-tft'),
          ('shards written', 'train-00000-of-00002.tfrecord'))


def _command(images, root):
  return [sys.executable, '-m', 'pipeline.run', f'--input_dir={images}', f'--output_dir={root}',
          f'--run_date={DATE}', *FLAGS]


def _run_to_the_end(images, root) -> subprocess.CompletedProcess:
  return subprocess.run(_command(images, root), cwd=REPO, capture_output=True, text=True,
                        timeout=RUN_TIMEOUT_S, check=False)


def _kill_when(images, root, watched: pathlib.Path) -> None:
  """Starts a run in its own process group and SIGKILLs the group once ``watched`` exists."""
  with open(root.parent / f'{watched.name}.log', 'wb') as log:
    process = subprocess.Popen(_command(images, root), cwd=REPO, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
  deadline = time.monotonic() + RUN_TIMEOUT_S
  try:
    while not watched.exists():
      assert process.poll() is None, f'the run ended (exit {process.returncode}) before ' \
          f'{watched.name} appeared: {(root.parent / f"{watched.name}.log").read_text()[-3000:]}'
      assert time.monotonic() < deadline, f'{watched.name} did not appear'
      time.sleep(0.002)
  finally:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
  """A copy of 120 hymenoptera training photos (ants and bees)."""
  return copy_photos(tmp_path_factory.mktemp('recovery') / 'images', 60,
                     shared_data('hymenoptera') / 'train')


@pytest.fixture(scope='module')
def clean(photos, tmp_path_factory):
  root = tmp_path_factory.mktemp('clean') / 'out'
  result = _run_to_the_end(photos, root)
  assert result.returncode == 0, result.stderr[-3000:]
  return root / f'dt={DATE}'


def _assert_same_run(run_dir: pathlib.Path, clean_dir: pathlib.Path) -> None:
  assert (run_dir / '_SUCCESS').exists()
  assert (run_dir.parent / 'LATEST').read_text().strip() == f'dt={DATE}'
  for name in ('labels.txt', 'images.jsonl', 'failures.jsonl'):
    assert (run_dir / name).read_bytes() == (clean_dir / name).read_bytes(), name
  assert _comparable(run_dir) == _comparable(clean_dir)
  assert _split_records(run_dir) == _split_records(clean_dir)
  assert sorted(p.name for p in run_dir.iterdir()) == sorted(p.name for p in clean_dir.iterdir())


@pytest.mark.slow
def test_a_night_killed_in_any_phase_reruns_to_what_a_clean_run_publishes(photos, clean,
                                                                          tmp_path):
  root = tmp_path / 'out'
  staging = root / '_staging' / f'dt={DATE}'
  for phase, name in PHASES:  # each attempt dies later; the next one starts over by itself
    _kill_when(photos, root, staging / name)
    assert not (root / f'dt={DATE}' / '_SUCCESS').exists(), phase
    assert not (root / 'LATEST').exists(), phase
  result = _run_to_the_end(photos, root)  # no --overwrite: what the dead ones left is cleared
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'clearing' in result.stderr
  _assert_same_run(root / f'dt={DATE}', clean)
  assert not staging.exists()


@pytest.mark.slow
def test_a_night_killed_while_publishing_reruns_without_overwrite(photos, clean, tmp_path):
  root = tmp_path / 'out'
  shutil.copytree(clean, root / f'dt={DATE}')
  # the state a launch killed between its move into dt=DATE/ and _SUCCESS leaves behind,
  # with a shard of another shard count that an earlier attempt had moved there
  (root / f'dt={DATE}' / '_SUCCESS').unlink()
  (root / f'dt={DATE}' / 'train-00000-of-00009.tfrecord').write_bytes(b'an older attempt')
  record = root / f'dt={DATE}' / '.imagerecords' / 'output.json'  # what that attempt recorded
  entries = json.loads(record.read_text())['entries'] + ['train-00000-of-00009.tfrecord']
  record.write_text(json.dumps({**json.loads(record.read_text()), 'entries': entries}))
  result = _run_to_the_end(photos, root)
  assert result.returncode == 0, result.stderr[-3000:]
  _assert_same_run(root / f'dt={DATE}', clean)
