"""Where the Beam job's time per image goes: cProfile at two sizes, start-up subtracted.

    .venv/bin/python bench/profile_pipeline.py [--data=../shared/data/hymenoptera]
        [--sizes=1,8] [--limit=N] [--top=25] [--json=PATH] [-- extra job flags]

Runs ``pipeline.run`` in this process with ``--direct_running_mode=in_memory`` (so cProfile sees
every DoFn) on ``--data`` repeated at each of the two ``--sizes`` (distinct names, symlinks), and
subtracts the smaller run's profile from the larger one's: what is left is the cost of the extra
images alone, start-up and graph construction cancelled out (only functions called more often
in the larger run are counted). It prints that cost per image by where it is spent (the image
work proper in ``transforms/image/codec.py``, the rest of this project, Apache Beam, C built-ins
such as hashing and file I/O, other libraries), the ``--top`` functions by own time per image, and
the cumulative time per image of this project's functions.

The in-memory runner is one process on one core: these are the costs each core pays in the
multi-process runner, less moving elements between processes. cProfile slows Python code more
than C code, so compare shares, not absolute times, with the benchmarks' figures.
"""

import argparse
import collections
import cProfile
import json
import os
import pathlib
import pstats
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=wrong-import-position

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def _bucket(filename: str) -> str:
  """Where a profiled function lives, for the summary."""
  if filename.endswith(f'{os.sep}transforms{os.sep}image{os.sep}codec.py'):
    return 'transforms/image/codec.py (image work)'
  if filename.startswith(str(common.REPO)) and '.venv' not in filename:
    return 'rest of this project (transforms/, pipeline/, reader/)'
  if 'apache_beam' in filename:
    return 'Apache Beam (runner, coders, IO)'
  if filename.startswith('~') or filename.startswith('<'):
    return 'built-ins (C: hashing, file I/O, libjpeg-turbo, OpenCV, ...)'
  return 'other libraries'


def _profile(photos, root, times, job_flags, tmp):
  """The job under cProfile on ``photos`` repeated ``times`` times: (pstats dict, images)."""
  from pipeline import run as job  # pylint: disable=import-outside-toplevel
  work = pathlib.Path(tmp) / f'{times}x'
  common.repeat_tree(photos, root, times, work / 'data')
  argv = [f'--input_dir={work / "data"}', f'--output_dir={work / "out"}', '--overwrite',
          '--direct_running_mode=in_memory', common.FOLLOW_LINKS, *common.one_class_flags(),
          *job_flags]
  profile = cProfile.Profile()
  if profile.runcall(job.run, argv) != 0:
    sys.exit(f'the job failed at {times}x')
  manifest = json.loads((work / 'out' / 'manifest.json').read_text())
  images = sum(split['num_examples'] for split in manifest['splits'].values())
  return pstats.Stats(profile).stats, images  # pylint: disable=no-member


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--data', default=str(common.SHARED_DATA / 'hymenoptera'))
  parser.add_argument('--sizes', default='1,8', help='The two repetitions of the data set.')
  parser.add_argument('--limit', type=int, default=None, help='First N photos only.')
  parser.add_argument('--top', type=int, default=25, help='Functions listed by own time.')
  parser.add_argument('--json', default=None, help='Also write the summary as JSON here.')
  args, job_flags = parser.parse_known_args(argv)
  job_flags = [flag for flag in job_flags if flag != '--']
  small, large = sorted({int(s) for s in args.sizes.split(',')})
  root = pathlib.Path(args.data).resolve()
  photos = common.image_files(root, args.limit)
  with tempfile.TemporaryDirectory(prefix='bench_profile_') as tmp:
    before, images_before = _profile(photos, root, small, job_flags, tmp)
    after, images_after = _profile(photos, root, large, job_flags, tmp)
  extra = images_after - images_before

  # pstats rows: (primitive calls, calls, own time, cumulative time, callers)
  own = {key: row[2] - before.get(key, (0, 0, 0, 0))[2] for key, row in after.items()}
  cumulative = {key: row[3] - before.get(key, (0, 0, 0, 0))[3] for key, row in after.items()}
  calls = {key: row[1] - before.get(key, (0, 0))[1] for key, row in after.items()}
  # Only functions called more often in the larger run scale with the images; the others are
  # start-up whose time merely varies between the two runs (e.g. waiting on a lock).
  scaling = [key for key in own if calls[key] > 0]
  buckets = collections.Counter()
  for key in scaling:
    buckets[_bucket(key[0])] += own[key]
  total = sum(buckets.values())

  def name(key):
    filename, line, function = key
    filename = filename.split('site-packages/')[-1].replace(str(common.REPO) + os.sep, '')
    return f'{filename}:{line}({function})' if line else function

  print(f'{images_before} and {images_after} images ({small}x, {large}x of {len(photos)} photos); '
        f'below: the cost of the {extra} extra images, per image, under cProfile\n')
  print(common.format_table(('where (own time)', 'ms per image', 'share'), [
      (where, 1000 * seconds / extra, f'{100 * seconds / total:.0f}%')
      for where, seconds in buckets.most_common()]))
  print()
  top = sorted(scaling, key=own.get, reverse=True)[:args.top]
  print(common.format_table(('function', 'own ms per image', 'calls per image'), [
      (name(key), 1000 * own[key] / extra, calls[key] / extra) for key in top]))
  print()
  mine = sorted((key for key in scaling
                 if key[0].startswith(str(common.REPO)) and '.venv' not in key[0]),
                key=cumulative.get, reverse=True)[:args.top]
  print(common.format_table(('this project\'s function', 'cumulative ms per image'), [
      (name(key), 1000 * cumulative[key] / extra) for key in mine]))
  common.write_json(args.json, {
      'images': [images_before, images_after], 'job_flags': job_flags,
      'ms_per_image': {where: 1000 * seconds / extra for where, seconds in buckets.items()},
      'project_cumulative_ms_per_image': {name(key): 1000 * cumulative[key] / extra
                                          for key in mine}})


if __name__ == '__main__':
  main()
