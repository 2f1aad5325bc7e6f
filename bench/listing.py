"""Listing benchmark: how long the job takes to list a million files, against plain listings.

    .venv/bin/python bench/listing.py [--copies=1000] [--dest=/tmp/imagerecords_million]
        [--json=PATH]

The files: :func:`common.distinct_copies`, ``--copies`` distinct copies of each of Tiny
ImageNet's 1,000 validation photos (a comment segment makes each file's bytes differ) in 200
class folders; 1,000 copies make 1,000,000 files (about 2.7 GB, a few minutes to write, kept in
``--dest`` for the next run). Each row runs in its own process and counts what it listed:

* ``os.scandir walk``: the least Python can do (one process, ``os.scandir`` recursively,
  ``DirEntry.stat`` of each file), the floor for a listing that reads sizes and times.
* ``job's listing, local runner``: the job's own first step (``transforms.inputs.listing.
  ListImageFiles``: the top folder on one worker, then each class folder on any worker, with
  size, mtime, link and special-file rules) and a count, on the multi-process local runner.
* ``Beam fileio.MatchFiles``: ``fileio.MatchFiles(root/**)`` and a count on the same runner:
  the path the job takes for ``gs://`` and ``s3://`` roots (one pattern, so one worker lists
  it all, serially, through ``FileSystems.match``).
"""

import argparse
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=wrong-import-position

PIPELINE_FLAGS = ['--runner=FnApiRunner', '--direct_running_mode=multi_processing',
                  '--direct_num_workers=2']


def row_scandir(root):
  start, cpu = time.perf_counter(), time.process_time()
  count = 0
  folders = [root]
  while folders:
    with os.scandir(folders.pop()) as entries:
      for entry in entries:
        if entry.is_dir(follow_symlinks=False):
          folders.append(entry.path)
        else:
          entry.stat()
          count += 1
  return {'files': count, 'seconds': time.perf_counter() - start,
          'cpu_seconds_launcher': time.process_time() - cpu}


def _count_in_pipeline(root, listing):
  """Runs ``listing`` (PBegin -> PCollection) and a global count on the local runner."""
  import apache_beam as beam  # pylint: disable=import-outside-toplevel
  from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=import-outside-toplevel
  out = pathlib.Path(root).parent / f'.count-{os.getpid()}'
  start = time.perf_counter()
  with beam.Pipeline(options=PipelineOptions(PIPELINE_FLAGS)) as p:
    _ = (p | 'list' >> listing
         | 'count' >> beam.combiners.Count.Globally()
         | 'write' >> beam.Map(lambda n: out.write_text(str(n))))
  seconds = time.perf_counter() - start
  count = int(out.read_text())
  out.unlink()
  return {'files': count, 'seconds': seconds}


def row_job_listing(root):
  from transforms.inputs.listing import ListImageFiles  # pylint: disable=import-outside-toplevel

  class Listed(__import__('apache_beam').PTransform):
    def expand(self, pbegin):
      return (pbegin | ListImageFiles(root)).files

  return _count_in_pipeline(root, Listed())


def row_match_files(root):
  from apache_beam.io import fileio  # pylint: disable=import-outside-toplevel
  from transforms.files.folders import escape_pattern  # pylint: disable=import-outside-toplevel
  return _count_in_pipeline(root, fileio.MatchFiles(escape_pattern(root) + '/**'))


ROWS = {'os.scandir walk, 1 process': row_scandir,
        "job's listing, local runner": row_job_listing,
        'Beam fileio.MatchFiles, local runner': row_match_files}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--copies', type=int, default=1000)
  parser.add_argument('--dest', default='/tmp/imagerecords_million')
  common.add_row_flags(parser)
  args = parser.parse_args(argv)
  root = pathlib.Path(args.dest) / f'copies{args.copies}'
  start = time.perf_counter()
  files = common.distinct_copies(root, args.copies)
  print(f'{files:,} files in {root} (made or found in {time.perf_counter() - start:.0f} s)')
  report = {'machine_before': common.machine(), 'files': files, 'rows': []}
  rows = common.Rows(__file__, ROWS, in_process=args.in_process)
  for name in ROWS:
    result = rows.run(name, {'root': str(root)})
    result['row'] = name
    result['files_per_s'] = result['files'] / result['seconds']
    report['rows'].append(result)
    print(f"{name}: {result['files']:,} files in {result['seconds']:.1f} s", flush=True)
  report['machine_after'] = common.machine()
  common.print_machine(report)
  floor = report['rows'][0]['seconds']
  print(common.format_table(('row', 'files', 'seconds', 'files/s', 'vs os.scandir', 'peak RSS MiB'), [
      (r['row'], r['files'], r['seconds'], r['files_per_s'], r['seconds'] / floor,
       r['peak_rss_mib']) for r in report['rows']]))
  common.write_json(args.json, report)


if __name__ == '__main__':
  if not common.child_main(ROWS):
    main()
