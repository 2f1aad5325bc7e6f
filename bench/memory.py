"""Memory benchmark: the job's peak memory at 1x, 4x and 16x the same real photos.

    .venv/bin/python bench/memory.py [--data=../shared/data/hymenoptera] [--base_repeat=4]
        [--sizes=1,4,16] [--image_size=256] [--num_shards=4] [--flags='...'] [--json=PATH]

The 1x data set is the JPEGs of ``--data`` repeated ``--base_repeat`` times (hymenoptera: 397
JPEGs x 8 = 3,176 images, so 16x is 50,816 images, past the 20,000 the goal asks for); size
``k`` repeats them ``base_repeat * k`` times. The 1x run must last long enough for the SDK
workers to reach their steady-state memory (a few thousand images): a shorter one measures the
workers' warm-up, not the data's size. Copies are symlinks with distinct file names in a
temporary directory, keeping the split folders (train/, val/) and class folders, so every size
is the same real photos, more of them.

Each size runs ``python -m pipeline.run`` as a subprocess, exactly as a user does (default
multi-process local runner, one SDK worker per core, fixed ``--num_shards`` per split). Every
0.2 s the parent reads ``/proc`` for the whole process tree (the launcher, which is also the
runner, and every SDK worker process it starts) and keeps the largest sums of two figures:

* ``peak PSS``: the sum of each process's proportional set size (``/proc/PID/smaps_rollup``):
  a page shared by k processes counts 1/k in each, so the sum is the physical memory the tree
  holds. This is the figure the goal is judged on.
* ``peak RSS``: the sum of resident set sizes (``/proc/PID/statm``). The SDK workers are fresh
  interpreters that each map TensorFlow's shared libraries, and every process counts those pages
  in full, so this sum is an upper bound (about 0.4 GiB per process above the PSS here).

``getrusage(RUSAGE_CHILDREN).ru_maxrss`` is not used: it is the peak of the single largest
descendant, not what the processes hold together.

Printed: images, output size (the shard bytes in the manifest), wall time, peak PSS and RSS, the
growth of each over the 1x run, then the verdicts of the goal (peak PSS under 2 GiB at every
size, under 25% growth from 1x to 16x). Every run is checked: exit status 0,
every image in the manifest, the fixed shard count, no staging file left.
"""

import argparse
import json
import os
import pathlib
import shlex
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=wrong-import-position
from imagerecords import contract  # pylint: disable=wrong-import-position
from transforms.files.working_folders import WRITER_FOLDER  # pylint: disable=wrong-import-position

LIMIT_MIB = 2048  # the goal: peak RSS under 2 GiB at every size
MAX_GROWTH = 0.25  # the goal: under 25% growth of the peak from the smallest to the largest size


_POLL_S = 0.2
_PAGE = os.sysconf('SC_PAGE_SIZE')


def _memory(pid):
  """(PSS, RSS) of one process in bytes; (0, 0) when it is gone."""
  try:
    with open(f'/proc/{pid}/statm') as handle:
      rss = int(handle.read().split()[1]) * _PAGE
    with open(f'/proc/{pid}/smaps_rollup') as handle:
      pss = next(int(line.split()[1]) * 1024 for line in handle if line.startswith('Pss:'))
    return pss, rss
  except (OSError, StopIteration, ValueError, IndexError):
    return 0, 0


def run_sampled(cmd):
  """Runs ``cmd`` (output to a temporary file); returns (exit status, wall s, peak PSS sum,
  peak RSS sum, output), the sums in bytes over the whole process tree."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  with tempfile.TemporaryFile() as log:
    start = time.perf_counter()
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                               cwd=str(common.REPO))
    peak_pss = peak_rss = 0
    while process.poll() is None:
      figures = [_memory(member) for member in common.process_tree(process.pid)]
      peak_pss = max(peak_pss, sum(pss for pss, _ in figures))
      peak_rss = max(peak_rss, sum(rss for _, rss in figures))
      time.sleep(_POLL_S)
    wall = time.perf_counter() - start
    log.seek(0)
    output = log.read().decode('utf-8', 'replace')
  return process.returncode, wall, peak_pss, peak_rss, output


def measure(files, root, times, image_size, num_shards, workdir, flags=()):
  """Converts ``files`` repeated ``times`` times; the row's figures (see the module docstring).

  Raises:
    RuntimeError: the run failed, lost images, wrote the wrong shard count or left staging files.
  """
  source = pathlib.Path(workdir) / 'in'
  out = pathlib.Path(workdir) / 'out'
  images = len(common.repeat_tree(files, root, times, source))
  cmd = [sys.executable, '-m', 'pipeline.run', f'--input_dir={source}', f'--output_dir={out}',
         f'--image_size={image_size}', f'--num_shards={num_shards}', common.FOLLOW_LINKS,
         *flags]
  status, wall, peak_pss, peak_rss, output = run_sampled(cmd)
  if status != 0:
    raise RuntimeError(f'{" ".join(cmd)} exited with {status}:\n{output[-3000:]}')
  manifest = json.loads((out / 'manifest.json').read_text())
  if manifest['num_examples'] != images:
    raise RuntimeError(f'{manifest["num_examples"]} examples written of {images} images')
  for split, info in manifest['splits'].items():
    if len(info['shards']) != num_shards:
      raise RuntimeError(f'split {split}: {len(info["shards"])} shards, {num_shards} expected')
  if (out / WRITER_FOLDER).exists():
    raise RuntimeError(f'the writer left its staging files in {out / WRITER_FOLDER}')
  output_bytes = sum(info['bytes'] for info in manifest['splits'].values())
  return {'images': images, 'output_mib': output_bytes / 2**20, 'wall_s': wall,
          'peak_pss_mib': peak_pss / 2**20, 'peak_rss_mib': peak_rss / 2**20}


def _write_only(writer, source, out, num_shards):
  """In a child process: the photos' bytes under ``source`` as records, written to ``out`` by
  ``writer``: 'new' (this job's WriteSplits) or 'beam' (WriteToTFRecord(num_shards=N) per
  split, as the job wrote before); 'train' and 'val' by a hash of the path, 80/20."""
  # pylint: disable=import-outside-toplevel
  import hashlib

  import apache_beam as beam
  from apache_beam.io.filesystems import FileSystems
  from apache_beam.io.tfrecordio import WriteToTFRecord
  from apache_beam.options.pipeline_options import PipelineOptions

  from transforms.elements import ConvertedExample
  from transforms.outputs.write import WriteSplits

  def example(path):
    data = pathlib.Path(path).read_bytes()
    split = 'train' if hashlib.sha256(path.encode()).digest()[0] < 205 else 'val'
    return ConvertedExample(split, None, path, data, hashlib.sha256(data).digest(), '')

  paths = sorted(str(p) for p in pathlib.Path(source).rglob('*') if p.is_file())
  options = PipelineOptions(['--runner=FnApiRunner', '--direct_running_mode=multi_processing',
                             f'--direct_num_workers={os.cpu_count()}'])
  with beam.Pipeline(options=options) as p:
    examples = (p | 'paths' >> beam.Create(paths) | 'spread' >> beam.Reshuffle()
                | 'read photos' >> beam.Map(example))
    if writer == 'new':
      _ = examples | 'write' >> WriteSplits(out, {'train': num_shards, 'val': num_shards})
      return
    for split in ('train', 'val'):
      _ = (examples
           | f'{split}: keep' >> beam.Filter(lambda e, s=split: e.split == s)
           | f'{split}: bytes' >> beam.Map(lambda e: e.serialized)
           | f'{split}: write' >> WriteToTFRecord(
               FileSystems.join(out, split), file_name_suffix=contract.SHARD_SUFFIX,
               num_shards=num_shards, shard_name_template=contract.SHARD_NAME_TEMPLATE))


def measure_writers(files, root, times, writers, num_shards, workdir):
  """The writer alone, one row per writer of ``writers``, on the photos' bytes."""
  source = pathlib.Path(workdir) / 'in'
  images = len(common.repeat_tree(files, root, times, source))
  rows = []
  for writer in writers:
    out = pathlib.Path(workdir) / f'out-{writer}'
    cmd = [sys.executable, __file__, f'--_write={writer}', f'--_source={source}',
           f'--_out={out}', f'--num_shards={num_shards}']
    status, wall, peak_pss, peak_rss, output = run_sampled(cmd)
    if status != 0:
      raise RuntimeError(f'{" ".join(cmd)} exited with {status}:\n{output[-3000:]}')
    shards = sorted(out.glob('*' + contract.SHARD_SUFFIX))
    if len(shards) != 2 * num_shards:
      raise RuntimeError(f'{writer}: {len(shards)} shards written, {2 * num_shards} expected')
    rows.append({'writer': writer, 'images': images, 'wall_s': wall,
                 'output_mib': sum(p.stat().st_size for p in shards) / 2**20,
                 'peak_pss_mib': peak_pss / 2**20, 'peak_rss_mib': peak_rss / 2**20})
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--data', default=str(common.SHARED_DATA / 'hymenoptera'),
                      help='Folder of real photos (split and class folders are kept).')
  parser.add_argument('--base_repeat', type=int, default=8,
                      help='How many copies of --data make the 1x data set. Default 8.')
  parser.add_argument('--sizes', default='1,4,16', help='Multiples of the 1x set to run.')
  parser.add_argument('--image_size', type=int, default=256, help='The job\'s --image_size.')
  parser.add_argument('--num_shards', type=int, default=4, help='The job\'s --num_shards.')
  common.add_job_flags(parser)
  parser.add_argument('--writers', default='',
                      help="Instead of the job: the writer alone on the photos' bytes as "
                      "records, for each of these writers: 'new' (WriteSplits), 'beam' "
                      '(WriteToTFRecord with a fixed num_shards, as the job wrote before), '
                      "e.g. --writers=new,beam --base_repeat=1 --sizes=1,4.")
  parser.add_argument('--json', default=None, help='Also write the results as JSON here.')
  parser.add_argument('--_write', help=argparse.SUPPRESS)
  parser.add_argument('--_source', help=argparse.SUPPRESS)
  parser.add_argument('--_out', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args._write:  # pylint: disable=protected-access
    _write_only(args._write, args._source, args._out, args.num_shards)  # pylint: disable=protected-access
    return 0

  root = pathlib.Path(args.data)
  if not root.is_dir():
    sys.exit(f'{root} is missing: the benchmark reads real photos')
  files = common.image_files(root)
  sizes = [int(s) for s in args.sizes.split(',')]
  if args.writers:
    return _main_writers(args, files, root, sizes)
  rows = []
  for size in sizes:
    with tempfile.TemporaryDirectory(prefix='imagerecords-memory-') as workdir:
      row = measure(files, root, args.base_repeat * size, args.image_size, args.num_shards,
                    workdir, shlex.split(args.flags))
    row['size'] = size
    rows.append(row)
    print(f'{size}x: {row["images"]} images, {row["output_mib"]:.0f} MiB written in '
          f'{row["wall_s"]:.1f} s, peak PSS {row["peak_pss_mib"]:.0f} MiB, '
          f'peak RSS {row["peak_rss_mib"]:.0f} MiB', file=sys.stderr)
  for row in rows:
    row['pss_growth'] = row['peak_pss_mib'] / rows[0]['peak_pss_mib'] - 1
    row['rss_growth'] = row['peak_rss_mib'] / rows[0]['peak_rss_mib'] - 1

  table = common.format_table(
      ['size', 'images', 'output MiB', 'wall s', 'peak PSS MiB', 'PSS growth vs 1x',
       'peak RSS MiB (upper bound)', 'RSS growth vs 1x'],
      [[f'{r["size"]}x', r['images'], r['output_mib'], r['wall_s'], r['peak_pss_mib'],
        f'{r["pss_growth"]:+.1%}', r['peak_rss_mib'], f'{r["rss_growth"]:+.1%}']
       for r in rows])
  under = all(r['peak_pss_mib'] < LIMIT_MIB for r in rows)
  growth = rows[-1]['pss_growth']
  verdicts = {
      'peak PSS under 2 GiB at every size': under,
      f'growth {sizes[0]}x -> {sizes[-1]}x under {MAX_GROWTH:.0%}': growth < MAX_GROWTH,
  }
  print(table)
  for goal, met in verdicts.items():
    print(f'- {goal}: {"met" if met else "NOT met"}')
  common.write_json(args.json, {
      'machine': common.machine(), 'data': str(root), 'base_repeat': args.base_repeat,
      'image_size': args.image_size, 'num_shards': args.num_shards, 'flags': args.flags,
      'rows': rows,
      'verdicts': verdicts})
  return 0 if all(verdicts.values()) else 1


def _main_writers(args, files, root, sizes):
  """--writers: one row per size and writer, and each writer's growth over the sizes."""
  rows = []
  for size in sizes:
    with tempfile.TemporaryDirectory(prefix='imagerecords-memory-') as workdir:
      for row in measure_writers(files, root, args.base_repeat * size,
                                 args.writers.split(','), args.num_shards, workdir):
        row['size'] = size
        rows.append(row)
        print(f'{size}x {row["writer"]}: {row["images"]} photos, {row["output_mib"]:.0f} MiB, '
              f'peak PSS {row["peak_pss_mib"]:.0f} MiB', file=sys.stderr)
  first = {}
  for row in rows:
    base = first.setdefault(row['writer'], row['peak_pss_mib'])
    row['pss_growth'] = row['peak_pss_mib'] / base - 1
  print(common.format_table(
      ['writer', 'size', 'photos', 'output MiB', 'wall s', 'peak PSS MiB', 'PSS growth',
       'peak RSS MiB'],
      [[r['writer'], f'{r["size"]}x', r['images'], r['output_mib'], r['wall_s'],
        r['peak_pss_mib'], f'{r["pss_growth"]:+.1%}', r['peak_rss_mib']] for r in rows]))
  common.write_json(args.json, {
      'machine': common.machine(), 'data': str(root), 'base_repeat': args.base_repeat,
      'num_shards': args.num_shards, 'writers': args.writers, 'rows': rows})
  return 0


if __name__ == '__main__':
  sys.exit(main())
