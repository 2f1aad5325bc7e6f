"""Where the job's start-up goes: one whole run, phase by phase, from launch to exit.

    .venv/bin/python bench/startup_phases.py [--data=../shared/data/hymenoptera] [--times=11]
        [--runs=1] [--image_size=160] [--skip_samples] [--json=PATH] [-- extra job flags]

Runs ``python -m pipeline.run`` as users do (a fresh interpreter, the job's defaults) on the
README's first input (``samples/hymenoptera``, 48 files: in the launcher's own process) and on
``--data`` repeated ``--times`` times (distinct names, symlinks; 11 x hymenoptera is 4,367
JPEGs: the multi-process runner), ``--runs`` times each. The job runs through this script,
which wraps a few of its functions and of Beam's to leave a timestamp (wall clock, the same on
every process) in an events file; the worker processes of the multi-process runner run through
it too (their command line is replaced), so their start, their imports, their first bundle and
the first image they convert are seen. It prints, per input, the time of each phase:

    python up              launch -> this script's first line (interpreter and site start)
    import apache_beam     Beam alone
    import pipeline.run    the job's own modules and what they import beyond Beam
    flags, runner, claim   option parsing, the local runner's defaults (the input's file
                           count), the flags' validation, the output's claim
    job config             JobConfig.from_options: label map, layout probe, the split plan
    output prepared        the output folder checked and prepared (prepare_output_dir)
    graph built            build_pipeline
    graph translated       Pipeline.run up to the first stage: the runner API proto, fusion
    first image            the first stage's start -> the first converted image (worker
                           processes started, their imports, the listing, labels, shuffle)
    conversion             the first -> the last converted image
    after conversion       the last image -> the last stage's end (counts, statistics, index,
                           metadata, publication) and the workers stopped
    runner to return       the manifest's runner counters, the summary, the log
    interpreter exit       run() returned -> the process reaped

then the workers' own start (spawn -> Beam imported -> first bundle -> first image), the
slowest fused stages, and which heavy packages each kind of process had imported. The wrappers
add a few milliseconds; compare phases, not the total, with ``bench/writer.py --startup``.
"""

import json
import os
import sys
import time

_EVENTS_ENV = 'STARTUP_PHASES_EVENTS'
_T0 = time.time()

HEAVY_PACKAGES = ('tensorflow', 'tensorflow_transform', 'tfx_bsl', 'torch', 'cv2', 'PIL',
                  'simplejpeg', 'numpy', 'pandas', 'pyarrow', 'scipy', 'sklearn', 'google.cloud',
                  'googleapiclient', 'boto3', 'botocore', 'grpc', 'apache_beam.io.gcp.bigquery',
                  'apache_beam.runners.dataflow', 'tqdm')
"""Packages whose presence in a process the report lists (each costs tens of ms or more)."""


# --- inside the job's processes -----------------------------------------------------------------

def _event(name, **extra):
  """Appends one timestamped event (this process's pid) to the events file."""
  line = json.dumps({'pid': os.getpid(), 'name': name, 't': time.time(), **extra})
  with open(os.environ[_EVENTS_ENV], 'a', encoding='utf-8') as handle:
    handle.write(line + '\n')


def _heavy_loaded():
  """The :data:`HEAVY_PACKAGES` this process has imported."""
  return [name for name in HEAVY_PACKAGES if name in sys.modules]


def _wrap(owner, attribute, name, each=False):
  """Replaces ``owner.attribute`` (a function or method) by one that leaves ``name`` start and
  end events (``each``: every call; else the first call only)."""
  original = getattr(owner, attribute)
  seen = []

  def wrapper(*args, **kwargs):
    first = not seen
    seen.append(1)
    if first or each:
      _event(f'{name} start')
    try:
      return original(*args, **kwargs)
    finally:
      if first or each:
        _event(f'{name} end')
  setattr(owner, attribute, wrapper)


def _wrap_classmethod(cls, attribute, name):
  """:func:`_wrap` for a classmethod."""
  original = getattr(cls, attribute)

  def wrapper(_, *args, **kwargs):
    _event(f'{name} start')
    try:
      return original(*args, **kwargs)
    finally:
      _event(f'{name} end')
  setattr(cls, attribute, classmethod(wrapper))


def _hook_progress():
  """The conversion's progress file: its first update is the first converted image; its last
  write (at every bundle's end) follows the last."""
  # pylint: disable=import-outside-toplevel
  from transforms.image import progress
  update, flush = progress.ProgressFile.update, progress.ProgressFile.flush
  state = {'first': True}

  def first_update(self, done=0, failed=0, total=None):
    if state['first'] and (done or failed):
      state['first'] = False
      _event('first image', heavy=_heavy_loaded(), modules=len(sys.modules))
    update(self, done, failed, total)

  def timed_flush(self):
    flush(self)
    _event('progress written', done=self._counts['done'])  # pylint: disable=protected-access
  progress.ProgressFile.update, progress.ProgressFile.flush = first_update, timed_flush


def _hook_bundles():
  """The runner's bundles (one event pair per bundle, with its fused stage's name)."""
  # pylint: disable=import-outside-toplevel
  from apache_beam.runners.portability.fn_api_runner import fn_runner, worker_handlers
  execute = fn_runner.FnApiRunner._execute_bundle  # pylint: disable=protected-access

  def timed(self, context, bundle_manager, bundle_input):
    stage = bundle_manager.stage.name
    _event('bundle start', stage=stage)
    try:
      return execute(self, context, bundle_manager, bundle_input)
    finally:
      _event('bundle end', stage=stage)
  fn_runner.FnApiRunner._execute_bundle = timed  # pylint: disable=protected-access
  _wrap(fn_runner.FnApiRunner, 'run_via_runner_api', 'runner api')
  _wrap(fn_runner.FnApiRunner, 'create_stages', 'fusion')
  _wrap(fn_runner.FnApiRunner, 'run_stages', 'stages')
  _wrap(worker_handlers.WorkerHandlerManager, 'close_all', 'workers stopped')


def _hook_workers():
  """The multi-process runner's workers run through this script (``--_worker``)."""
  # pylint: disable=import-outside-toplevel
  from apache_beam.runners.portability import local_job_service
  from apache_beam.transforms import environments
  original = environments.SubprocessSDKEnvironment.from_command_string.__func__

  def through_this_script(cls, command_string, *args, **kwargs):
    command_string = command_string.replace(
        '-m apache_beam.runners.worker.sdk_worker_main',
        f'{os.path.abspath(__file__)} --_worker')
    return original(cls, command_string, *args, **kwargs)
  environments.SubprocessSDKEnvironment.from_command_string = classmethod(through_this_script)
  spawn = local_job_service.SubprocessSdkWorker.run

  def timed_spawn(self):
    _event('worker spawned')
    return spawn(self)
  local_job_service.SubprocessSdkWorker.run = timed_spawn


def _job_main(argv):
  """The launcher: ``python -m pipeline.run ARGV`` with the events left."""
  _event('python up', since_t0=time.time() - _T0)
  import apache_beam  # pylint: disable=import-outside-toplevel,unused-import
  _event('apache_beam imported')
  # pylint: disable=import-outside-toplevel
  from pipeline import local_runner, outputs
  from pipeline import run as job
  from pipeline.config import JobConfig
  _event('pipeline.run imported', heavy=_heavy_loaded(), modules=len(sys.modules))
  _wrap(local_runner, 'apply_local_runner_defaults', 'runner defaults')
  _wrap_classmethod(JobConfig, 'from_options', 'job config')
  _wrap(outputs, 'prepare_output_dir', 'output prepared')
  _wrap(job, 'build_pipeline', 'graph')
  _wrap(apache_beam.Pipeline, 'run', 'pipeline run')
  _hook_bundles()
  _hook_workers()
  _hook_progress()
  run = job.run

  def timed_run():
    _event('run called')
    status = run(argv)
    _event('run returned', status=status)
    return status
  job.run = timed_run
  job.main()  # as ``python -m pipeline.run`` does


def _worker_main():
  """A worker process of the multi-process runner: Beam's SDK harness, with the events."""
  _event('worker up')
  # pylint: disable=import-outside-toplevel
  import runpy
  from apache_beam.runners.worker import bundle_processor, sdk_worker
  from apache_beam.runners.worker import sdk_worker_main  # pylint: disable=unused-import
  _event('worker beam imported')
  _wrap(sdk_worker.SdkWorker, 'process_bundle', 'worker bundle')
  _wrap(bundle_processor.BundleProcessor, '__init__', 'worker bundle processor', each=True)
  _hook_progress()
  sys.argv = sys.argv[:1]
  runpy.run_module('apache_beam.runners.worker.sdk_worker_main', run_name='__main__')
  _event('worker done', heavy=_heavy_loaded(), modules=len(sys.modules))


# --- the parent: runs and reports ---------------------------------------------------------------

def _first(events, name, pid=None):
  times = [e['t'] for e in events if e['name'] == name and (pid is None or e['pid'] == pid)]
  return min(times) if times else None


def _last(events, name):
  times = [e['t'] for e in events if e['name'] == name]
  return max(times) if times else None


def phases(events, launched, exited):
  """The phase table of one run: [(phase, seconds)] from its events, launch and exit times."""
  launcher = next(e['pid'] for e in events if e['name'] == 'python up')
  mine = [e for e in events if e['pid'] == launcher]
  marks = [
      ('python up', launched, _first(mine, 'python up')),
      ('import apache_beam', _first(mine, 'python up'), _first(mine, 'apache_beam imported')),
      ('import pipeline.run', _first(mine, 'apache_beam imported'),
       _first(mine, 'pipeline.run imported')),
      ('flags, runner, claim', _first(mine, 'run called'), _first(mine, 'job config start')),
      ('  of which runner defaults (file count)', _first(mine, 'runner defaults start'),
       _first(mine, 'runner defaults end')),
      ('job config', _first(mine, 'job config start'), _first(mine, 'job config end')),
      ('output prepared', _first(mine, 'job config end'), _first(mine, 'graph start')),
      ('graph built', _first(mine, 'graph start'), _first(mine, 'graph end')),
      ('graph translated', _first(mine, 'graph end'), _first(mine, 'stages start')),
      ('first image', _first(mine, 'stages start'), _first(events, 'first image')),
      ('conversion', _first(events, 'first image'), _last_image(events)),
      ('after conversion', _last_image(events), _first(mine, 'stages end')),
      ('  of which workers stopped', _first(mine, 'workers stopped start'),
       _first(mine, 'workers stopped end')),
      ('runner to return', _first(mine, 'stages end'), _first(mine, 'run returned')),
      ('interpreter exit', _first(mine, 'run returned'), exited),
  ]
  rows = [(name, None if start is None or end is None else end - start)
          for name, start, end in marks]
  rows.append(('launch to first image', _first(events, 'first image') - launched))
  rows.append(('whole run', exited - launched))
  return rows


def _last_image(events):
  """When the last image was converted: the last progress write that counted it."""
  written = [e for e in events if e['name'] == 'progress written']
  last = {}
  for event in written:
    last[event['pid']] = max(last.get(event['pid'], 0), event['done'])
  done = [e['t'] for e in written if e['done'] == last[e['pid']] and e['done']]
  return max(done) if done else None


def workers(events):
  """Each worker's start: [(pid, spawn->up, up->Beam imported, ->first bundle, bundle
  processors' build, ->first image)] relative to the launcher's spawn events."""
  spawns = sorted(e['t'] for e in events if e['name'] == 'worker spawned')
  pids = [e['pid'] for e in sorted(events, key=lambda e: e['t']) if e['name'] == 'worker up']
  rows = []
  for spawn, pid in zip(spawns, pids):
    up = _first(events, 'worker up', pid)
    beam = _first(events, 'worker beam imported', pid)
    bundle = _first(events, 'worker bundle start', pid)
    builds = [e for e in events if e['pid'] == pid and e['name'].startswith(
        'worker bundle processor')]
    build_s = sum(e['t'] * (1 if e['name'].endswith('end') else -1) for e in builds)
    image = _first(events, 'first image', pid)
    rows.append((pid, up - spawn, beam - up, bundle and bundle - beam, build_s,
                 image and image - spawn))
  return rows


def stages(events, top):
  """The ``top`` slowest fused stages: [(stage, bundles, seconds)], and the count of stages."""
  seconds, bundles, started = {}, {}, {}
  for event in events:
    if event['name'] == 'bundle start':
      started[event['stage']] = event['t']
    elif event['name'] == 'bundle end':
      stage = event['stage']
      seconds[stage] = seconds.get(stage, 0) + event['t'] - started.pop(stage)
      bundles[stage] = bundles.get(stage, 0) + 1
  slowest = sorted(seconds, key=seconds.get, reverse=True)[:top]
  return [(stage[:70], bundles[stage], seconds[stage]) for stage in slowest], len(seconds)


def run_once(input_dir, output_dir, flags, events_path):
  """One run of the job through this script; (events, launch time, exit time, status)."""
  # pylint: disable=import-outside-toplevel
  import subprocess
  if os.path.exists(events_path):
    os.remove(events_path)
  env = dict(os.environ, **{_EVENTS_ENV: events_path})
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  cmd = [sys.executable, os.path.abspath(__file__), '--_job', f'--input_dir={input_dir}',
         f'--output_dir={output_dir}', '--overwrite', *flags]
  launched = time.time()
  result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
  exited = time.time()
  if result.returncode != 0:
    raise RuntimeError(f'the job failed (exit {result.returncode}):\n{result.stderr[-3000:]}')
  with open(events_path, encoding='utf-8') as handle:
    events = [json.loads(line) for line in handle]
  return events, launched, exited


def report_run(name, events, launched, exited, top):
  """Prints one run's phases, workers, slowest stages and heavy imports; returns them."""
  # pylint: disable=import-outside-toplevel
  import common
  rows = phases(events, launched, exited)
  print(f'\n{name}\n')
  print(common.format_table(('phase', 's'), rows))
  worker_rows = workers(events)
  if worker_rows:
    print()
    print(common.format_table(('worker pid', 'spawn -> up s', 'import Beam s',
                               '-> first bundle s', 'bundle processors built s',
                               'spawn -> first image s'), worker_rows))
  slowest, count = stages(events, top)
  print(f'\n{count} fused stages; the {len(slowest)} slowest:\n')
  print(common.format_table(('stage', 'bundles', 's'), slowest))
  heavy = {'launcher at pipeline.run imported': next(
      e['heavy'] for e in events if e['name'] == 'pipeline.run imported')}
  for event in events:
    if event['name'] in ('first image', 'worker done') and 'heavy' in event:
      heavy[f"{event['name']} (pid {event['pid']})"] = event['heavy']
  print()
  print(common.format_table(('process, when', 'heavy packages imported'),
                            [(when, ', '.join(names)) for when, names in heavy.items()]))
  return {'phases': rows, 'workers': worker_rows, 'stages': slowest, 'fused_stages': count,
          'heavy': heavy}


def main(argv=None):
  # pylint: disable=import-outside-toplevel
  import argparse
  import pathlib
  import tempfile
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
  import common
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--data', default=str(common.SHARED_DATA / 'hymenoptera'))
  parser.add_argument('--times', type=int, default=11,
                      help='Repetitions of --data (11 x hymenoptera: 4,367 JPEGs); 0: skip.')
  parser.add_argument('--limit', type=int, default=None, help='First N photos of --data only.')
  parser.add_argument('--runs', type=int, default=1, help='Runs of each input.')
  parser.add_argument('--image_size', type=int, default=160,
                      help='--image_size of the repeated input\'s runs (the samples: default).')
  parser.add_argument('--skip_samples', action='store_true',
                      help='Skip the README command on samples/hymenoptera.')
  parser.add_argument('--top', type=int, default=8, help='Slowest fused stages listed.')
  parser.add_argument('--json', default=None, help='Also write the figures as JSON here.')
  args, job_flags = parser.parse_known_args(argv)
  job_flags = [flag for flag in job_flags if flag != '--']
  report = {'machine_before': common.machine(), 'runs': []}
  with tempfile.TemporaryDirectory(prefix='bench_startup_phases_') as tmp:
    work = pathlib.Path(tmp)
    inputs = []
    if not args.skip_samples:
      inputs.append(('README command: samples/hymenoptera (48 files)',
                     common.REPO / 'samples' / 'hymenoptera', job_flags))
    if args.times:
      root = pathlib.Path(args.data).resolve()
      links = common.repeat_tree(common.image_files(root, args.limit), root, args.times,
                                 work / 'data')
      inputs.append((f'{len(links)} photos ({args.times} x {root.name}), '
                     f'--image_size={args.image_size}', work / 'data',
                     [f'--image_size={args.image_size}', common.FOLLOW_LINKS,
                      *common.one_class_flags(), *job_flags]))
    for name, input_dir, flags in inputs:
      for run in range(args.runs):
        events, launched, exited = run_once(input_dir, work / 'out', flags,
                                            str(work / 'events.jsonl'))
        figures = report_run(f'{name}, run {run + 1}', events, launched, exited, args.top)
        report['runs'].append({'input': name, **figures})
  report['machine_after'] = common.machine()
  print()
  common.print_machine(report)
  common.write_json(args.json, report)


if __name__ == '__main__':
  if '--_job' in sys.argv or '--_worker' in sys.argv:
    sys.path.remove(os.path.dirname(os.path.abspath(__file__)))  # bench/'s modules: not the job's
  if '--_job' in sys.argv:
    _job_main([a for a in sys.argv[1:] if a != '--_job'])
  elif '--_worker' in sys.argv:
    _worker_main()
  else:
    main()
