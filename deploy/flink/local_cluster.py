"""A real Apache Flink session cluster on this machine's loopback, in one command.

    python -m deploy.flink.local_cluster start [--task_managers=2] [--dir=.flink-cluster]
    python -m deploy.flink.local_cluster status [--dir=...]
    python -m deploy.flink.local_cluster flags [--dir=...]    # the job's flags for this cluster
    python -m deploy.flink.local_cluster stop [--dir=...]

``start`` launches, each as its own process (and process group) with its log in ``DIR/logs``:

- a Flink JobManager (``StandaloneSessionClusterEntrypoint``) and N TaskManagers
  (``TaskManagerRunner``), from the ``apache-flink-libraries`` distribution the install step puts
  in ``.flink/`` (``FLINK_VERSION``);
- Beam's Flink job server (``FlinkJobServerDriver``), from the jars the install step copies into
  ``deploy/flink/job-server/target/lib`` (``deploy/flink/job-server/pom.xml``);
- a Beam Python SDK worker pool (``--environment_type=EXTERNAL``), with this interpreter;

waits until Flink's REST API (``/overview``) reports every TaskManager's slots and the job
server and the worker pool listen, then prints the flags that submit the job to it and writes
them with the process ids to ``DIR/cluster.json``. ``stop`` ends each process group by its id
(SIGTERM, SIGKILL after 10 s). Tests use :func:`running` (a context manager) instead.

The Flink settings (:data:`FLINK_SETTINGS`) are those of ``docker-compose.yml`` and the
Kubernetes manifests beside this file, sized for a 2-core machine: a fixed-delay restart
strategy (a lost TaskManager's tasks are restarted), 2 slots and 4 GB per TaskManager.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Dict, List, Optional, Sequence

REPO = pathlib.Path(__file__).resolve().parents[2]
# What the install step fetches (README.md: the install commands); both may be moved elsewhere.
FLINK_HOME = pathlib.Path(os.environ.get('IMAGERECORDS_FLINK_HOME', REPO / '.flink' / 'pyflink'))
JOB_SERVER_LIB = pathlib.Path(os.environ.get(
    'IMAGERECORDS_FLINK_JOB_SERVER_LIB',
    REPO / 'deploy' / 'flink' / 'job-server' / 'target' / 'lib'))
FLINK_VERSION = '1.19.3'  # apache-flink-libraries on PyPI; Beam's runner for Flink 1.19
START_TIMEOUT_S = 120
STOP_GRACE_S = 10

# Flink's configuration (config.yaml keys), shared with docker-compose.yml and k8s/ (tests/
# test_deploy.py checks the restart strategy there). Memory for 2 cores and a few GB: Python
# runs in the worker pool's SDK workers, not in these JVMs.
FLINK_SETTINGS = {
    'taskmanager.numberOfTaskSlots': 2,
    # 4 GB, as docker-compose.yml: Beam's Java side of the data plane queues the SDK workers'
    # output messages (up to 10 MB each, Beam Python's flush threshold) on the task heap, and at
    # 1,000,000 images the conversion's output ran a 2 GB TaskManager's 662 MB heap out; the JVM
    # commits only what it uses
    'taskmanager.memory.process.size': '4096m',
    # The job's many shuffles. Flink's batch jobs write each blocking result partition with its
    # sort-shuffle, which asks for 512 buffers of 32 KiB (16 MB) per partition by default; the
    # nightly graph's partitions at parallelism 2 took more than 12288 buffers (384 MB) so, and
    # failed at start ("Insufficient number of network buffers: required 512, but only 460
    # available"). 128 buffers (4 MB) a partition, and 384 MB of buffers per TaskManager.
    'taskmanager.memory.network.min': '384m',
    'taskmanager.memory.network.max': '384m',
    'taskmanager.network.sort-shuffle.min-buffers': 128,
    # Beam's gRPC data plane to the SDK workers (Netty) allocates direct memory, which Flink
    # budgets as task off-heap memory, 0 by default: at 100,000 images the TaskManager failed
    # with "OutOfMemoryError: Direct buffer memory" in the near-duplicate step
    # (bench/flink_scale.py --copies=100)
    'taskmanager.memory.task.off-heap.size': '256m',
    # Beam's Java side of the data plane buffers the SDK workers' output on the task heap,
    # which Flink's defaults left at 64 MB of a 2 GB TaskManager (40% of its memory managed, for
    # Flink's own batch operators): at 1,000,000 images the listing step's output ran it out of
    # heap ("OutOfMemoryError: Java heap space" in a gRPC thread). 10% managed: about 540 MB of
    # task heap; Flink's sorts spill to disk sooner.
    'taskmanager.memory.managed.fraction': 0.1,
    # that OutOfMemoryError, in a gRPC thread, did not fail the task: the job hung. FAIL ends
    # the TaskManager on an uncaught exception, and the restart strategy takes over.
    'cluster.uncaught-exception-handling': 'FAIL',
    'jobmanager.memory.process.size': '1024m',
    # a TaskManager that dies (SIGKILL, lost machine) fails its tasks; Flink restarts them on
    # the TaskManagers left, 5 times at most, 2 s apart: a killed TaskManager cost 2 restarts
    # in tests/test_flink.py (a second task failed on it before its loss was noticed), and
    # 5 x 2 s spans the time it takes to notice the loss (below)
    'restart-strategy.type': 'fixed-delay',
    'restart-strategy.fixed-delay.attempts': 5,
    'restart-strategy.fixed-delay.delay': '2 s',
    # A dead TaskManager refuses the heartbeat RPCs: 2 failed in a row (2 x 2 s) mark it lost.
    # One that is alive but slow to answer (a busy machine, a long garbage collection) keeps
    # its tasks for Flink's default 50 s: a 10 s timeout took live TaskManagers for lost 20
    # times in one CI run on 2 cores, and each loss ran its tasks again.
    'heartbeat.interval': 2000,
    'heartbeat.rpc-failure-threshold': 2,
    'heartbeat.timeout': 50000,
    # The JobManager's calls to a TaskManager (deploying a task, say) wait 60 s for the answer,
    # not Flink's 10 s: on the 2-core test machine, loaded by the suite beside the cluster, a
    # TaskManager took over 10 s to answer, and each call that timed out failed a task, until
    # the restart strategy gave the job up (tests/test_flink.py, at a load average of 10).
    'pekko.ask.timeout': '60 s',
}
# Java 17 needs these opens for Flink 1.19 (flink-dist's own config.yaml, env.java.opts.all).
JAVA_OPENS = ' '.join(
    ['--add-exports=java.base/sun.net.util=ALL-UNNAMED',
     '--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED',
     '--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED']
    + [f'--add-opens=java.base/{package}=ALL-UNNAMED' for package in (
        'java.lang', 'java.net', 'java.io', 'java.nio', 'sun.nio.ch', 'java.lang.reflect',
        'java.text', 'java.time', 'java.util', 'java.util.concurrent',
        'java.util.concurrent.atomic', 'java.util.concurrent.locks')])
LOG4J_PROPERTIES = """\
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = MainAppender
appender.main.name = MainAppender
appender.main.type = File
appender.main.fileName = ${sys:log.file}
appender.main.layout.type = PatternLayout
appender.main.layout.pattern = %d{yyyy-MM-dd HH:mm:ss,SSS} %-5p %-60c %x - %m%n
logger.pekko.name = org.apache.pekko
logger.pekko.level = WARN
"""


class ClusterError(RuntimeError):
  """A piece of the cluster is missing (not installed), did not start, or died."""


@dataclasses.dataclass
class Service:
  """One process of the cluster: ``name`` (``jobmanager``, ``taskmanager-1``, ``job-server``,
  ``worker-pool``), its process id (also its process group's id) and its log file."""
  name: str
  pid: int
  log: str


@dataclasses.dataclass
class Cluster:
  """A started cluster: its folder, ports (all on ``localhost``) and processes.

  ``flags()`` gives the ``pipeline.run`` flags that submit a job to it through the job server.
  """
  directory: str
  rest_port: int
  job_port: int
  artifact_port: int
  worker_pool_port: int
  task_managers: int
  slots_per_task_manager: int
  services: List[Service]

  @property
  def log_dir(self) -> pathlib.Path:
    return pathlib.Path(self.directory) / 'logs'

  @property
  def rest_url(self) -> str:
    return f'http://localhost:{self.rest_port}'

  def flags(self, loopback: bool = False) -> List[str]:
    """``--runner=PortableRunner`` and the endpoints, as README.md and deploy/flink/README.md
    give them (``--flink_rest_address``: the REST API, through which the launcher watches and
    cancels its job, ``pipeline.flink_job``); ``--parallelism`` = one TaskManager's slots, so
    that a job survives the loss of any other TaskManager.

    The Python code runs in the worker pool's SDK workers (``EXTERNAL``, as deployed), or with
    ``loopback`` in the launcher's own process (Beam's ``LOOPBACK`` environment): no worker
    process is started for the job's tasks (about 14 per job of this project, each importing
    Beam again), so a small job takes a fraction of the time, but the job dies with its
    launcher. For tests of what Flink does with the job, not of the deployed environment."""
    environment = (['--environment_type=LOOPBACK'] if loopback else
                   ['--environment_type=EXTERNAL',
                    f'--environment_config=localhost:{self.worker_pool_port}'])
    return ['--runner=PortableRunner', f'--job_endpoint=localhost:{self.job_port}',
            f'--artifact_endpoint=localhost:{self.artifact_port}',
            f'--flink_rest_address=localhost:{self.rest_port}', *environment,
            f'--parallelism={self.slots_per_task_manager}', '--job_server_timeout=120']

  def rest(self, path: str):
    """The JSON document of Flink's REST API at ``path`` (``/overview``, ``/jobs/overview``);
    raises ``urllib.error.URLError`` when the JobManager does not answer."""
    with urllib.request.urlopen(self.rest_url + path, timeout=5) as response:
      return json.load(response)

  def service(self, name: str) -> Service:
    return next(s for s in self.services if s.name == name)


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's process now holds the id: not ours any more
    return False
  try:  # a zombie child of this process counts as gone
    with open(f'/proc/{pid}/stat', encoding='ascii') as stat:
      return stat.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except OSError:
    return False


def free_ports(count: int) -> List[int]:
  """Distinct loopback ports that were free a moment ago (all held open until all are picked)."""
  sockets = []
  try:
    for _ in range(count):
      sock = socket.socket()
      sock.bind(('localhost', 0))
      sockets.append(sock)
    return [sock.getsockname()[1] for sock in sockets]
  finally:
    for sock in sockets:
      sock.close()


def _spawn(name: str, command: List[str], directory: pathlib.Path,
           env: Optional[Dict[str, str]] = None) -> Service:
  """Starts ``command`` in its own session (so that ``stop`` ends it and its children, the SDK
  workers of the pool, by one process-group id), output to ``logs/NAME.out``."""
  log = directory / 'logs' / f'{name}.out'
  with open(log, 'ab') as out:
    process = subprocess.Popen(command, cwd=directory, env=env, stdout=out,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)
  return Service(name, process.pid, str(log))


def _java_utils(conf_dir: pathlib.Path, command: str) -> List[str]:
  """The two result lines of Flink's ``BashJavaUtils COMMAND`` (JVM memory flags, then ``-D``
  settings), which Flink's own start scripts pass to the JobManager / TaskManager."""
  classpath = f'{_flink_dist()}{os.pathsep}{FLINK_HOME / "bin" / "bash-java-utils.jar"}'
  output = subprocess.run(
      ['java', '-cp', classpath, 'org.apache.flink.runtime.util.bash.BashJavaUtils', command,
       '--configDir', str(conf_dir)], capture_output=True, text=True, check=False).stdout
  results = [line.split(':', 1)[1] for line in output.splitlines()
             if line.startswith('BASH_JAVA_UTILS_EXEC_RESULT:')]
  if len(results) != 2:
    raise ClusterError(f'BashJavaUtils {command} printed no memory settings:\n{output[-3000:]}')
  return results


def _flink_dist() -> pathlib.Path:
  jars = sorted((FLINK_HOME / 'lib').glob('flink-dist-*.jar'))
  if not jars:
    raise ClusterError(
        f'no Flink distribution in {FLINK_HOME}/lib: run the install step (README.md), '
        f'pip install --no-deps --target .flink apache-flink-libraries=={FLINK_VERSION}')
  return jars[0]


def _flink_process(directory: pathlib.Path, name: str, main_class: str,
                   resource_command: str, settings: Sequence[str] = ()) -> Service:
  conf_dir = directory / 'conf'
  jvm_flags, dynamic = _java_utils(conf_dir, resource_command)
  classpath = os.pathsep.join(str(jar) for jar in sorted((FLINK_HOME / 'lib').glob('*.jar')))
  command = ['java', *jvm_flags.split(), *JAVA_OPENS.split(),
             f'-Dlog.file={directory / "logs" / (name + ".log")}',
             f'-Dlog4j.configurationFile=file:{conf_dir / "log4j.properties"}',
             '-classpath', classpath, main_class, '--configDir', str(conf_dir), *dynamic.split(),
             *settings]
  return _spawn(name, command, directory)


def _start_task_manager(directory: pathlib.Path, name: str) -> Service:
  # its resource id is its name: Flink's REST API (/taskmanagers) then names the process
  return _flink_process(directory, name, 'org.apache.flink.runtime.taskexecutor.TaskManagerRunner',
                        'GET_TM_RESOURCE_PARAMS', ['-D', f'taskmanager.resource-id={name}'])


def _write_config(directory: pathlib.Path, rpc_port: int, rest_port: int) -> None:
  conf_dir = directory / 'conf'
  conf_dir.mkdir(parents=True, exist_ok=True)
  settings = {
      **FLINK_SETTINGS,
      'env.java.opts.all': JAVA_OPENS,
      'jobmanager.rpc.address': 'localhost', 'jobmanager.rpc.port': rpc_port,
      'jobmanager.bind-host': 'localhost', 'taskmanager.bind-host': 'localhost',
      'taskmanager.host': 'localhost',
      'rest.address': 'localhost', 'rest.bind-address': 'localhost', 'rest.port': rest_port,
      'io.tmp.dirs': str(directory / 'tmp'), 'web.tmpdir': str(directory / 'tmp'),
      # the REST API's job details at most 0.1 s old (Flink caches them for 3 s by default): a
      # step that runs for a second on this machine is seen running (tests/test_flink.py
      # polls for it, to kill its TaskManager)
      'web.refresh-interval': 100,
  }
  (directory / 'tmp').mkdir(exist_ok=True)
  # config.yaml (Flink 1.19's standard YAML): a flat map of keys, each value a YAML scalar
  (conf_dir / 'config.yaml').write_text(
      ''.join(f'{key}: {json.dumps(value)}\n' for key, value in settings.items()))
  (conf_dir / 'log4j.properties').write_text(LOG4J_PROPERTIES)


def _wait(what: str, ready, cluster: Cluster, timeout_s: float = START_TIMEOUT_S) -> None:
  """Polls ``ready()`` until it is true; raises ClusterError when a process of the cluster died
  or ``timeout_s`` passed first, with the tail of that process's log."""
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    dead = [s for s in cluster.services if not _alive(s.pid)
            and not s.name.startswith('taskmanager-')]
    if dead:
      raise ClusterError(f'{dead[0].name} exited while waiting for {what}:\n{_tail(dead[0].log)}')
    if ready():
      return
    time.sleep(0.5)
  raise ClusterError(f'{what}: not within {timeout_s:.0f} s; logs in {cluster.log_dir}')


def _tail(path: str, chars: int = 3000) -> str:
  try:
    return pathlib.Path(path).read_text(errors='replace')[-chars:]
  except OSError:
    return '(no log)'


def _listens(port: int) -> bool:
  try:
    with socket.create_connection(('localhost', port), timeout=1):
      return True
  except OSError:
    return False


def _wait_for_slots(cluster: Cluster, task_managers: int) -> None:
  def ready():
    try:
      overview = cluster.rest('/overview')
    except (urllib.error.URLError, OSError, ValueError):
      return False
    return (overview['taskmanagers'] == task_managers
            and overview['slots-total'] == task_managers * cluster.slots_per_task_manager)
  _wait(f'{task_managers} TaskManagers in {cluster.rest_url}/overview', ready, cluster)


def _save(cluster: Cluster) -> None:
  path = pathlib.Path(cluster.directory) / 'cluster.json'
  path.write_text(json.dumps(dataclasses.asdict(cluster), indent=2) + '\n')


def load(directory) -> Cluster:
  """The cluster that ``start`` described in ``DIRECTORY/cluster.json``; raises
  FileNotFoundError when there is none."""
  document = json.loads((pathlib.Path(directory) / 'cluster.json').read_text())
  document['services'] = [Service(**service) for service in document['services']]
  return Cluster(**document)


def start(directory, task_managers: int = 2, python: str = sys.executable) -> Cluster:
  """Starts the cluster with its state and logs in ``directory`` (created) and returns it once
  every TaskManager's slots are registered and the job server and the worker pool listen.

  ``python``: the interpreter of the SDK workers (Beam 2.77 and the job importable: the worker
  pool starts each SDK worker as ``python -c ...`` found first on PATH). Raises ClusterError
  (after stopping what it started) when a piece is not installed, dies or does not come up
  within START_TIMEOUT_S.
  """
  directory = pathlib.Path(directory).resolve()
  (directory / 'logs').mkdir(parents=True, exist_ok=True)
  jars = sorted(JOB_SERVER_LIB.glob('*.jar'))
  if not any(jar.name.startswith('beam-runners-flink-') for jar in jars):
    raise ClusterError(f'no Beam Flink job server in {JOB_SERVER_LIB}: run the install step '
                       '(README.md), mvn -q -B -f deploy/flink/job-server/pom.xml '
                       'dependency:copy-dependencies')
  _flink_dist()
  rpc, rest, job, artifact, pool = free_ports(5)
  _write_config(directory, rpc, rest)
  cluster = Cluster(str(directory), rest, job, artifact, pool, task_managers,
                    FLINK_SETTINGS['taskmanager.numberOfTaskSlots'], [])
  try:
    cluster.services.append(_flink_process(
        directory, 'jobmanager',
        'org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint',
        'GET_JM_RESOURCE_PARAMS'))
    _save(cluster)
    for number in range(1, task_managers + 1):
      cluster.services.append(_start_task_manager(directory, f'taskmanager-{number}'))
      _save(cluster)
    cluster.services.append(_spawn('job-server', [
        'java', '-Xmx512m', '-Dorg.slf4j.simpleLogger.showDateTime=true',
        '-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS', '-cp', str(JOB_SERVER_LIB / '*'),
        'org.apache.beam.runners.flink.FlinkJobServerDriver', f'--flink-master=localhost:{rest}',
        f'--job-port={job}', f'--artifact-port={artifact}',
        # no Java expansion service: the job has no cross-language transform
        '--expansion-port=-1',
        f'--artifacts-dir={directory / "artifacts"}'], directory))
    env = dict(os.environ)
    env['PATH'] = os.path.dirname(python) + os.pathsep + env.get('PATH', '')
    # the SDK workers import the job's modules (transforms.*, imagerecords.*) from this checkout
    env['PYTHONPATH'] = os.pathsep.join(
        [str(REPO / 'reader'), str(REPO)] + [p for p in [env.get('PYTHONPATH')] if p])
    cluster.services.append(_spawn('worker-pool', [
        python, '-m', 'apache_beam.runners.worker.worker_pool_main', f'--service_port={pool}'],
        directory, env))
    _save(cluster)
    _wait_for_slots(cluster, task_managers)
    for port, name in ((job, 'the job server'), (artifact, "the job server's artifact service"),
                       (pool, 'the worker pool')):
      _wait(f'{name} on port {port}', lambda port=port: _listens(port), cluster)
  except BaseException:
    stop(cluster)
    raise
  return cluster


def _end_group(service: Service) -> None:
  """SIGTERM to the service's process group, then SIGKILL to whatever of it is left after
  STOP_GRACE_S (the worker pool's SDK workers belong to its group)."""
  try:
    os.killpg(service.pid, signal.SIGTERM)
  except ProcessLookupError:
    return
  deadline = time.monotonic() + STOP_GRACE_S
  while time.monotonic() < deadline and _alive(service.pid):
    _reap(service.pid)
    time.sleep(0.2)
  try:
    os.killpg(service.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass
  _reap(service.pid)


def _reap(pid: int) -> None:
  try:
    os.waitpid(pid, os.WNOHANG)
  except ChildProcessError:  # not a child of this process (stopped from another one)
    pass


def stop(cluster: Cluster) -> None:
  """Stops every process of the cluster, newest first, each by its process-group id."""
  for service in reversed(cluster.services):
    _end_group(service)


class running:  # pylint: disable=invalid-name  (used as a context manager, like open())
  """``with running(directory, task_managers=2) as cluster:`` starts the cluster (:func:`start`)
  and stops it (:func:`stop`) when the block ends, whatever happened in it."""

  def __init__(self, directory, task_managers: int = 2):
    self.directory, self.task_managers = directory, task_managers
    self.cluster: Optional[Cluster] = None

  def __enter__(self) -> Cluster:
    self.cluster = start(self.directory, self.task_managers)
    return self.cluster

  def __exit__(self, *exc_info) -> None:
    stop(self.cluster)


def status(cluster: Cluster) -> str:
  """One line per process (alive or not) and Flink's slot counts."""
  lines = [f'{s.name:15} pid {s.pid:7} {"running" if _alive(s.pid) else "stopped"}  {s.log}'
           for s in cluster.services]
  try:
    overview = cluster.rest('/overview')
    lines.append(f'Flink {overview["flink-version"]} at {cluster.rest_url}: '
                 f'{overview["taskmanagers"]} TaskManagers, {overview["slots-available"]} of '
                 f'{overview["slots-total"]} slots free, {overview["jobs-running"]} jobs running')
  except (urllib.error.URLError, OSError) as error:
    lines.append(f'Flink REST API at {cluster.rest_url} does not answer: {error}')
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m deploy.flink.local_cluster', description=__doc__.split('\n\n')[0])
  parser.add_argument('command', choices=('start', 'status', 'flags', 'stop'))
  parser.add_argument('--dir', default=str(REPO / '.flink-cluster'),
                      help='state and logs of the cluster (default: .flink-cluster/)')
  parser.add_argument('--task_managers', type=int, default=2)
  args = parser.parse_args(argv)
  if args.command == 'start':
    try:
      previous = load(args.dir)
      if any(_alive(s.pid) for s in previous.services):
        print(f'a cluster already runs from {args.dir}; stop it first:\n{status(previous)}',
              file=sys.stderr)
        return 1
    except FileNotFoundError:
      pass
    began = time.monotonic()
    try:
      cluster = start(args.dir, args.task_managers)
    except ClusterError as error:
      print(f'error: {error}', file=sys.stderr)
      return 1
    print(f'Flink {FLINK_VERSION} cluster up in {time.monotonic() - began:.0f} s: '
          f'{cluster.rest_url} (UI), logs in {cluster.log_dir}')
    print('Submit the job with: .venv/bin/python -m pipeline.run --input_dir=... '
          f'--output_dir=... {" ".join(cluster.flags())}\n'
          f'(or $(.venv/bin/python -m deploy.flink.local_cluster flags) for those flags); '
          'stop it with: .venv/bin/python -m deploy.flink.local_cluster stop')
    return 0
  try:
    cluster = load(args.dir)
  except FileNotFoundError:
    print(f'no cluster was started from {args.dir}', file=sys.stderr)
    return 1
  if args.command == 'status':
    print(status(cluster))
  elif args.command == 'flags':
    print(' '.join(cluster.flags()))
  else:
    stop(cluster)
    print(f'stopped; logs in {cluster.log_dir}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
