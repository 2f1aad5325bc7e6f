"""A million images on one machine (issue 15): the whole job against a plain codec loop, and
its peak memory, at two sizes of the same real photos.

    .venv/bin/python bench/million.py [--copies=10,1000] [--work=/tmp/imagerecords_million]
        [--image_size=64] [--workers=2] [--flags='...'] [--skip_loop] [--compare=CHECKOUT]
        [--photos=N] [--json=PATH]

The files: :func:`common.distinct_copies`, ``N`` distinct copies of each of Tiny ImageNet's
1,000 validation photos (64x64 JPEGs; a JPEG comment segment makes each file's bytes differ,
the pixels do not) in 200 class folders, for each ``N`` of ``--copies`` (10 and 1,000 copies:
10,000 and 1,000,000 files; written once into ``--work/copiesN`` and kept for the next run).

Rows, all in ONE invocation, each in its own process, one after the other:

* ``plain loop``: the limit. ``--workers`` processes (``multiprocessing.Pool``, fork), each
  reading every file it is given (``open().read()``), decoding it with libjpeg-turbo
  (``simplejpeg.decode_jpeg``), resizing it with OpenCV to the job's geometry (shorter side =
  ``--image_size``; ``cv2.resize`` is always called, INTER_AREA when shrinking, INTER_CUBIC
  otherwise, where the job's codec skips a resize to the same size) and encoding it
  (``simplejpeg.encode_jpeg``, quality 90, 4:2:0, the job's defaults), over the LARGEST set.
  Listing the files is not timed (the job's listing is); its CPU is the pool workers'.
* ``other N files`` (``--compare``): the job of another checkout (e.g. a ``git worktree`` of
  main) on each set, right after this one's.
* ``job N files``: ``python -m pipeline.run`` on each set, exactly as a user runs it: the job's
  defaults (multi-process local runner, one SDK worker per usable core, here pinned to
  ``--direct_num_workers=--workers``, 4 shards per split, ``--stats``, ``--image_checks``) and
  ``--image_size``, plus ``--flags``. Timed from the command's start to its exit (start-up,
  listing and the final reports included).

Each row: wall seconds, images/s, CPU ms per image (user + system of the row's whole process
tree, ``RUSAGE_CHILDREN``), cores busy, and the peak PSS of the whole process tree (the
launcher, which is the runner, and every SDK worker; ``/proc/PID/smaps_rollup`` every 0.2 s,
as ``bench/memory.py``: a page shared by k processes counts 1/k in each). Printed: the table,
where each job's time per image goes by step of the graph (the manifest's ``step_msecs``, and
the rest of the CPU: the runner's own work, on a quiet machine), the ratio job/loop at the
largest size (target >= 0.5), the job's PSS growth from the smallest to the largest size
(target <= 25%) and its peak (target <= 2 GiB).

``--image_size``: 64 by default, the photos' own size, so that what is measured is the
pipeline around the codec: at the job's default 256 every 64x64 photo is enlarged 16x in
pixels and JPEG-encoded at 256x256, and the loop's work alone is 0.28-0.30 ms of CPU per
image against 0.07-0.11 ms at 64 (docs/benchmarks.md), where the issue's loop measured 0.11 ms
(17,500 images/s on 2 cores): reachable only without that enlargement.

``--photos=N``: the first N photos only (a smoke test, ``tests/test_bench.py``).
"""

import argparse
import json
import os
import pathlib
import resource
import shlex
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=wrong-import-position
from memory import _memory  # pylint: disable=wrong-import-position

LOOP_RATIO = 0.5  # the target: the job's rate at least half the plain loop's
MAX_PEAK_MIB = 2048  # the target: peak PSS of the whole job at most 2 GiB
MAX_GROWTH = 0.25  # the target: at most 25% above the smallest size's peak
QUALITY = 90
_POLL_S = 0.2


def run_tree_measured(cmd, cwd=None, env=None, also=(), poll_s=_POLL_S):
  """Runs ``cmd``; (exit status, wall s, CPU s of its tree, peak PSS sum bytes, output,
  (the launcher's PSS, the rest of the tree's) at that peak, bytes). ``also``: process ids
  (e.g. a Flink cluster's services) whose trees count in the PSS sum, in "the rest"; their CPU
  time is not in the figure (it is not in ``RUSAGE_CHILDREN`` until they are reaped).
  ``poll_s``: seconds between two samples (reading ``smaps_rollup`` of large processes, JVMs,
  costs CPU itself)."""
  env = dict(os.environ if env is None else env, TF_CPP_MIN_LOG_LEVEL='2')
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  with tempfile.TemporaryFile() as log:
    start = time.perf_counter()
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                               cwd=cwd or str(common.REPO))
    peak, launcher_peak, workers_peak = 0, 0, 0
    while process.poll() is None:
      pids = {pid for root in (process.pid, *also) for pid in common.process_tree(root)}
      figures = {pid: _memory(pid)[0] for pid in pids}
      total = sum(figures.values())
      if total > peak:  # the launcher (the runner, its GroupByKeys) and the SDK workers
        peak = total
        launcher_peak = figures.get(process.pid, 0)
        workers_peak = total - launcher_peak
      time.sleep(poll_s)
    wall = time.perf_counter() - start
    log.seek(0)
    output = log.read().decode('utf-8', 'replace')
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  return process.returncode, wall, cpu, peak, output, (launcher_peak, workers_peak)


# --- the plain loop, in a child process -------------------------------------------------------

_SIZE = None


def _loop_init(image_size):
  global _SIZE  # pylint: disable=global-statement
  _SIZE = image_size


def _loop_one(path):
  """Read, decode, resize (shorter side = _SIZE), encode; the output's length."""
  import cv2  # pylint: disable=import-outside-toplevel
  import simplejpeg  # pylint: disable=import-outside-toplevel
  with open(path, 'rb') as handle:
    data = handle.read()
  pixels = simplejpeg.decode_jpeg(data, colorspace='RGB')
  height, width = pixels.shape[:2]
  scale = _SIZE / min(width, height)
  size = (_SIZE if width <= height else max(1, round(width * scale)),
          _SIZE if height <= width else max(1, round(height * scale)))
  pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA if scale < 1
                      else cv2.INTER_CUBIC)
  return len(simplejpeg.encode_jpeg(pixels, quality=QUALITY, colorspace='RGB',
                                    colorsubsampling='420'))


def loop_child(root, workers, image_size):
  """The plain loop's process: lists ``root`` (not timed), converts every file in a Pool;
  prints one JSON line (images, seconds, output bytes)."""
  import multiprocessing  # pylint: disable=import-outside-toplevel
  files = []
  for folder, _, names in os.walk(root):
    files.extend(os.path.join(folder, name) for name in names)
  files.sort()
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  with multiprocessing.get_context('fork').Pool(
      workers, initializer=_loop_init, initargs=(image_size,)) as pool:
    pool.map(_loop_one, files[:8 * workers], chunksize=1)  # warm-up: imports
    start = time.perf_counter()
    total = sum(pool.imap_unordered(_loop_one, files, chunksize=256))
    seconds = time.perf_counter() - start
  after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the pool's workers, reaped by now
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  print(json.dumps({'images': len(files), 'seconds': seconds, 'output_bytes': total,
                    'cpu_s': cpu}))


def row_loop(root, workers, image_size):
  cmd = [sys.executable, __file__, '--_loop', str(root), str(workers), str(image_size)]
  status, wall, cpu, peak, output, _ = run_tree_measured(cmd)
  lines = [line for line in output.splitlines() if line.startswith('{')]
  if status != 0 or not lines:
    raise RuntimeError(f'the plain loop failed ({status}):\n{output[-3000:]}')
  result = json.loads(lines[-1])
  # CPU: the pool's workers (a warm-up of 8 images each included), not the untimed listing
  return {'row': 'plain loop', 'images': result['images'], 'seconds': result['seconds'],
          'wall_with_listing_s': wall, 'cpu_s': result['cpu_s'],
          'cpu_s_with_listing': cpu, 'peak_pss_mib': peak / 2**20}


# --- the job -------------------------------------------------------------------------------

def row_job(root, files, workers, image_size, flags, out, tree=None, name='job',
            poll_s=_POLL_S):
  """The job of the checkout ``tree`` (default: this one) on ``root``."""
  cmd = [sys.executable, '-m', 'pipeline.run', f'--input_dir={root}', f'--output_dir={out}',
         '--overwrite', f'--image_size={image_size}', f'--direct_num_workers={workers}',
         '--direct_running_mode=multi_processing', *flags]
  env = None
  if tree:
    env = dict(os.environ, PYTHONPATH=f'{tree}{os.pathsep}{tree}/reader')
  status, wall, cpu, peak, output, (launcher, workers) = run_tree_measured(
      cmd, cwd=tree, env=env, poll_s=poll_s)
  if status != 0:
    raise RuntimeError(f'{shlex.join(cmd)} exited with {status}:\n{output[-3000:]}')
  manifest = json.loads((pathlib.Path(out) / 'manifest.json').read_text())
  if manifest['num_examples'] != files:
    raise RuntimeError(f'{manifest["num_examples"]} examples written of {files} files')
  return {'row': f'{name}, {files:,} files', 'images': files, 'seconds': wall, 'cpu_s': cpu,
          'peak_pss_mib': peak / 2**20, 'launcher_pss_mib': launcher / 2**20,
          'workers_pss_mib': workers / 2**20, 'command': shlex.join(cmd),
          'step_msecs': manifest.get('step_msecs') or {}}


def add_set_flags(parser) -> None:
  """The flags of the sets and the job's image size, shared with ``flink_scale.py``."""
  parser.add_argument('--copies', default='10,1000',
                      help='Copies of the 1,000 photos per set, smallest first (10,1000: 10k '
                      'and 1M files).')
  parser.add_argument('--work', default='/tmp/imagerecords_million',
                      help='Folder of the sets (kept and reused by million.py and '
                      'flink_scale.py) and of the job outputs.')
  parser.add_argument('--image_size', type=int, default=64)
  parser.add_argument('--photos', type=int, default=None,
                      help='The first N of the 1,000 photos only (a smoke test).')


def print_rows(report: dict, rest: str = 'SDK workers and the rest') -> None:
  """Notes the machine after the rows, adds each row's images/s and CPU ms per image, and
  prints the machine line and the table of rows (``rest``: the title of the last column, the
  PSS beside the launcher's)."""
  report['machine_after'] = common.machine()
  common.print_machine(report)
  for row in report['rows']:
    row['images_per_s'] = row['images'] / row['seconds']
    row['cpu_ms_per_image'] = 1000 * row['cpu_s'] / row['images']
  print(common.format_table(
      ('row', 'images', 'wall s', 'images/s', 'CPU ms/img', 'cores busy', 'peak PSS MiB',
       'of which launcher (runner)', rest),
      [(r['row'], r['images'], r['seconds'], r['images_per_s'], r['cpu_ms_per_image'],
        r['cpu_s'] / r['seconds'], r['peak_pss_mib'], r.get('launcher_pss_mib'),
        r.get('workers_pss_mib')) for r in report['rows']]))


def step_table(jobs) -> str:
  """Where each image's time goes, per top-level step of the graph (the manifest's
  ``step_msecs``: each step's own code, over all workers, elapsed time), in ms per image for
  each job row; the last line is the row's CPU time less the steps' sum: on a quiet machine
  the runner's own work (its GroupByKeys, serving the data plane), start-up and the launcher's
  reports; on a busy one the steps' time includes waiting for a core and this goes down, even
  below zero."""
  steps = sorted({step for job in jobs for step in job['step_msecs']},
                 key=lambda step: -jobs[-1]['step_msecs'].get(step, 0))
  rows = [(step, *(job['step_msecs'].get(step, 0) / job['images'] for job in jobs))
          for step in steps]
  rows.append(("(the run's CPU less the steps: the runner, start-up)",
               *((1000 * job['cpu_s'] - sum(job['step_msecs'].values())) / job['images']
                 for job in jobs)))
  return common.format_table(('step: ms per image', *(job['row'] for job in jobs)), rows)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  add_set_flags(parser)
  parser.add_argument('--workers', type=int, default=2)
  common.add_job_flags(parser)
  parser.add_argument('--skip_loop', action='store_true')
  parser.add_argument('--compare', default=None,
                      help='Another checkout of the project (e.g. a `git worktree` of main): its '
                      'job runs too, on each set, right after this one\'s (rows "other").')
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  copies = sorted(int(c) for c in args.copies.split(','))
  work = pathlib.Path(args.work)
  sets = []
  for n in copies:
    start = time.perf_counter()
    root = work / (f'copies{n}' if args.photos is None else f'copies{n}_first{args.photos}')
    files = common.distinct_copies(root, n, args.photos)
    print(f'{files:,} files in {root} (made or found in {time.perf_counter() - start:.0f} s)',
          flush=True)
    sets.append((root, files))
  report = {'machine_before': common.machine(), 'image_size': args.image_size,
            'workers': args.workers, 'flags': args.flags, 'rows': []}
  loop = None
  if not args.skip_loop:
    loop = row_loop(sets[-1][0], args.workers, args.image_size)
    report['rows'].append(loop)
    print(f"plain loop: {loop['images']:,} images in {loop['seconds']:.1f} s", flush=True)
  jobs = []
  for root, files in sets:
    job = row_job(root, files, args.workers, args.image_size, shlex.split(args.flags),
                  work / f'out{files}')
    jobs.append(job)
    report['rows'].append(job)
    print(f"{job['row']}: {job['seconds']:.1f} s, peak PSS {job['peak_pss_mib']:,.0f} MiB",
          flush=True)
    if args.compare:
      other = row_job(root, files, args.workers, args.image_size, shlex.split(args.flags),
                      work / f'other{files}', tree=args.compare, name='other')
      report['rows'].append(other)
      print(f"{other['row']}: {other['seconds']:.1f} s, peak PSS "
            f"{other['peak_pss_mib']:,.0f} MiB", flush=True)
  print_rows(report)
  print(step_table(jobs))
  big, small = jobs[-1], jobs[0]
  ratio = big['images_per_s'] / loop['images_per_s'] if loop else None
  growth = big['peak_pss_mib'] / small['peak_pss_mib'] - 1 if len(jobs) > 1 else None
  peak = max(j['peak_pss_mib'] for j in jobs)
  targets = [
      (f'job / plain loop, images/s at {big["images"]:,}', ratio, f'>= {LOOP_RATIO}',
       common.verdict(ratio, LOOP_RATIO)),
      (f'peak PSS growth {small["images"]:,} -> {big["images"]:,}',
       growth, f'<= {MAX_GROWTH}',
       'not measured' if growth is None else 'met' if growth <= MAX_GROWTH else 'NOT met'),
      ('largest peak PSS MiB', peak, f'<= {MAX_PEAK_MIB}',
       'met' if peak <= MAX_PEAK_MIB else 'NOT met'),
  ]
  common.finish_report(report, targets, args.json)


if __name__ == '__main__':
  if len(sys.argv) > 1 and sys.argv[1] == '--_loop':
    loop_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
  else:
    main()
