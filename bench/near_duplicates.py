"""Near duplicates, quality flags and what they cost, on the shared real photos.

    .venv/bin/python bench/near_duplicates.py [--parts=recall,quality,cost,job] [--rounds=3]
        [--job_data=hymenoptera,catdog_filenames,tiny_imagenet_val] [--job_sizes=1,3]
        [--json=PATH]

``recall``: builds a set of known near duplicates from the 397 hymenoptera JPEG photos, each
  kept as is and edited five ways (re-encoded at JPEG quality 50 and 95, halved, cropped by
  4 px per side, cropped by 2% per side) plus mirrored, and runs the job's own grouping
  (``transforms.analysis.near_duplicates``: the LSH bands, the Hamming confirmation, the connected
  components) over the hashes the job computes (``codec.convert_keeping_pixels`` at the
  default 256 px, ``image_measures.measure``). Per distance threshold: the recall per edit
  (an edited copy in its original's group), the pairs of distinct photos joined (false
  matches), and the same two with every pair compared (no LSH), to show what the bands miss.

``quality``: the quality flags raised on each shared data set (hymenoptera, catdog_filenames,
  tiny_imagenet_val, messy), and which files.

``cost``: CPU time per image of the conversion alone (``codec.convert``) and with the measures
  (``convert_keeping_pixels`` + ``measure``), the two interleaved over the hymenoptera photos
  for ``--rounds`` rounds, in this process (one core): the ratio is the per-image cost of the
  hash and the flags.

``job``: the Beam job in this process (the in-memory runner, so ``time.process_time`` sees all
  of its work) over the 1,698 distinct photos of hymenoptera, catdog_filenames and
  tiny_imagenet_val (``--job_data``), linked once and three times (``--job_sizes``) (the copies make every photo an exact
  duplicate: a worst case for the grouping, whose chained edges then hold every image), with
  ``--image_checks=false`` and ``=true``, ``--rounds`` rounds: the steady-state CPU time per
  image is the difference between the two sizes (start-up and per-stage costs cancel), and the
  difference between the modes is what the hash, the flags, the grouping and the two files add.
"""

import argparse
import collections
import io
import itertools
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=wrong-import-position

from PIL import Image  # pylint: disable=wrong-import-position

from transforms.analysis import near_duplicates, quality  # noqa: E402
from transforms.image import codec, image_measures

SPEC = codec.ImageSpec(image_size=256, resize_mode='shorter_side', image_format='jpeg')
EDITS = ('jpeg q50', 'jpeg q95', 'half size', 'crop 4 px', 'crop 2%', 'mirrored')
THRESHOLDS = (4, 6, 8, 10, 12, 14)


def _jpeg(image: Image.Image, quality_: int = 90) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, 'JPEG', quality=quality_)
  return buffer.getvalue()


def _edits(data: bytes) -> dict:
  """The edited copies of one photo, as JPEG bytes."""
  with Image.open(io.BytesIO(data)) as image:
    image = image.convert('RGB')
    width, height = image.size
    dx, dy = width // 50, height // 50
    return {
        'jpeg q50': _jpeg(image, 50), 'jpeg q95': _jpeg(image, 95),
        'half size': _jpeg(image.reduce(2)),
        'crop 4 px': _jpeg(image.crop((4, 4, width - 4, height - 4))),
        'crop 2%': _jpeg(image.crop((dx, dy, width - dx, height - dy))),
        'mirrored': _jpeg(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
    }


def _phash(data: bytes) -> int:
  converted = codec.convert_keeping_pixels(data, SPEC)
  return image_measures.measure(converted.pixels, converted.source_size).phash


def _lsh_edges(items, distance):
  """The job's grouping, in this process: band buckets, then bucket_edges."""
  buckets = collections.defaultdict(list)
  for phash, node in items:
    for key in near_duplicates.band_keys(phash):
      buckets[key].append((phash, node))
  for (band, _), members in buckets.items():
    if len(members) > 1:
      yield from near_duplicates.bucket_edges(members, distance, band)


def _all_pair_edges(items, distance):
  for (hash_a, a), (hash_b, b) in itertools.combinations(items, 2):
    if image_measures.hamming(hash_a, hash_b) <= distance:
      yield a, b


def _score(edges, photos):
  """(recall per edit, distinct photo pairs joined) of the components of ``edges``."""
  group_of = {}
  for i, nodes in enumerate(near_duplicates.components(edges)):
    for node in nodes:
      group_of[node] = i
  recall = {}
  for edit in EDITS:
    found = sum(1 for photo in photos if group_of.get((photo, edit), -1)
                == group_of.get((photo, 'original'), -2))
    recall[edit] = found / len(photos)
  members = collections.defaultdict(set)
  for (photo, _), group in group_of.items():
    members[group].add(photo)
  joined = sum(len(p) * (len(p) - 1) // 2 for p in members.values())
  return recall, joined


def recall_part(report):
  root = common.shared_data('hymenoptera')
  photos = common.image_files(root)
  print(f'hashing {len(photos)} hymenoptera photos and {len(EDITS)} edits of each ...')
  items = []
  for path in photos:
    data = path.read_bytes()
    name = path.relative_to(root).as_posix()
    items.append((_phash(data), (name, 'original')))
    for edit, edited in _edits(data).items():
      items.append((_phash(edited), (name, edit)))
  names = [path.relative_to(root).as_posix() for path in photos]
  originals = [phash for phash, (_, edit) in items if edit == 'original']
  distinct = [image_measures.hamming(a, b) for a, b in itertools.combinations(originals, 2)]
  print(f'{len(distinct):,} pairs of distinct photos: closest {min(distinct)} bits apart, '
        f'median {statistics.median(distinct):.0f}')
  rows, report['recall'] = [], {}
  for distance in THRESHOLDS:
    lsh_recall, lsh_joined = _score(list(_lsh_edges(items, distance)), names)
    all_recall, all_joined = _score(list(_all_pair_edges(items, distance)), names)
    report['recall'][distance] = {'lsh': lsh_recall, 'lsh_false_pairs': lsh_joined,
                                  'all_pairs': all_recall, 'all_pairs_false_pairs': all_joined}
    rows.append([distance] + [f'{lsh_recall[e]:.1%} ({all_recall[e]:.1%})' for e in EDITS]
                + [f'{lsh_joined} ({all_joined})'])
  print('\nrecall per edit with the LSH bands (and comparing every pair), false matches = pairs '
        f'of distinct photos in one group, of {len(distinct):,}:')
  print(common.format_table(['distance'] + list(EDITS) + ['false pairs'], rows))


def quality_part(report):
  report['quality'] = {}
  for name in ('hymenoptera', 'catdog_filenames', 'tiny_imagenet_val', 'messy'):
    root = common.shared_data(name)
    counts, flagged, measured = collections.Counter(), [], 0
    for path in sorted(p for p in root.rglob('*') if p.is_file()):
      try:
        converted = codec.convert_keeping_pixels(path.read_bytes(), SPEC)
      except codec.ImageError:
        continue  # not an image the job converts (messy/ holds such files on purpose)
      measured += 1
      flags = quality.flags_of(image_measures.measure(converted.pixels, converted.source_size))
      if flags:
        counts.update(flags)
        flagged.append((path.relative_to(root).as_posix(), flags))
    report['quality'][name] = {'measured': measured, 'flagged': len(flagged),
                               'flags': dict(counts)}
    print(f'\n{name}: {len(flagged)} of {measured} images flagged: '
          + ', '.join(f'{n} {flag}' for flag, n in counts.most_common()))
    for file, flags in flagged[:12]:
      print(f'  {file}: {", ".join(flags)}')
    if len(flagged) > 12:
      print(f'  ... {len(flagged) - 12} more')


def cost_part(report, rounds):
  photos = [path.read_bytes() for path in common.image_files(common.shared_data('hymenoptera'))]

  def plain():
    for data in photos:
      codec.convert(data, SPEC)

  def measured():
    for data in photos:
      converted = codec.convert_keeping_pixels(data, SPEC)
      image_measures.measure(converted.pixels, converted.source_size)

  def measures_only(converted_all):
    for converted in converted_all:
      image_measures.measure(converted.pixels, converted.source_size)

  converted_all = [codec.convert_keeping_pixels(data, SPEC) for data in photos]
  times = collections.defaultdict(list)
  for _ in range(rounds):
    for name, fn in (('convert', plain), ('convert + measures', measured),
                     ('measures alone', lambda: measures_only(converted_all))):
      start = time.process_time()
      fn()
      times[name].append((time.process_time() - start) / len(photos) * 1e3)
  best = {name: min(values) for name, values in times.items()}
  report['cost'] = {'cpu_ms_per_image': best, 'rounds': rounds, 'images': len(photos)}
  print(f'\nCPU ms per image, best of {rounds} interleaved rounds over {len(photos)} photos '
        '(one core, 256 px shorter side):')
  for name, value in best.items():
    print(f'  {name:<20} {value:.3f}')
  print(f'  measures / convert: {best["measures alone"] / best["convert"]:.1%}; '
        f'(convert + measures) / convert - 1: {best["convert + measures"] / best["convert"] - 1:.1%}')


def _job_cpu(source: pathlib.Path, out: pathlib.Path, checks: str) -> float:
  """CPU seconds of one run of the job in this process (the in-memory runner: one process,
  so ``time.process_time`` sees all of its work)."""
  from pipeline import run as job  # pylint: disable=import-outside-toplevel
  shutil.rmtree(out, ignore_errors=True)
  argv = [f'--input_dir={source}', f'--output_dir={out}', common.FOLLOW_LINKS, '--stats=false',
          '--num_shards=2', '--splits=train=1.0', f'--image_checks={checks}',
          '--direct_running_mode=in_memory']
  start = time.process_time()
  if job.run(argv) != 0:
    sys.exit(f'the job failed (--image_checks={checks})')
  return time.process_time() - start


def job_part(report, rounds, data_sets, sizes=(1, 3)):
  files = []
  for name in data_sets:
    root = common.shared_data(name)
    files += [(root, p) for p in root.rglob('*') if p.is_file()
              and p.suffix.lower() in ('.jpg', '.jpeg', '.gif')]
  count = len(files)
  with tempfile.TemporaryDirectory() as tmp:
    sources = {}
    for times in sizes:
      sources[times] = pathlib.Path(tmp) / f'{times}x'
      for root, path in files:
        common.repeat_tree([path], root, times, sources[times] / root.name)
    _job_cpu(sources[sizes[0]], pathlib.Path(tmp) / 'warm-up', 'false')  # imports, caches
    cpu = collections.defaultdict(list)
    for _ in range(rounds):
      for times in sizes:
        for checks in ('false', 'true'):
          cpu[(times, checks)].append(_job_cpu(sources[times], pathlib.Path(tmp) / 'out', checks))
  best = {key: min(values) for key, values in cpu.items()}
  extra_images = count * (sizes[1] - sizes[0])
  per_image = {checks: (best[(sizes[1], checks)] - best[(sizes[0], checks)]) / extra_images * 1e3
               for checks in ('false', 'true')}
  report.setdefault('job', {})[','.join(data_sets)] = {
      'distinct_photos': count, 'sizes': list(sizes),
      'cpu_s': {f'{times}x {checks}': values for (times, checks), values in cpu.items()},
      'steady_cpu_ms_per_image': per_image}
  print(f'\nthe job (in-memory runner, one process) on {count} distinct photos of '
        f'{", ".join(data_sets)}, each '
        f'{" and ".join(f"{t}x" for t in sizes)} (copies: every photo then an exact duplicate), '
        f'CPU s per run, {rounds} rounds:')
  for (times, checks), values in sorted(cpu.items()):
    print(f'  {times}x --image_checks={checks:<5}  ' + ', '.join(f'{v:.2f}' for v in values))
  for checks in ('false', 'true'):
    print(f'  steady state, --image_checks={checks:<5}: {per_image[checks]:.3f} CPU ms per image '
          f'(best {sizes[1]}x - best {sizes[0]}x, over {extra_images} images)')
  print(f'  added by the checks: {per_image["true"] - per_image["false"]:+.3f} CPU ms per image, '
        f'{per_image["true"] / per_image["false"] - 1:+.1%}')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--parts', default='recall,quality,cost,job')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--job_data', default='hymenoptera,catdog_filenames,tiny_imagenet_val',
                      help='the shared data sets the job part converts (comma-separated)')
  parser.add_argument('--job_sizes', default='1,3', help='the two repetitions of them')
  parser.add_argument('--json', default=None, help='also write the figures to this file')
  args = parser.parse_args()
  report = {'machine': common.machine()}
  parts = args.parts.split(',')
  if 'recall' in parts:
    recall_part(report)
  if 'quality' in parts:
    quality_part(report)
  if 'cost' in parts:
    cost_part(report, args.rounds)
  if 'job' in parts:
    job_part(report, args.rounds, args.job_data.split(','),
             tuple(int(n) for n in args.job_sizes.split(',')))
  common.write_json(args.json, report)


if __name__ == '__main__':
  main()
