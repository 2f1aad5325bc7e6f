"""The job through Beam's portable submission path, offline on loopback.

``PortableRunner`` submits the pipeline to a job service
(``apache_beam.runners.portability.local_job_service_main``), which asks a worker pool
(``apache_beam.runners.worker.worker_pool_main``, ``--environment_type=EXTERNAL``) to start SDK
workers: the same path as a Flink job server with a Python worker-pool sidecar. Each piece runs
in its own process and working directory, so the job must pickle its DoFns, carry no module
state from the launcher and hand absolute paths to the workers::

    tmp/launch/   pipeline.run (cwd), --output_dir=portable (relative to the launcher only)
    tmp/servers/  job service + worker pool (cwd); the SDK workers inherit it
    tmp/local/    the same conversion on the local runner, for comparison

Both outputs must hold the same records: the manifests' fingerprints are order-independent
hashes of the records' bytes.

A third launch runs as another user than the worker pool, as on a host whose Docker runs the
pool as root (``deploy/flink/docker-compose.yml``): the launcher as uid 65534, the SDK workers
as root, a dated run (staged, then published by the pipeline's last step, then the launcher
adds the runner's counters to the manifest). It must publish, exit 0 and print no traceback.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
from typing import Dict

import pytest

from tests.helpers import SAMPLES
from tests.servers import free_ports, spawn, stop, tail, wait_for_port

JOB_TIMEOUT_S = 300
FLAGS = ['--num_shards=train=2,validation=1', '--image_size=64', '--resize_mode=center_crop']


@pytest.fixture(scope='module')
def portable_services(tmp_path_factory):
  """A local job service and an external worker pool on free loopback ports.

  Yields {'job_endpoint', 'worker_pool', 'job_log', 'pool_log'}; both processes are stopped by
  their ids at the end of the module, whatever happened.
  """
  workdir = tmp_path_factory.mktemp('servers')
  job_port, pool_port = free_ports(2)
  env = dict(os.environ)
  # The worker pool starts each SDK worker as a plain `python -c ...` found on PATH (Beam 2.77,
  # worker_pool_main): that must be this interpreter, with Beam and the job installed.
  env['PATH'] = os.path.dirname(sys.executable) + os.pathsep + env.get('PATH', '')
  job_log, pool_log = workdir / 'job_service.log', workdir / 'worker_pool.log'
  started = []  # (process, signal that stops it cleanly)
  try:
    job_service = spawn(['apache_beam.runners.portability.local_job_service_main',
                          f'--port={job_port}'], workdir, env, job_log)
    # SIGTERM: the job service exits through sys.exit and stops its gRPC server.
    started.append((job_service, signal.SIGTERM))
    worker_pool = spawn(['apache_beam.runners.worker.worker_pool_main',
                          f'--service_port={pool_port}'], workdir, env, pool_log)
    # SIGINT: the pool stops on KeyboardInterrupt and its atexit hook stops the SDK workers it
    # started (a plain SIGTERM would leave them behind).
    started.append((worker_pool, signal.SIGINT))
    wait_for_port(job_port, job_service, job_log)
    wait_for_port(pool_port, worker_pool, pool_log)
    yield {'job_endpoint': f'localhost:{job_port}', 'worker_pool': f'localhost:{pool_port}',
           'job_log': job_log, 'pool_log': pool_log}
  finally:
    for process, first_signal in reversed(started):
      stop(process, first_signal)


def _convert(cwd: pathlib.Path, output_dir: str, *flags: str, prefix=(), env=None
             ) -> subprocess.CompletedProcess:
  """``python -m pipeline.run`` on the samples (absolute path) from ``cwd``, bounded in time;
  ``prefix``: words before the interpreter (another user's ``setpriv``)."""
  command = [*prefix, sys.executable, '-m', 'pipeline.run', f'--input_dir={SAMPLES}',
             f'--output_dir={output_dir}', *FLAGS, *flags]
  try:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                          timeout=JOB_TIMEOUT_S, check=False, env=env)
  except subprocess.TimeoutExpired as error:
    pytest.fail(f'{command} ran past {JOB_TIMEOUT_S} s:\n{error.stderr}')


@pytest.fixture(scope='module')
def runs(portable_services, tmp_path_factory) -> Dict[str, dict]:
  """The samples converted twice: {'portable' | 'local': {'result', 'output_dir'}}."""
  launch = tmp_path_factory.mktemp('launch')
  portable = _convert(
      launch, 'portable',  # relative to the launcher's cwd only: the workers run elsewhere
      '--runner=PortableRunner', f'--job_endpoint={portable_services["job_endpoint"]}',
      '--environment_type=EXTERNAL', f'--environment_config={portable_services["worker_pool"]}',
      '--job_server_timeout=60')
  local_dir = tmp_path_factory.mktemp('local') / 'out'
  local = _convert(launch, str(local_dir), '--runner=FnApiRunner')
  return {
      'portable': {'result': portable, 'output_dir': launch / 'portable'},
      'local': {'result': local, 'output_dir': local_dir},
  }


def _manifest(output_dir: pathlib.Path) -> dict:
  return json.loads((output_dir / 'manifest.json').read_text())


@pytest.mark.slow
def test_both_runs_publish_their_output(runs, portable_services):
  for name, run in runs.items():
    result = run['result']
    assert result.returncode == 0, (
        f'{name} run exited with {result.returncode}:\n{result.stderr[-6000:]}\n'
        f'--- job service log:\n{tail(portable_services["job_log"])}\n'
        f'--- worker pool log:\n{tail(portable_services["pool_log"])}')
    assert (run['output_dir'] / '_SUCCESS').is_file(), f'{name}: no _SUCCESS'
    manifest = _manifest(run['output_dir'])
    assert manifest['num_examples'] == 48 and manifest['num_failures'] == 0, name


def test_portable_run_went_through_the_job_service_and_the_worker_pool(runs, portable_services):
  assert runs['portable']['result'].returncode == 0
  assert 'with state DONE' in portable_services['job_log'].read_text(errors='replace')
  # the SDK workers came from the external pool, not from the job service itself
  assert 'Starting worker with command' in portable_services['pool_log'].read_text(
      errors='replace')


def test_portable_and_local_runs_write_the_same_records(runs):
  portable, local = (_manifest(runs[name]['output_dir']) for name in ('portable', 'local'))
  assert sorted(portable['splits']) == sorted(local['splits']) == ['train', 'validation']
  for split, expected in local['splits'].items():
    got = portable['splits'][split]
    for key in ('num_examples', 'class_counts', 'fingerprint'):
      assert got[key] == expected[key], (split, key)
    assert ([shard['file'] for shard in got['shards']]
            == [shard['file'] for shard in expected['shards']]), split
  assert (sorted(os.listdir(runs['portable']['output_dir']))
          == sorted(os.listdir(runs['local']['output_dir'])))


# --- the launcher as another user than the SDK workers ------------------------------------------

OTHER_UID = 65534  # 'nobody': no file of this machine belongs to it


def _other_user_prefix():
  """``setpriv`` words that run a command as uid/gid OTHER_UID, keeping only the capability to
  read and search any folder (the interpreter lives under /root, mode 0700, here): every write
  is checked as that user's. Skips the test where this process cannot change its user."""
  if os.geteuid() != 0:
    pytest.skip('needs root to start the launcher as another user than the worker pool')
  if shutil.which('setpriv') is None:
    pytest.skip("util-linux's setpriv is not installed")
  return ['setpriv', f'--reuid={OTHER_UID}', f'--regid={OTHER_UID}', '--clear-groups',
          '--inh-caps=+dac_read_search', '--ambient-caps=+dac_read_search']


@pytest.mark.slow
def test_a_launcher_of_another_user_than_the_workers_publishes(portable_services, tmp_path):
  prefix = _other_user_prefix()
  launch = tmp_path / 'launch'
  launch.mkdir()
  os.chown(launch, OTHER_UID, OTHER_UID)  # the launcher's own folder; the output goes in it
  env = dict(os.environ, HOME=str(launch))
  result = _convert(
      launch, str(launch / 'nightly'), '--run_date=2026-11-21',
      '--runner=PortableRunner', f'--job_endpoint={portable_services["job_endpoint"]}',
      '--environment_type=EXTERNAL', f'--environment_config={portable_services["worker_pool"]}',
      '--job_server_timeout=60', '--stats=false', prefix=prefix, env=env)
  assert result.returncode == 0, (
      f'exit {result.returncode}:\n{result.stderr[-6000:]}\n'
      f'--- worker pool log:\n{tail(portable_services["pool_log"])}')
  assert 'Traceback' not in result.stderr, result.stderr[-6000:]
  published = launch / 'nightly' / 'dt=2026-11-21'
  assert (published / '_SUCCESS').is_file()
  assert (launch / 'nightly' / 'LATEST').read_text().strip() == 'dt=2026-11-21'
  # the two users were real: the workers (root) wrote the shards, the launcher is not root
  shards = sorted(published.glob('train-*.tfrecord'))
  assert shards and all(shard.stat().st_uid == 0 for shard in shards)
  assert (launch / 'nightly' / '.imagerecords').stat().st_uid == OTHER_UID
  manifest = _manifest(published)
  assert manifest['num_examples'] == 48 and manifest['status'] == 'complete'
  assert 'metrics' in manifest, result.stderr[-3000:]  # the launcher added the runner's counters
  assert not list(published.glob('*.tmp'))
