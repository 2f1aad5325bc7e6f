"""Where the multi-process job spends its CPU, worker by worker: py-spy samples every process.

    .venv/bin/python bench/worker_profile.py [--data=../shared/data/hymenoptera] [--times=12]
        [--rate=200] [--top=20] [--json=PATH] [-- extra job flags]

Runs ``python -m pipeline.run`` on ``--data`` repeated ``--times`` times (distinct names,
symlinks) with the local runner's defaults (multi-process: the launcher runs Beam's runner,
its SDK worker processes run the steps) under ``py-spy record --subprocesses`` (a sampling
profiler: it reads the stacks of the running threads ``--rate`` times a second from outside, so
it measures the C code and the threads that ``cProfile`` misses or slows; threads waiting are
left out, mostly). Each sample of an SDK worker is put to a part of the job:

- the innermost frame in this project's code names it (``transforms/image/codec.py`` and
  ``resizing.py``: decode, resize, encode, what the benchmarks' tight loop does; otherwise that
  module: the job's other per-image work and its steps);
- a sample inside an import (a ``<frozen importlib...>`` frame: a worker's start) is the
  imports', whatever module runs;
- a sample with no frame of this project is Beam's (its module: the worker's data plane,
  coders, bundle set-up), gRPC's or another library's.

The job runs twice: alone, for its CPU time (user + system of the launcher and every worker),
then under py-spy, for the shares. py-spy's own CPU would count in the second run's, and it
takes a thread waiting in C code for a running one now and then, so the samples give shares,
not seconds. It prints, for the workers, the ``--top`` parts with their samples, their share of
the workers' samples and their CPU ms per image (the first run's CPU per image times the
part's share of all samples; the other parts summed in one row), then the ``--top`` innermost
functions, and the launcher's share of all samples (its imports, graph, Beam's runner loop).
Where bench/profile_pipeline.py (cProfile, one process) says what the job's functions cost,
this says what a multi-process run spends around them.

Needs py-spy (pinned in requirements.txt) and the permission to read other processes' memory
(``ptrace``: root in a container, or ``kernel.yama.ptrace_scope=0``); py-spy names what is
missing when it cannot sample.
"""

import argparse
import collections
import os
import pathlib
import re
import shutil
import sys
import tempfile
from typing import Dict, Iterable, Tuple

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=wrong-import-position

WORKER_MARK = 'sdk_worker_main'  # the module a local run's SDK worker process runs
_FRAME_FILE = re.compile(r'\(([^()]*?):\d+\)$')  # py-spy's raw frame: 'function (file:line)'
_PROJECT = ('transforms/', 'pipeline/', 'reader/')
CODEC = 'codec: decode, resize, encode'  # transforms/image/codec.py and resizing.py


def _file_of(frame: str) -> str:
  match = _FRAME_FILE.search(frame)
  return match.group(1) if match else frame


def part_of(frames) -> str:
  """The part of the job a sample of an SDK worker is put to (module docstring), from its
  frames, outermost first (py-spy's raw format: ``function (file:line)``)."""
  if any('<frozen importlib' in frame for frame in frames):
    return 'imports (a worker starting)'
  for frame in reversed(frames):
    path = _file_of(frame)
    if path.startswith(_PROJECT):
      return CODEC if path.endswith(('image/codec.py', 'image/resizing.py')) else path
  path = _file_of(frames[-1]) if frames else '?'
  if 'apache_beam/' in path:
    return 'Beam: ' + '/'.join(path.split('apache_beam/', 1)[1].split('/')[:2])
  if '/grpc/' in path or path.startswith('grpc/'):
    return 'gRPC'
  return 'other: ' + path.rsplit('/', 1)[-1]


def read_samples(lines: Iterable[str]) -> Tuple[collections.Counter, collections.Counter,
                                                 collections.Counter]:
  """py-spy's raw output (one ``frame;frame;... COUNT`` line per stack, process frames first)
  -> (samples per process kind ('launcher', 'worker'), samples per part of the workers,
  samples per innermost function of the workers)."""
  kinds, parts, functions = collections.Counter(), collections.Counter(), collections.Counter()
  for line in lines:
    stack, _, count = line.rstrip('\n').rpartition(' ')
    if not count.isdigit():
      continue
    frames = stack.split(';')
    processes = [frame for frame in frames if frame.startswith('process ')]
    frames = [frame for frame in frames if not frame.startswith('process ')]
    kind = 'worker' if any(WORKER_MARK in process for process in processes) else 'launcher'
    kinds[kind] += int(count)
    if kind == 'worker':
      parts[part_of(frames)] += int(count)
      functions[frames[-1] if frames else '?'] += int(count)
  return kinds, parts, functions


def _py_spy() -> str:
  found = shutil.which('py-spy') or str(pathlib.Path(sys.executable).with_name('py-spy'))
  if not os.access(found, os.X_OK):
    sys.exit('py-spy is missing: .venv/bin/pip install -r requirements.txt')
  return found


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--data', default=str(common.shared_data('hymenoptera')))
  parser.add_argument('--times', type=int, default=12)
  parser.add_argument('--rate', type=int, default=200, help='samples per second')
  parser.add_argument('--top', type=int, default=20)
  parser.add_argument('--json')
  parser.add_argument('job_flags', nargs='*')
  args = parser.parse_args(argv)
  root = pathlib.Path(args.data)
  before = common.machine()
  with tempfile.TemporaryDirectory() as work:
    work = pathlib.Path(work)
    images = len(common.repeat_tree(common.image_files(root), root, args.times,
                                    work / 'photos'))
    job = [sys.executable, '-m', 'pipeline.run', f'--input_dir={work / "photos"}',
           common.FOLLOW_LINKS, *args.job_flags]
    # the CPU time, from a run of its own: py-spy's own CPU would count in the sampled run's,
    # and it sees a thread waiting in C code as running now and then
    status, wall, _, output, cpu_s = common.run_measured(
        [*job, f'--output_dir={work / "plain"}'], cpu=True)
    if status != 0:
      sys.exit(f'the job failed (exit {status}):\n{output[-3000:]}')
    raw = work / 'samples.txt'
    status, _, _, output = common.run_measured(
        [_py_spy(), 'record', '--subprocesses', '--nonblocking', '-r', str(args.rate), '-f',
         'raw', '-o', str(raw), '--', *job, f'--output_dir={work / "sampled"}'])
    if status != 0 or not raw.exists():
      sys.exit(f'the job under py-spy failed (exit {status}):\n{output[-3000:]}')
    kinds, parts, functions = read_samples(raw.read_text().splitlines())
  workers = sum(parts.values())
  if not workers:
    sys.exit('py-spy saw no SDK worker: pass -- --direct_running_mode=multi_processing for '
             'fewer than 1,000 images')

  def ms_per_image(samples: int) -> float:  # the plain run's CPU, by the samples' shares
    return samples / sum(kinds.values()) * cpu_s * 1000 / images

  rows = [[part, samples, f'{samples / workers:.1%}', f'{ms_per_image(samples):.3f}']
          for part, samples in parts.most_common(args.top)]
  rest = workers - sum(samples for _, samples in parts.most_common(args.top))
  if rest:
    rows.append([f'the other {len(parts) - args.top} parts', rest, f'{rest / workers:.1%}',
                 f'{ms_per_image(rest):.3f}'])
  report: Dict = {
      'machine_before': before, 'machine_after': common.machine(), 'images': images,
      'rate': args.rate, 'wall_s': wall,
      'cpu_s': cpu_s, 'samples': dict(kinds),
      'parts': {part: {'samples': n, 'ms_per_image': ms_per_image(n)}
                for part, n in parts.most_common()},
      'functions': {name: n for name, n in functions.most_common(args.top)}}
  common.print_machine(report)
  print(f'\n{images} images, {wall:.1f} s and {cpu_s:.1f} CPU s (launcher and workers, a run '
        f'without py-spy: {cpu_s * 1000 / images:.2f} CPU ms per image); samples: SDK workers '
        f'{kinds["worker"]}, launcher {kinds["launcher"]} '
        f'({kinds["launcher"] / sum(kinds.values()):.1%})\n')
  print(common.format_table(['part of the SDK workers\' CPU', 'samples', 'share',
                             'CPU ms per image (est.)'], rows))
  print()
  print(common.format_table(['innermost function (workers)', 'samples', 'share'],
                            [[name, n, f'{n / workers:.1%}']
                             for name, n in functions.most_common(args.top)]))
  common.write_json(args.json, report)


if __name__ == '__main__':
  main()
