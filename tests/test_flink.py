"""The job on a real Apache Flink cluster: ``deploy/flink/local_cluster.py`` starts a JobManager,
two TaskManagers, Beam's Flink job server and a Python worker pool on loopback, once for this
module; the job is submitted to it unchanged, with the flags ``Cluster.flags()`` gives
(``--runner=PortableRunner``, the job server's endpoints, ``--environment_type=EXTERNAL``).

Each conversion is compared with the same conversion on the local runner (``tests/golden.py``'s
``output_digest``: the manifest less times and paths, each split's counts and fingerprint, the
SHA-256 of ``images.jsonl``, ``labels.txt``, ``duplicates.jsonl`` and the other text files).

The launcher stopped by SIGTERM runs the job's Python code in the cluster's worker pool, as
deployed (``EXTERNAL``): the launcher cancels it there through Flink's REST API. The
conversion that loses a TaskManager, the night and the failed run, which test what Flink does
with the job rather than the environment, run it in the launcher's process (``LOOPBACK``): the
worker pool starts about 14 Python processes per job, each importing Beam, and the catdog
conversion took 341 s and 190 s that way against 76 s and 47.5 s with ``LOOPBACK``, in
alternating runs on one cluster (2 cores, load average 14 and 7); in the suite the module took
690 s with that conversion in the pool (375 s of it), beside the S3 module, which it slowed.
Each Flink job is a minute or more of the suite, so no two tests run the same one.

Needs the install step's ``.flink/`` and ``deploy/flink/job-server/target/lib`` (README.md):
skipped without them, except in CI (``CI`` set), where their absence fails the module.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import traceback
import urllib.error

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from deploy.flink import local_cluster
from pipeline import flink_job
from tests.golden import output_digest
from tests.helpers import (REPO, SAMPLES, assert_nothing_a_reader_takes, convert, manifest_of,
                           shared_data)
from transforms.outputs.metadata import FAILURE_BY_DESIGN_LINE, RunFailed

JOB_TIMEOUT_S = 420


def _installed() -> None:
  missing = [str(path) for path in (local_cluster.FLINK_HOME / 'lib', local_cluster.JOB_SERVER_LIB)
             if not path.is_dir()]
  if missing:
    message = f'{", ".join(missing)} missing: run the install step of README.md'
    if os.environ.get('CI'):
      pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
  """The local Flink cluster, started for this module and stopped (by process ids) after it."""
  _installed()
  with local_cluster.running(tmp_path_factory.mktemp('flink'), task_managers=2) as started:
    yield started


def _on_flink(cluster, input_dir, output_dir, *flags, during=None,
              loopback: bool = False) -> subprocess.CompletedProcess:
  """``python -m pipeline.run`` submitted to ``cluster``; ``during(process)`` runs while the
  launcher waits for the job. Fails the test when the launcher runs past JOB_TIMEOUT_S.

  The job's Python code runs in the cluster's worker pool, as deployed, or with ``loopback``
  in the launcher's process (``Cluster.flags``): a test of what Flink does with the job (its
  shuffles, its restarts, the job's exit) takes a quarter of the time that way on this
  machine (the module docstring)."""
  command = [sys.executable, '-m', 'pipeline.run', f'--input_dir={input_dir}',
             f'--output_dir={output_dir}', *flags, *cluster.flags(loopback=loopback)]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / 'reader')]))
  with subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True) as launcher:
    if during:
      during(launcher)
    try:
      stdout, stderr = launcher.communicate(timeout=JOB_TIMEOUT_S)
    except subprocess.TimeoutExpired:
      launcher.kill()
      stdout, stderr = launcher.communicate()
      pytest.fail(f'{command} ran past {JOB_TIMEOUT_S} s:\n{stderr[-4000:]}\n{_logs(cluster)}')
  return subprocess.CompletedProcess(command, launcher.returncode, stdout, stderr)


def _logs(cluster) -> str:
  return f'(the cluster\'s logs: {cluster.log_dir})'


def _night(run_dir: pathlib.Path, input_dir) -> dict:
  """``output_digest`` of a published night, its output root (named in the manifest's
  ``previous_run`` and ``reused_from``) written as ``<root>``."""
  digest = json.dumps(output_digest(run_dir, str(input_dir)))
  return json.loads(digest.replace(json.dumps(str(run_dir.parent))[1:-1], '<root>'))


def _succeeded(result: subprocess.CompletedProcess, cluster) -> None:
  assert result.returncode == 0, (
      f'exit {result.returncode}:\n{result.stderr[-5000:]}\n{_logs(cluster)}')


# --- a TaskManager lost during the conversion ---------------------------------------------------

SLICE_S = 0.05


def _kill_the_converting_task_manager(cluster, launcher) -> str:
  """SIGKILLs the process of the TaskManager that runs a subtask of the job's conversion step
  ('convert images', pipeline/run.py) and returns its name; fails when the launcher exits first.

  Flink starts a step of the batch job when the steps before it have finished, and on six dozen
  small photos the conversion takes a second or two: a poll of the REST API could miss it. So
  the job's Python code (in the launcher: ``LOOPBACK``) runs in slices of SLICE_S between polls
  and is stopped (SIGSTOP) while the REST API is asked: no step can end unseen."""
  deadline = time.monotonic() + JOB_TIMEOUT_S
  try:
    while time.monotonic() < deadline and launcher.poll() is None:
      launcher.send_signal(signal.SIGSTOP)
      try:
        for job in cluster.rest('/jobs/overview')['jobs']:
          if job['state'] != 'RUNNING':
            continue
          for vertex in cluster.rest(f'/jobs/{job["jid"]}')['vertices']:
            if 'convert images' not in vertex['name'] or vertex['status'] != 'RUNNING':
              continue
            details = cluster.rest(f'/jobs/{job["jid"]}/vertices/{vertex["id"]}')
            for subtask in details['subtasks']:
              if subtask['status'] == 'RUNNING':
                os.kill(cluster.service(subtask['taskmanager-id']).pid, signal.SIGKILL)
                return subtask['taskmanager-id']
      except (urllib.error.URLError, OSError):
        pass  # the JobManager busy for a moment: ask again
      launcher.send_signal(signal.SIGCONT)
      time.sleep(SLICE_S)
  finally:
    if launcher.poll() is None:
      launcher.send_signal(signal.SIGCONT)
  pytest.fail('the job ended before its conversion step ran')


# --- the same records as the local runner -------------------------------------------------------

CATDOG_FLAGS = (r'--label_source=filename:^([a-z]+)\.\d+\.jpg$', '--image_size=48',
                '--dedup=keep_first_near', '--stats', '--num_shards=2')


@pytest.fixture(scope='module')
def catdog(tmp_path_factory):
  """About 60 photos of ../shared/data/catdog_filenames, in a folder of their own: the first 28
  cats and dogs by name (byte-identical copies among them) and the three near-identical pairs
  of the set."""
  source = shared_data('catdog_filenames') / 'train'
  folder = tmp_path_factory.mktemp('catdog') / 'train'
  folder.mkdir()
  near = {'cat.138.jpg', 'cat.86.jpg', 'dog.1021.jpg', 'dog.1070.jpg', 'dog.1076.jpg',
          'dog.1098.jpg'}
  for kind in ('cat', 'dog'):
    for path in sorted(source.glob(f'{kind}.*.jpg'))[:28]:
      shutil.copyfile(path, folder / path.name)
  for name in near:
    shutil.copyfile(source / name, folder / name)
  return folder.parent


@pytest.fixture(scope='module')
def catdog_runs(cluster, catdog, tmp_path_factory):
  """The same conversion on both runners: {'flink' | 'local': output folder, 'killed': the
  TaskManager killed during Flink's run, 'exceptions': that job's exception history}.

  Flink's run loses the TaskManager that runs its conversion step (SIGKILL, see
  :func:`_kill_the_converting_task_manager`): Flink's fixed-delay restart strategy runs the
  failed tasks again on the other TaskManager. One run shows both that Flink writes the local
  runner's records and that a lost TaskManager loses and doubles none of them (each Flink job
  costs a minute or more of the suite). The tests after it run on the TaskManager left: the
  job's parallelism is one TaskManager's slots (``Cluster.flags``), and a third TaskManager
  took 10 s to start and a JVM's share of the 2 cores beside the other tests."""
  out = tmp_path_factory.mktemp('catdog_out')
  killed = []
  result = _on_flink(cluster, catdog, out / 'flink', *CATDOG_FLAGS, loopback=True,
                     during=lambda launcher: killed.append(
                         _kill_the_converting_task_manager(cluster, launcher)))
  _succeeded(result, cluster)
  jobs = cluster.rest('/jobs/overview')['jobs']
  newest = max(jobs, key=lambda job: job['start-time'])
  exceptions = cluster.rest(f'/jobs/{newest["jid"]}/exceptions')
  assert convert(catdog, out / 'local', *CATDOG_FLAGS) == 0
  return {'flink': out / 'flink', 'local': out / 'local', 'killed': killed,
          'exceptions': exceptions}


@pytest.mark.slow
def test_flink_writes_the_local_runners_records_with_statistics_and_near_duplicates(catdog_runs,
                                                                                    catdog):
  flink, local = (output_digest(catdog_runs[name], str(catdog)) for name in ('flink', 'local'))
  manifest = flink['manifest']
  assert manifest['num_examples'] > 0 and manifest['status'] == 'complete'
  assert manifest['duplicates']['near']['num_dropped'] > 0  # near duplicates found, dropped
  assert manifest['statistics']['num_pixels'] > 0
  assert flink == local


@pytest.mark.slow
def test_a_task_manager_killed_during_the_conversion_loses_and_doubles_no_record(catdog_runs):
  """The TaskManager running the conversion step was killed (SIGKILL) during Flink's run of
  ``catdog_runs``; the job completed with the local runner's records
  (test_flink_writes_the_local_runners_records_with_statistics_and_near_duplicates)."""
  assert catdog_runs['killed'] and catdog_runs['killed'][0].startswith('taskmanager-')
  exceptions = catdog_runs['exceptions']
  # Flink saw the loss and restarted the tasks (the run did not merely finish before it)
  assert exceptions.get('exceptionHistory', {}).get('entries'), exceptions


# --- nightly, with masks -------------------------------------------------------------------------

NIGHT_FLAGS = ('--masks=voc', '--num_shards=1', '--splits=train=0.5,validation=0.5', '--stats')


@pytest.mark.slow
def test_a_nightly_pair_with_masks_on_flink_writes_the_local_runners_nights(cluster, tmp_path):
  """../shared/data/segmentation/voc_palette (3 photos and their palette masks): night 1 (on
  the local runner), then night 2 after one mask changed, on Flink and on the local runner,
  each from a copy of the same night 1: on Flink, night 2 converts that image and its mask
  again, reuses the other two records from night 1's shards, publishes dt=night 2 and points
  LATEST at it, and holds what the local runner's night 2 holds. (Night 1 runs on the local
  runner alone: the whole conversion on Flink, masks aside, is catdog_runs', and each Flink
  job costs a minute or more of the suite.)"""
  voc = tmp_path / 'voc'
  shutil.copytree(shared_data('segmentation/voc_palette'), voc)
  root, local_root = tmp_path / 'flink', tmp_path / 'local'
  assert convert(voc, root, '--run_date=2026-12-01', *NIGHT_FLAGS) == 0
  assert manifest_of(root / 'dt=2026-12-01')['num_examples'] == 3
  shutil.copytree(root, local_root)

  mask = voc / 'SegmentationClass' / '2011_000006.png'
  mask.write_bytes(mask.read_bytes() + b'\0')  # other bytes (after IEND), the same pixels
  _succeeded(_on_flink(cluster, voc, root, '--run_date=2026-12-02', *NIGHT_FLAGS,
                       loopback=True), cluster)
  assert (root / 'LATEST').read_text().strip() == 'dt=2026-12-02'
  assert (root / 'dt=2026-12-01' / '_SUCCESS').is_file()
  manifest = manifest_of(root / 'dt=2026-12-02')
  night = manifest['incremental']
  assert night['reused_from'].endswith('dt=2026-12-01')
  assert (night['reused'], night['converted']) == (2, 1)
  assert manifest['statistics']['num_pixels'] > 0
  assert convert(voc, local_root, '--run_date=2026-12-02', *NIGHT_FLAGS) == 0
  assert _night(root / 'dt=2026-12-02', voc) == _night(local_root / 'dt=2026-12-02', voc)


# --- a launcher stopped by SIGTERM --------------------------------------------------------------

@pytest.mark.slow
def test_sigterm_to_the_launcher_cancels_the_flink_job_and_publishes_nothing(
    cluster, catdog, tmp_path):
  """A scheduler stops the launcher while Flink runs the job: the launcher cancels the job (on
  the cluster, through Flink's REST API: Beam's job server does not pass a cancel on), says so
  in one line and exits 143; the job ends cancelled, without publishing."""
  before = {job['jid'] for job in cluster.rest('/jobs/overview')['jobs']}
  ours = []

  def stop_once_running(launcher):
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline and launcher.poll() is None:
      running = [job['jid'] for job in cluster.rest('/jobs/overview')['jobs']
                 if job['jid'] not in before and job['state'] == 'RUNNING']
      if running:
        ours.extend(running)
        launcher.send_signal(signal.SIGTERM)
        return
      time.sleep(0.2)
    pytest.fail('the job did not start running on Flink')

  out = tmp_path / 'flink'
  result = _on_flink(cluster, catdog, out, *CATDOG_FLAGS, during=stop_once_running)
  assert result.returncode == 143, result.stderr[-4000:]
  lines = result.stderr.strip().splitlines()
  assert 'interrupted (SIGTERM); nothing published' in lines[-1], lines[-3:]
  assert any(f'cancelled Flink job {ours[0]}' in line and 'interrupted' in line
             for line in lines), lines[-5:]
  assert _final_state(cluster, ours[0]) == 'CANCELED'
  assert not (out / '_SUCCESS').exists()


# --- a failed run -------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_run_over_the_failure_fraction_on_flink_exits_1_in_one_line_and_publishes_nothing(
    cluster, tmp_path):
  """8 photos and 2 files that do not decode (../shared/data/messy), --max_failure_fraction=0.1:
  2 of 10 failed. The verdict is the same on every attempt: the launcher cancels the job after
  its first failure instead of waiting for Flink's restart strategy to run it 5 more times."""
  before = {job['jid'] for job in cluster.rest('/jobs/overview')['jobs']}
  images = tmp_path / 'images' / 'photos'
  images.mkdir(parents=True)
  for path in sorted((SAMPLES / 'ants').glob('*.jpg'))[:8]:
    shutil.copyfile(path, images / path.name)
  messy = shared_data('messy')
  for name in ('constructed__zero_bytes.jpg', 'constructed__html_error_page_saved_as.jpg'):
    shutil.copyfile(messy / name, images / name)
  out = tmp_path / 'out'
  result = _on_flink(cluster, images.parent, out, '--label_source=none', '--image_size=32',
                     '--max_failure_fraction=0.1', '--stats=false', loopback=True)
  assert result.returncode == 1, result.stderr[-4000:]
  lines = result.stderr.strip().splitlines()
  assert 'Traceback' not in result.stderr, result.stderr[-4000:]
  assert 'ERROR run failed: 2 of 10 image inputs failed' in lines[-1], lines[-1]
  assert 'more than --max_failure_fraction=0.1' in lines[-1], lines[-1]
  assert manifest_of(out)['status'] == 'failed'
  assert_nothing_a_reader_takes(out)
  (job,) = [job['jid'] for job in cluster.rest('/jobs/overview')['jobs']
            if job['jid'] not in before]
  assert _final_state(cluster, job) == 'CANCELED'
  history = cluster.rest(f'/jobs/{job}/exceptions')['exceptionHistory']['entries']
  attempts = [entry for entry in history if 'RunFailed' in entry['stacktrace']]
  # cancelled before the restart strategy's 6 attempts ran out (1 on a quiet machine: the watch
  # polls every 0.5 s, a restart waits 2 s; more when the REST API answers slowly under load)
  assert 1 <= len(attempts) < 6, [entry['exceptionName'] for entry in history]


def _final_state(cluster, job_id: str) -> str:
  """The job's state once Flink is done with it (it may still be cancelling)."""
  deadline = time.monotonic() + JOB_TIMEOUT_S
  while (state := cluster.rest(f'/jobs/{job_id}')['state']) not in ('CANCELED', 'FAILED',
                                                                    'FINISHED'):
    assert time.monotonic() < deadline, f'the job ran on ({state})'
    time.sleep(0.5)
  return state


# --- what is tested is what is deployed ---------------------------------------------------------

SHARED_SETTINGS = ('restart-strategy.type', 'restart-strategy.fixed-delay.attempts',
                   'restart-strategy.fixed-delay.delay', 'heartbeat.interval',
                   'heartbeat.rpc-failure-threshold', 'heartbeat.timeout', 'taskmanager.network.sort-shuffle.min-buffers',
                   'taskmanager.memory.task.off-heap.size', 'taskmanager.memory.managed.fraction',
                   'cluster.uncaught-exception-handling')


def test_the_launcher_finds_the_clusters_rest_api_and_a_verdict_by_its_exception():
  """pipeline.flink_job: the REST address of a Flink or portable run only,
  and a failure by design told by its exception's line, not by a source line naming it."""
  def url(*flags):
    return flink_job.rest_url(PipelineOptions(list(flags)))

  assert url('--runner=PortableRunner', '--flink_rest_address=localhost:8081') == (
      'http://localhost:8081')
  # the job server's cluster, which it may name otherwise than the launcher
  assert url('--runner=PortableRunner', '--flink_master=flink-jobmanager:8081') is None
  assert url('--runner=FlinkRunner', '--flink_master=https://flink:8081/') == 'https://flink:8081'
  assert url('--runner=FlinkRunner') is None  # Beam's [auto]: no address known
  assert url('--runner=DataflowRunner', '--flink_rest_address=localhost:8081') is None

  def traceback_of(error):
    try:
      raise error  # ClaimLost: a source line that names one, shown in the traceback
    except (RuntimeError, OSError):
      return traceback.format_exc()

  by_design = FAILURE_BY_DESIGN_LINE
  assert by_design.search(traceback_of(RunFailed('2 of 10 image inputs failed')))[1] == (
      'RunFailed')
  bad_luck = traceback_of(OSError('Connection reset by peer'))
  assert 'ClaimLost: a source line' in bad_luck and by_design.search(bad_luck) is None


def test_compose_and_kubernetes_run_the_tested_flink_with_its_settings():
  """docker-compose.yml and k8s/flink-session.yaml: the Flink minor version of the local
  cluster and its restart strategy, heartbeats and shuffle buffers."""
  import yaml  # pylint: disable=import-outside-toplevel
  minor = '.'.join(local_cluster.FLINK_VERSION.split('.')[:2])
  expected = {key: str(local_cluster.FLINK_SETTINGS[key]) for key in SHARED_SETTINGS}
  flink = REPO / 'deploy' / 'flink'
  compose = yaml.safe_load((flink / 'docker-compose.yml').read_text())['services']
  properties = {}
  for name in ('flink-jobmanager', 'flink-taskmanager'):
    assert compose[name]['image'] == f'flink:{minor}', name
    properties.update(yaml.safe_load(compose[name]['environment']['FLINK_PROPERTIES']))
  assert {key: str(properties[key]) for key in SHARED_SETTINGS} == expected
  assert f'beam_flink{minor}_job_server' in compose['beam-job-server']['image']
  session = yaml.safe_load((flink / 'k8s' / 'flink-session.yaml').read_text())['spec']
  assert session['image'] == f'flink:{minor}'
  assert session['flinkVersion'] == 'v' + minor.replace('.', '_')
  configuration = session['flinkConfiguration']
  assert {key: str(configuration[key]) for key in SHARED_SETTINGS} == expected
