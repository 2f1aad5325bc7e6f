"""The job on the local Flink cluster of this machine beside the local runner, at two or more
folder sizes (issue 23): throughput and the peak memory of the whole process tree.

    .venv/bin/python bench/flink_scale.py [--copies=10,1000] [--work=/tmp/imagerecords_million]
        [--image_size=64] [--workers=2] [--flags='...'] [--skip_local] [--json=PATH]

The files: ``bench/million.py``'s sets (:func:`common.distinct_copies`: ``N`` distinct copies
of each of Tiny ImageNet's 1,000 validation photos, 64x64 JPEGs, 200 class folders), kept in
``--work/copiesN`` and shared with that benchmark.

Rows, all in ONE invocation, each in its own processes, one after the other, for each size:

* ``local runner N files``: ``bench/million.py``'s job row (the multi-process local runner with
  ``--workers`` SDK workers), the job's defaults (4 shards per split, ``--stats``,
  ``--image_checks``) and ``--image_size``, plus ``--flags``;
* ``Flink N files``: a fresh local Flink cluster (``deploy/flink/local_cluster.py``: a
  JobManager, ONE TaskManager with 2 slots, Beam's job server, the Python worker pool) is
  started, the same job is submitted to it with the flags ``Cluster.flags()`` gives
  (``--parallelism=2``), and the cluster is stopped; its logs stay in ``--work/clusterN``. Timed from the launcher's start to its
  exit (the launcher uploads the job server's classpath, about 156 MB, then waits for the job),
  not counting the cluster's start (17-24 s) or stop.

Each row: wall seconds, images/s, CPU ms per image, cores busy, and the peak PSS of the whole
process tree, sampled every second (``/proc/PID/smaps_rollup``; a page shared by k processes
counts 1/k in each): for the local runner the launcher (the runner) and its SDK workers; for
Flink the launcher, the JobManager, the TaskManager, the job server and the worker pool with
its SDK workers, each with its children. CPU: the launcher's tree from ``RUSAGE_CHILDREN``;
the cluster's from ``/proc/PID/stat`` of each service (its own time and its reaped children's,
the SDK workers), as the difference over the row.

Printed: the table, then the targets of issue 23: Flink's peak PSS growth from the smallest to
the largest size (target <= 25%), and Flink's throughput at the largest size over the local
runner's (target >= 0.5).
"""

import argparse
import json
import os
import pathlib
import shlex
import shutil
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=wrong-import-position
import million  # pylint: disable=wrong-import-position
from deploy.flink import local_cluster  # pylint: disable=wrong-import-position

MAX_GROWTH = 0.25  # the target: Flink's peak at most 25% above the smallest size's
LOCAL_RATIO = 0.5  # the target: Flink's images/s at least half the local runner's
_TICKS = os.sysconf('SC_CLK_TCK')
POLL_S = 1.0  # between two samples of the PSS: reading the JVMs' smaps_rollup every 0.2 s
# took 40-55% of a core, from the rows measured


def _cpu_s(pid: int) -> float:
  """User and system seconds of ``pid`` and of its children it has reaped; 0 when it is gone."""
  try:
    with open(f'/proc/{pid}/stat') as handle:
      fields = handle.read().rsplit(')', 1)[1].split()
  except OSError:
    return 0.0
  return sum(int(value) for value in fields[11:15]) / _TICKS  # utime stime cutime cstime


def row_flink(root, files, image_size, flags, out, cluster_dir):
  """The job on a fresh local Flink cluster (one TaskManager, 2 slots); the row's figures."""
  with local_cluster.running(cluster_dir, task_managers=1) as cluster:
    services = [service.pid for service in cluster.services]
    cmd = [sys.executable, '-m', 'pipeline.run', f'--input_dir={root}', f'--output_dir={out}',
           '--overwrite', f'--image_size={image_size}', *flags, *cluster.flags()]
    cpu_before = sum(_cpu_s(pid) for pid in services)
    status, wall, cpu, peak, output, (launcher, rest) = million.run_tree_measured(
        cmd, also=services, poll_s=POLL_S)
    cpu += sum(_cpu_s(pid) for pid in services) - cpu_before
  if status != 0:
    raise RuntimeError(f'{shlex.join(cmd)} exited with {status}:\n{output[-3000:]}')
  num_examples = json.loads((pathlib.Path(out) / 'manifest.json').read_text())['num_examples']
  if num_examples != files:
    raise RuntimeError(f'{num_examples} examples written of {files} files')
  return {'row': f'Flink, {files:,} files', 'images': files, 'seconds': wall, 'cpu_s': cpu,
          'peak_pss_mib': peak / 2**20, 'launcher_pss_mib': launcher / 2**20,
          'workers_pss_mib': rest / 2**20, 'command': shlex.join(cmd)}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  million.add_set_flags(parser)
  parser.add_argument('--workers', type=int, default=2,
                      help="The local runner's SDK workers.")
  common.add_job_flags(parser)
  parser.add_argument('--skip_local', action='store_true',
                      help='Flink rows only (no throughput ratio).')
  parser.add_argument('--skip_flink', action='store_true',
                      help='Local runner rows only (a quiet rerun of one side).')
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  work = pathlib.Path(args.work)
  flags = shlex.split(args.flags)
  report = {'machine_before': common.machine(), 'image_size': args.image_size,
            'workers': args.workers, 'flags': args.flags, 'rows': []}
  local, flink = [], []
  for copies in sorted(int(c) for c in args.copies.split(',')):
    root = work / (f'copies{copies}' if args.photos is None
                   else f'copies{copies}_first{args.photos}')
    files = common.distinct_copies(root, copies, args.photos)
    print(f'{files:,} files in {root}', flush=True)
    if not args.skip_local:
      row = million.row_job(root, files, args.workers, args.image_size, flags,
                            work / f'out{files}', name='local runner', poll_s=POLL_S)
      local.append(row)
      report['rows'].append(row)
      print(f"{row['row']}: {row['seconds']:.1f} s, peak PSS {row['peak_pss_mib']:,.0f} MiB",
            flush=True)
    if args.skip_flink:
      continue
    cluster_dir = work / f'cluster{files}'  # its logs kept until the next run of this size
    shutil.rmtree(cluster_dir, ignore_errors=True)
    row = row_flink(root, files, args.image_size, flags, work / f'flink{files}', cluster_dir)
    flink.append(row)
    report['rows'].append(row)
    print(f"{row['row']}: {row['seconds']:.1f} s, peak PSS {row['peak_pss_mib']:,.0f} MiB",
          flush=True)
  million.print_rows(report, 'the rest: SDK workers (Flink: and its cluster)')
  targets = []
  if flink:
    big, small = flink[-1], flink[0]
    growth = big['peak_pss_mib'] / small['peak_pss_mib'] - 1 if len(flink) > 1 else None
    ratio = big['images_per_s'] / local[-1]['images_per_s'] if local else None
    targets = [
        (f'Flink peak PSS growth {small["images"]:,} -> {big["images"]:,}', growth,
         f'<= {MAX_GROWTH}',
         'not measured' if growth is None else 'met' if growth <= MAX_GROWTH else 'NOT met'),
        (f'Flink / local runner, images/s at {big["images"]:,}', ratio, f'>= {LOCAL_RATIO}',
         common.verdict(ratio, LOCAL_RATIO)),
    ]
  if local:
    targets.append((f'local runner peak PSS growth {local[0]["images"]:,} -> '
                    f'{local[-1]["images"]:,}',
                    local[-1]['peak_pss_mib'] / local[0]['peak_pss_mib'] - 1
                    if len(local) > 1 else None, '(for comparison)', ''))
  common.finish_report(report, targets, args.json)


if __name__ == '__main__':
  main()
