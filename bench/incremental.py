"""What an incremental night costs against a full rebuild of the same input, side by side.

    .venv/bin/python bench/incremental.py [--sizes=4000,16000] [--json=FILE]

For each size N: N real photos (``../shared/data/hymenoptera`` repeated, every copy made
distinct by a JPEG comment segment naming it: other bytes, the same pixels) in class folders;
night 1 converts them all (``--run_date``); then 1% new files appear, 0.5% change (rewritten
with another comment) and 0.5% are removed; night 2 runs twice on that input, from copies of the
same published night 1, in alternating order: incremental (the default) and ``--full_rebuild``.
Both use the job's defaults otherwise (multi-process local runner, 256 px, ``--stats``).

Printed: each night's wall and CPU seconds; the end-to-end ratio incremental / full; the slope
ratio (seconds per image between the two sizes, so start-up and other fixed costs cancel); and
the reuse rate (records copied per second of slope) against the conversion rate. Targets of
issue 11: slope ratio at most 0.10; reuse rate at least 10x the conversion rate.
"""

import argparse
import pathlib
import shutil
import struct
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.common import (REPO, finish_report, format_table, machine, one_class_flags,  # noqa: E402
                          print_machine, run_measured, shared_data)

D1, D2 = '2026-11-01', '2026-11-02'


def _with_comment(data: bytes, text: str) -> bytes:
  """The JPEG ``data`` with a COM segment holding ``text`` right after SOI: other bytes, the
  same pixels."""
  payload = text.encode()
  return data[:2] + b'\xff\xfe' + struct.pack('>H', len(payload) + 2) + payload + data[2:]


def make_photos(root: pathlib.Path, count: int) -> list:
  """``count`` distinct photos under ``root/{ants,bees}/``; returns their paths."""
  sources = sorted(shared_data('hymenoptera').rglob('*.jpg'))
  paths = []
  for i in range(count):
    source = sources[i % len(sources)]
    target = root / source.parent.name / f'{i:07d}_{source.name}'
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(_with_comment(source.read_bytes(), f'copy {i}'))
    paths.append(target)
  return paths


def change_night(root: pathlib.Path, paths: list) -> dict:
  """1% new, 0.5% changed, 0.5% removed (every 200th file changed, every 200th+1 removed)."""
  sources = sorted(shared_data('hymenoptera').rglob('*.jpg'))
  added = len(paths) // 100
  for i in range(added):
    source = sources[i % len(sources)]
    (root / source.parent.name / f'new_{i:07d}_{source.name}').write_bytes(
        _with_comment(source.read_bytes(), f'new {i}'))
  changed = paths[::200]
  for path in changed:
    path.write_bytes(_with_comment(path.read_bytes(), 'changed'))
  removed = paths[1::200]
  for path in removed:
    path.unlink()
  return {'added': added, 'changed': len(changed), 'removed': len(removed)}


def _night(images, root, date, *flags) -> dict:
  cmd = [sys.executable, '-m', 'pipeline.run', f'--input_dir={images}',
         f'--output_dir={root}', f'--run_date={date}', *one_class_flags(), *flags]
  status, wall, peak, output, cpu = run_measured(cmd, cpu=True)
  if status != 0:
    raise RuntimeError(f'{cmd} failed:\n{output[-3000:]}')
  return {'seconds': wall, 'cpu_seconds': cpu, 'peak_rss_mib': peak / 2**20}


def measure(size: int, work: pathlib.Path) -> dict:
  images, first = work / 'images', work / 'night1'
  paths = make_photos(images, size)
  _night(images, first, D1)
  changes = change_night(images, paths)
  rows = {}
  for mode in ('incremental', 'full', 'incremental', 'full'):  # A B A B: the best of two each
    root = work / f'{mode}'
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(first, root)
    row = _night(images, root, D2, *(['--full_rebuild'] if mode == 'full' else []))
    if mode not in rows or row['seconds'] < rows[mode]['seconds']:
      rows[mode] = row
  import json  # pylint: disable=import-outside-toplevel
  manifest = json.loads((work / 'incremental' / f'dt={D2}' / 'manifest.json').read_text())
  shutil.rmtree(work)
  return {'size': size, 'changes': changes, 'incremental': rows['incremental'],
          'full': rows['full'], 'reused': manifest['incremental']['reused'],
          'converted': manifest['incremental']['converted']}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--sizes', default='4000,16000')
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  sizes = [int(s) for s in args.sizes.split(',')]
  report = {'machine_before': machine(), 'command': ' '.join(sys.argv)}
  results = []
  for size in sizes:
    with tempfile.TemporaryDirectory() as work:
      results.append(measure(size, pathlib.Path(work) / 'bench'))
      print(f'{size}: {results[-1]}', flush=True)
  report['machine_after'] = machine()
  report['results'] = results
  print_machine(report)
  print(format_table(
      ('images', 'night', 'reused', 'converted', 'wall s', 'CPU s', 'peak RSS MiB'),
      [(r['size'], mode, r['reused'] if mode == 'incremental' else 0,
        r['converted'] if mode == 'incremental' else r['size'] + r['changes']['added']
        - r['changes']['removed'], r[mode]['seconds'], r[mode]['cpu_seconds'],
        r[mode]['peak_rss_mib']) for r in results for mode in ('incremental', 'full')]))
  big, small = results[-1], results[0]
  end_to_end = big['incremental']['seconds'] / big['full']['seconds']
  targets = [('end-to-end wall, incremental / full', round(end_to_end, 3), '-', '-')]
  if len(results) > 1:
    images = big['size'] - small['size']
    slope = {mode: (big[mode]['seconds'] - small[mode]['seconds']) / images
             for mode in ('incremental', 'full')}
    ratio = slope['incremental'] / slope['full']
    # records reused per second of slope, against images converted per second of slope
    reuse_rate = (big['reused'] - small['reused']) / max(
        big['incremental']['seconds'] - small['incremental']['seconds'], 1e-9)
    conversion_rate = images / max(big['full']['seconds'] - small['full']['seconds'], 1e-9)
    targets += [
        ('slope, incremental / full (s per image)', round(ratio, 3), '<= 0.10',
         'met' if ratio <= 0.10 else 'NOT met'),
        ('reuse rate / conversion rate', round(reuse_rate / conversion_rate, 1), '>= 10',
         'met' if reuse_rate >= 10 * conversion_rate else 'NOT met')]
    report['slope_s_per_image'] = slope
  finish_report(report, targets, args.json)


if __name__ == '__main__':
  main()
