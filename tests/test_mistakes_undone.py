"""Mistakes are cheap to undo (issue 24, items 3 and 4): a run that failed or was interrupted
leaves nothing that blocks its corrected rerun; Ctrl-C and SIGTERM end a run in one line, with
its worker processes, its claim and its temporary log gone; the console says why a run failed
and what to try."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import types

import psutil
import pytest

from pipeline import outputs
from pipeline.interrupt import Interrupted
from pipeline.run import _interrupted
from tests.helpers import REPO, SAMPLES, convert, manifest_of, shared_data

WAIT_S = 120


def _flat_photos(tmp_path: pathlib.Path) -> pathlib.Path:
  """The 48 sample photos in one folder, no class folders: every image fails at stage label
  under the default --label_source=directory."""
  flat = tmp_path / 'flat'
  flat.mkdir()
  for path in SAMPLES.glob('*/*.jpg'):
    shutil.copyfile(path, flat / path.name)
  return flat


def _job(input_dir, output_dir, *flags, tmp_path, new_session=False) -> subprocess.Popen:
  """``python -m pipeline.run`` as a user starts it (its temporary log in ``tmp_path/tmp``)."""
  tmp = tmp_path / 'tmp'
  tmp.mkdir(exist_ok=True)
  env = dict(os.environ, TMPDIR=str(tmp),
             PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / 'reader')]))
  return subprocess.Popen(
      [sys.executable, '-m', 'pipeline.run', f'--input_dir={input_dir}',
       f'--output_dir={output_dir}', '--stats=false', *flags],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      start_new_session=new_session)


def _command_line(process: psutil.Process) -> str:
  try:
    return ' '.join(process.cmdline())
  except psutil.Error:  # ended meanwhile, or a zombie not yet reaped
    return ''


def _stop_workers_once_started(job: subprocess.Popen) -> list:
  """Waits until the job's SDK worker processes run, stops them (SIGSTOP: the run cannot end
  before the signal the test sends) and returns them."""
  deadline = time.monotonic() + WAIT_S
  while time.monotonic() < deadline and job.poll() is None:
    workers = [p for p in psutil.Process(job.pid).children(recursive=True)
               if _command_line(p).startswith(sys.executable) and 'sdk_worker_main' in
               _command_line(p)]  # the workers themselves, not the shells that start them
    if len(workers) == 2:
      for worker in workers:
        worker.suspend()
      return workers
    time.sleep(0.1)
  pytest.fail(f'no SDK workers started: {job.communicate()[1][-3000:]}')


@pytest.mark.slow
def test_a_failed_run_is_replaced_by_its_corrected_rerun_without_overwrite(tmp_path, caplog):
  flat, out = _flat_photos(tmp_path), tmp_path / 'out'
  assert convert(flat, out) == 1  # no class folders: every image fails at stage label
  assert manifest_of(out)['status'] == 'failed'
  caplog.set_level('INFO', logger='imagerecords')
  assert convert(flat, out, '--label_source=none') == 0
  assert manifest_of(out)['status'] == 'complete' and manifest_of(out)['num_examples'] == 48
  assert any('failed or was interrupted' in r.getMessage() for r in caplog.records)
  # a complete, published output is still protected
  assert convert(flat, out, '--label_source=none') == 2
  assert manifest_of(out)['status'] == 'complete'


@pytest.mark.slow
def test_a_run_over_the_failure_fraction_names_the_common_reasons_an_example_and_the_flag(
    tmp_path):
  """The sample's class folders, plus 24 photos outside them and 2 files that do not decode
  (../shared/data/messy): 26 of 74 inputs failed."""
  images = tmp_path / 'images'
  shutil.copytree(SAMPLES, images)
  for path in sorted((SAMPLES / 'bees').glob('*.jpg')):
    shutil.copyfile(path, images / path.name)
  messy = shared_data('messy')
  for name in ('constructed__zero_bytes.jpg', 'constructed__html_error_page_saved_as.jpg'):
    shutil.copyfile(messy / name, images / 'ants' / name)
  job = _job(images, tmp_path / 'out', tmp_path=tmp_path)
  _, stderr = job.communicate(timeout=WAIT_S)
  assert job.returncode == 1, stderr[-3000:]
  last = stderr.strip().splitlines()[-1]
  assert 'run failed: 26 of 74 image inputs failed' in last, last
  first_loose = sorted(p.name for p in (SAMPLES / 'bees').glob('*.jpg'))[0]
  assert f'label: not inside a class folder' in last and f'(24, e.g. {first_loose})' in last
  assert 'decode: not an image: HTML content' in last
  assert '(1, e.g. ants/constructed__html_error_page_saved_as.jpg)' in last
  assert 'try --label_source=file:PATH, --label_source=filename:REGEX or --label_source=none' in last


@pytest.mark.slow
@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_job_or_its_group_ends_it_in_one_line_workers_claim_and_log_gone(
    tmp_path, signum):
  """SIGTERM to the launcher (a scheduler), SIGINT to its whole process group (Ctrl-C in a
  terminal), on the multi-process local runner; then the rerun without --overwrite."""
  out = tmp_path / 'out'
  job = _job(SAMPLES, out, '--direct_running_mode=multi_processing', '--direct_num_workers=2',
             tmp_path=tmp_path, new_session=True)
  workers = _stop_workers_once_started(job)
  if signum == signal.SIGINT:
    os.killpg(job.pid, signum)
  else:
    job.send_signal(signum)
  _, stderr = job.communicate(timeout=WAIT_S)
  assert job.returncode == 128 + signum, stderr[-3000:]
  lines = stderr.strip().splitlines()
  assert f'interrupted ({signal.Signals(signum).name}); nothing published' in lines[-1], lines
  assert 'Traceback' not in stderr, stderr[-3000:]
  assert not [w.pid for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
  assert not list((tmp_path / 'tmp').glob('imagerecords-run-*.log'))  # the temporary log
  claims = list((out / '.imagerecords').glob('claim.*'))
  assert all('released' in json.loads(c.read_text()) for c in claims), claims
  assert not (out / '_SUCCESS').exists()
  assert convert(SAMPLES, out) == 0  # no --overwrite needed
  assert manifest_of(out)['num_examples'] == 48


@pytest.mark.slow
def test_a_signal_on_the_local_runner_in_one_process_ends_the_run_in_one_line(tmp_path):
  """Below 1,000 files the job converts in the launcher itself, where Beam re-raises the
  signal's exception as the running step's RuntimeError."""
  images = tmp_path / 'images'
  source = shared_data('tiny_imagenet_val') / 'images'
  for index, path in enumerate(sorted(source.iterdir())[:400]):
    folder = images / ('even' if index % 2 else 'odd')
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, folder / path.name)
  job = _job(images, tmp_path / 'out', '--image_size=64', tmp_path=tmp_path)
  deadline = time.monotonic() + WAIT_S
  while time.monotonic() < deadline and not any(
      p.name.startswith('.staging') for p in (tmp_path / 'out').glob('.*')):
    time.sleep(0.05)  # the conversion writes its first staging records: mid-run
  job.send_signal(signal.SIGTERM)
  _, stderr = job.communicate(timeout=WAIT_S)
  assert job.returncode == 143, stderr[-3000:]
  assert 'interrupted (SIGTERM); nothing published' in stderr.strip().splitlines()[-1]
  assert not (tmp_path / 'out' / '_SUCCESS').exists()


@pytest.mark.slow
def test_a_signal_after_publication_says_so_and_exits_0(tmp_path):
  """A scheduler's retry must not meet "already published": the run that published exits 0."""
  out = tmp_path / 'out'
  assert convert(SAMPLES, out) == 0
  run_id = json.loads((out / '.imagerecords' / 'output.json').read_text())['run_id']
  config = types.SimpleNamespace(publish_dir=None, output_dir=str(out), run_id=run_id)
  assert outputs.published_by(str(out), run_id)
  assert _interrupted(Interrupted(signal.SIGTERM), config) == 0
  other = types.SimpleNamespace(publish_dir=None, output_dir=str(out), run_id='another-run')
  assert not outputs.published_by(str(out), 'another-run')
  assert _interrupted(Interrupted(signal.SIGTERM), other) == 143


class _SubmittedJob:
  """A PipelineResult of a job a runner runs elsewhere (Beam's PortableRunner's, in shape)."""

  def __init__(self, state):
    self.state, self.cancelled = state, False

  def cancel(self):
    self.cancelled, self.state = True, 'CANCELLED'


def test_an_interrupted_launcher_cancels_a_job_that_runs_elsewhere_and_only_that():
  from apache_beam.runners.runner import PipelineState  # pylint: disable=import-outside-toplevel
  from pipeline import interrupt  # pylint: disable=import-outside-toplevel
  running = types.SimpleNamespace(result=_SubmittedJob(PipelineState.RUNNING))
  interrupt.cancel_submitted(running)
  assert running.result.cancelled
  done = types.SimpleNamespace(result=_SubmittedJob(PipelineState.DONE))
  interrupt.cancel_submitted(done)
  assert not done.result.cancelled
  interrupt.cancel_submitted(types.SimpleNamespace())  # a local run: no result yet
  interrupt.cancel_submitted(None)  # interrupted before the pipeline was made
