"""A run that fails says why in its last line and leaves nothing a reader accepts (issue 12,
case 7): a full disk (a real one, a small tmpfs, where this machine lets the tests mount one;
else ENOSPC injected where the job writes files), and a run that fails its failure fraction.
All on real photos."""

import errno
import os
import pathlib
import re
import subprocess
import sys

import pytest
from apache_beam.io import localfilesystem
from imagerecords import contract

from tests.helpers import (REPO, SAMPLES, assert_nothing_a_reader_takes, convert, manifest_of,
                           shared_data)

TIMEOUT_S = 600


def _env() -> dict:
  return dict(os.environ, PYTHONPATH=f'{REPO}{os.pathsep}{REPO / "reader"}')


def _job(input_dir, output_dir, *flags) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, '-m', 'pipeline.run', f'--input_dir={input_dir}',
       f'--output_dir={output_dir}', '--stats=false', *flags],
      cwd=REPO, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


def _assert_console_says_why_in_one_line(stderr: str, reason: str) -> pathlib.Path:
  """The console has no traceback and ends with the reason; returns the log file it names."""
  lines = stderr.strip().splitlines()
  assert 'Traceback' not in stderr, stderr[-3000:]
  assert re.search(r'ERROR run failed: ' + reason, lines[-1]), lines[-1]
  named = re.search(r'the whole log of this run: (\S+)', lines[-2])
  assert named, lines[-2]
  log = pathlib.Path(named.group(1))
  assert 'Traceback' in log.read_text()
  return log


@pytest.mark.slow
def test_a_run_over_the_failure_fraction_ends_in_one_line_and_keeps_its_log(tmp_path):
  out = tmp_path / 'out'
  result = _job(shared_data('messy'), out, '--label_source=none', '--image_size=64')
  assert result.returncode == 1
  log = _assert_console_says_why_in_one_line(
      result.stderr, r'\d+ of 86 image inputs failed .*more than --max_failure_fraction=0.05')
  assert log.parent == out / '.imagerecords' and 'RunFailed' in log.read_text()
  # 3 lines of progress, the summary (with at most 3 duplicate groups of 5 lines each and the
  # quality flags), the log's path, the reason
  assert len(result.stderr.strip().splitlines()) < 30
  assert manifest_of(out)['status'] == 'failed'
  assert_nothing_a_reader_takes(out)


def test_a_full_disk_leaves_no_shard_cut_short(tmp_path, monkeypatch, caplog):
  """ENOSPC from the filesystem once half a shard's bytes are written, in this process's run
  (the local runner in one process), as a full disk raises it."""
  create = localfilesystem.LocalFileSystem.create

  class FillingUp:
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, handle, room):
      self._handle, self._room = handle, room

    def write(self, data):
      if len(data) > self._room:
        raise OSError(errno.ENOSPC, 'No space left on device', self._handle.name)
      self._room -= len(data)
      return self._handle.write(data)

    def __getattr__(self, name):
      return getattr(self._handle, name)

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      self._handle.close()

  def filling_create(self, path, *args, **kwargs):
    handle = create(self, path, *args, **kwargs)
    if contract.parse_shard_file_name(os.path.basename(path)):
      return FillingUp(handle, 200_000)  # about half of a shard of the 48 photos
    return handle

  monkeypatch.setattr(localfilesystem.LocalFileSystem, 'create', filling_create)
  out = tmp_path / 'out'
  assert convert(SAMPLES, out, '--num_shards=1') == 1
  assert re.match(r'run failed: disk full', caplog.records[-1].getMessage())
  assert_nothing_a_reader_takes(out)
  # the shard the disk filled up on never took its name (the smaller one may have, whole)
  assert not (out / contract.shard_file_name('train', 0, 1)).exists()


@pytest.fixture()
def small_disk(tmp_path):
  """A tmpfs of ``size`` bytes mounted on a folder: ``mount(size) -> path``; skips the test
  where this machine does not let it mount one (not root, no CAP_SYS_ADMIN)."""
  mounted = []

  def mount(size: int) -> pathlib.Path:
    target = tmp_path / 'small_disk'
    target.mkdir()
    if os.geteuid() != 0:
      pytest.skip('mounting a tmpfs needs root')
    result = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(target)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
      pytest.skip(f'cannot mount a tmpfs here: {result.stderr.strip()}')
    mounted.append(target)
    return target

  yield mount
  for target in mounted:
    subprocess.run(['umount', str(target)], check=True)


@pytest.mark.slow
def test_a_real_full_disk_fails_in_one_line_and_leaves_no_shard_cut_short(tmp_path, small_disk):
  photos = sorted((shared_data('hymenoptera') / 'val' / 'ants').glob('*.jpg'))[:40]
  source = tmp_path / 'in' / 'ants'
  source.mkdir(parents=True)
  for photo in photos:
    (source / photo.name).write_bytes(photo.read_bytes())
  # the records' size, from a run with room, then a disk with room for the staged records and
  # half of the shards (staging files and shards both exist while the shards are copied)
  roomy = tmp_path / 'roomy'
  flags = ('--num_shards=2', '--splits=train=1', '--allow_single_class')  # ants only
  assert convert(source.parent, roomy, *flags) == 0
  records = sum(p.stat().st_size for p in roomy.glob('*.tfrecord'))
  out = small_disk(int(records * 1.5)) / 'out'
  result = _job(source.parent, out, *flags)
  assert result.returncode == 1, result.stderr[-3000:]
  _assert_console_says_why_in_one_line(result.stderr, 'disk full')
  assert_nothing_a_reader_takes(out)
