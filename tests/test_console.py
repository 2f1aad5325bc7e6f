"""What a run prints (issue 13): only this project's lines, no third-party start-up chatter from
any process, and one progress display for the whole job. Real photos (hymenoptera)."""

import errno
import io
import logging
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest
from apache_beam.io import localfilesystem

from pipeline import progress as display
from tests.helpers import REPO, convert, copy_photos, manifest_of, shared_data
from transforms.image.progress import Progress, ProgressFile, read_progress

# What TensorFlow, absl, oneDNN, CUDA and tensorflow-transform print when they are imported or
# fed instance dicts: TensorFlow prints its start-up lines whatever TF_CPP_MIN_LOG_LEVEL says.
THIRD_PARTY = re.compile(
    r'tensorflow|absl|oneDNN|cuda|cuInit|cpu_feature_guard|TFXIO|instance dicts|'
    r'^[IWEF]\d{4} |Python sdk harness', re.I)
# This job's console: its log lines (time, level, message) and the summary block.
OURS = re.compile(r'^(\d\d:\d\d:\d\d (INFO|WARNING|ERROR) |imagerecords wrote |  )')


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
  """Six real photos in two class folders."""
  return copy_photos(tmp_path_factory.mktemp('console') / 'in', 3,
                     shared_data('hymenoptera') / 'train')


# A sitecustomize module, first on PYTHONPATH: every Python process of the run (the launcher,
# each worker) writes a line to the file $WATCH_FILE, and one more if it imports TensorFlow.
_WATCH_IMPORTS = """
import os, sys

def _note(line):
  with open(os.environ['WATCH_FILE'], 'a') as handle:
    handle.write(line + '\\n')

_note(f'process {os.getpid()}')

class _Watch:
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in ('tensorflow', 'tensorflow_transform'):
      _note(f'process {os.getpid()} imports {name}')
    return None

sys.meta_path.insert(0, _Watch())
"""


def _watch(folder):
  """A watch (see _WATCH_IMPORTS) in ``folder``: (its PYTHONPATH entry, its notes' file)."""
  folder.mkdir()
  (folder / 'sitecustomize.py').write_text(_WATCH_IMPORTS)
  return folder, folder / 'notes.txt'


def _run(photos, out, *flags, watch=None):
  # TF_CPP_MIN_LOG_LEVEL=0: a TensorFlow import anywhere would print its lines
  path, notes = watch or (None, None)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='0', PYTHONPATH=os.pathsep.join(
      ([str(path)] if path else []) + [str(REPO), str(REPO / 'reader')]))
  if notes:
    env['WATCH_FILE'] = str(notes)
  return subprocess.run(
      [sys.executable, '-m', 'pipeline.run', f'--input_dir={photos}', f'--output_dir={out}',
       '--image_size=32', '--num_shards=1', *flags],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_a_default_run_prints_only_its_own_lines_and_imports_no_tensorflow(photos, tmp_path):
  """The default statistics included, with worker processes (forced: six files would run in
  the launcher's process): every console line is this job's, none a third party's start-up
  line, and no process (launcher, workers) imports TensorFlow."""
  watch = _watch(tmp_path / 'watch')
  result = _run(photos, tmp_path / 'out', '--direct_running_mode=multi_processing',
                '--direct_num_workers=2', watch=watch)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stderr.strip().splitlines()
  assert [line for line in lines if THIRD_PARTY.search(line)] == [], result.stderr
  assert [line for line in lines if not OURS.match(line)] == [], result.stderr
  assert any('imagerecords wrote 6 examples' in line for line in lines)
  manifest = manifest_of(tmp_path / 'out')
  assert manifest['statistics']['num_examples'] == manifest['splits']['train']['num_examples']
  notes = watch[1].read_text().splitlines()
  assert len([n for n in notes if re.fullmatch(r'process \d+', n)]) >= 3, notes  # + 2 workers
  assert [n for n in notes if 'imports' in n] == []


def test_the_import_watch_can_fail(tmp_path):
  """The watch sees an import of TensorFlow (looked up only: no need to load it)."""
  path, notes = _watch(tmp_path / 'watch')
  subprocess.run(
      [sys.executable, '-c', 'import importlib.util; importlib.util.find_spec("tensorflow")'],
      env=dict(os.environ, PYTHONPATH=str(path), WATCH_FILE=str(notes)), timeout=60,
      check=True)
  assert re.search(r'^process \d+ imports tensorflow$', notes.read_text(), re.M)


@pytest.mark.slow
def test_a_small_input_runs_in_one_process_and_reports_beam_metrics(photos, tmp_path):
  """Six files: no worker processes. The counts are Beam metrics, what Dataflow's and Flink's
  UIs show: the images to convert (a gauge) and those converted (a counter); the manifest also
  keeps the milliseconds of each top-level step (``step_msecs``)."""
  result = _run(photos, tmp_path / 'out')
  assert result.returncode == 0, result.stderr[-3000:]
  assert '6 files in the input folder: converting in this process' in result.stderr
  manifest = manifest_of(tmp_path / 'out')
  metrics = manifest['metrics']
  assert metrics['images_to_convert'] == metrics['images_converted'] == 6
  # the runner's time per top-level step (which steps show time on six photos, and which the
  # most, is the state sampler's 200 ms luck: a step other than the conversion showed the most
  # in one CI run)
  steps = manifest['step_msecs']
  assert steps and not any('/' in step for step in steps), steps
  assert all(ms > 0 for ms in steps.values()), steps


def test_a_disk_that_fills_while_publishing_prints_only_the_failure(photos, tmp_path,
                                                                    monkeypatch, capsys, caplog):
  """A dated run whose disk fills once it publishes (its manifest staged, complete): the
  console says FAILED and "run failed: disk full", never "wrote ... to OUT/dt=DATE" before
  it. In this process's run, ENOSPC from the filesystem for the files only publication
  writes in the staged and the dated folder: its markers and _SUCCESS (no file of the run's
  own starts with '_')."""
  root = tmp_path / 'root'
  published = root / 'dt=2026-11-21'
  create = localfilesystem.LocalFileSystem.create

  def full_when_publishing(self, path, *args, **kwargs):
    path = pathlib.Path(path)
    if path.parent.name == published.name and path.name.startswith('_'):
      raise OSError(errno.ENOSPC, 'No space left on device', str(path))
    return create(self, str(path), *args, **kwargs)

  monkeypatch.setattr(localfilesystem.LocalFileSystem, 'create', full_when_publishing)
  assert convert(photos, root, '--run_date=2026-11-21', '--image_size=32', '--num_shards=1') == 1
  console = capsys.readouterr().err
  assert 'imagerecords wrote' not in console, console
  assert 'imagerecords FAILED: 6 examples in 2 classes' in console, console
  assert 'not published' in console
  assert caplog.records[-1].getMessage().startswith('run failed: disk full')
  assert not any(' done: ' in r.getMessage() for r in caplog.records)
  assert not (published / '_SUCCESS').exists() and not (root / 'LATEST').exists()


def test_progress_files_add_up_over_instances(tmp_path):
  first, second = ProgressFile(str(tmp_path)), ProgressFile(str(tmp_path))
  assert read_progress(str(tmp_path)) == Progress(0, 0, None)
  first.update(done=3, total=10)
  second.update(done=1, failed=1)
  first.flush()
  second.flush()
  assert read_progress(str(tmp_path)) == Progress(4, 1, 10)
  (tmp_path / 'half-written.json').write_text('{"done": ')  # skipped, never an error
  assert read_progress(str(tmp_path)) == Progress(4, 1, 10)


def test_the_plain_line_says_done_of_total_percent_rate_and_time_left():
  assert display.describe(Progress(1234, 2, 4378), 800.) == (
      'converted 1,234 of 4,378 images (28%), 800 images/s, 4 s left, 2 failed')
  assert display.describe(Progress(0, 0, 90000), None) == (
      'converted 0 of 90,000 images (0%), 0 failed')
  assert display.describe(Progress(10, 0, None), None).startswith(
      'converted 10 images, 0 failed (listing')
  assert display.describe(Progress(0, 0, 90000), 10.).endswith('2 h 30 min left, 0 failed')
  assert display.describe(Progress(98, 2, 100), 50.) == (
      'writing shards and reports: all 100 images converted or failed (2 failed)')
  assert [display.phase(Progress(0, 0, None)), display.phase(Progress(5, 0, 10)),
          display.phase(Progress(9, 1, 10))] == [display.LISTING, display.CONVERTING,
                                                 display.WRITING]


def test_the_rate_is_taken_over_the_last_ten_seconds(monkeypatch):
  """A burst after a slow start (a worker's first bundle reported at once) is neither averaged
  with the start-up nor taken as the rate on its own: the rate is over RATE_WINDOW_S."""
  clock = [0.]
  monkeypatch.setattr(display.time, 'monotonic', lambda: clock[0])
  meter = display._Meter()  # pylint: disable=protected-access
  assert meter.rate(Progress(0, 0, 1000)) is None  # nothing converted yet
  rates = []
  for second, done in [(1, 10), (1.5, 10), (2, 20), (12, 120), (22, 220), (22.5, 900)]:
    clock[0] = second
    rates.append(meter.rate(Progress(done, 0, 1000)))
  assert rates[:2] == [None, None]  # under a second seen
  assert rates[2:5] == [10., 10., 10.]
  assert 10 < rates[5] < 100, rates  # 680 images in 0.5 s, over a window of about 10 s


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def _feed(progress_dir, seconds):
  """Two instances' counts growing for ``seconds``: 10 images in all, then done."""
  workers = [ProgressFile(progress_dir), ProgressFile(progress_dir)]
  for _ in range(5):
    for worker in workers:
      worker.update(done=1, total=10)
      worker.flush()
    time.sleep(seconds / 5)


def test_plain_progress_lines_count_the_whole_job(monkeypatch, caplog):
  monkeypatch.setattr(display, 'LINE_EVERY_S', 0.)  # a line at every read (every 1 s)
  caplog.set_level(logging.INFO, logger='imagerecords')
  with display.show_progress(io.StringIO()) as progress_dir:
    _feed(progress_dir, 2.5)
    time.sleep(1.2)
  lines = [r.getMessage() for r in caplog.records]
  converting = [line for line in lines if line.startswith('converted')]
  assert any(re.fullmatch(r'converted \d+ of 10 images \(\d+%\), [\d,]+ images/s, \d+ s left, '
                          r'0 failed', line) for line in converting), lines
  assert lines[-1] == 'writing shards and reports: all 10 images converted or failed (0 failed)'
  assert not os.path.exists(progress_dir)  # removed when the run ends


def test_a_terminal_gets_a_live_bar(caplog):
  terminal = _Terminal()
  caplog.set_level(logging.INFO, logger='imagerecords')
  with display.show_progress(terminal):
    pass
  with display.show_progress(terminal) as progress_dir:
    _feed(progress_dir, 1.5)
    time.sleep(0.8)
  shown = terminal.getvalue()
  assert re.search(r'converting +\d+%\|[# ]+\| \d+/10 \[00:0', shown), shown
  assert 'writing shards and reports [00:0' in shown, shown  # one clock from the start
  assert not [r for r in caplog.records if r.getMessage().startswith('converted')]
