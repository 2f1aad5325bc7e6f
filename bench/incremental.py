"""What an incremental night costs against a full rebuild of the same input, side by side.

    .venv/bin/python bench/incremental.py [--sizes=4000,16000] [--baseline=CHECKOUT]
        [--rounds=2] [--json=FILE]

For each size N: N real photos (``../shared/data/hymenoptera`` repeated, every copy made
distinct by a JPEG comment segment naming it: other bytes, the same pixels) in class folders;
night 1 converts them all (``--run_date``); then 1% new files appear, 0.5% change (rewritten
with another comment) and 0.5% are removed; night 2 runs on that input, from copies of the same
published night 1, incremental (the default) and ``--full_rebuild``, ``--rounds`` times each in
alternating order (A B A B), the least wall time and the least CPU time of each kept (the
machine is shared: other jobs only add to either). Both use the job's defaults otherwise
(multi-process local runner, 256 px, ``--stats``).

``--baseline=CHECKOUT``: the job of another checkout (another version, e.g. from ``git worktree
add``) runs night 2 too, both ways, interleaved with this checkout's in every round (this
checkout first in odd rounds, the baseline first in even ones), so that both meet the same
load: a before/after in one run. Its processes get ``PYTHONPATH=CHECKOUT:CHECKOUT/reader``.
``--night_flags=FLAGS`` adds a variant of this checkout whose night 2 (both ways) gets FLAGS
too, interleaved the same way: e.g. ``--direct_running_mode=in_memory``, the launcher's own
process against the multi-process runner.

Printed, per checkout: each night's wall and CPU seconds; the end-to-end ratio incremental /
full; the slope ratio (seconds per image between the two sizes, so start-up and other fixed
costs cancel), by wall and by CPU time; and the reuse rate (records copied per second of
slope) against the conversion rate. Then, for this checkout's incremental night, the step
times the manifest holds (``step_msecs``: each top-level step's milliseconds over every
worker) at both sizes and their slope in microseconds per image: what an added image still
costs, step by step. Targets of issue 11 (and 26): slope ratio at most 0.10; reuse rate at
least 10x the conversion rate.

The local runner picks each night's mode from its work (``pipeline.local_runner``: a night
that converts little runs in one process), so the smallest and the largest size may run in
different modes, and their slope is then no per-image cost: ``--night_flags=
--direct_running_mode=multi_processing`` adds a variant held to the worker processes at every
size.
"""

import argparse
import json
import os
import pathlib
import shutil
import struct
import sys
import tempfile
from typing import Dict, Optional, Tuple

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.common import (REPO, finish_report, format_table, machine, one_class_flags,  # noqa: E402
                          print_machine, run_measured, shared_data, verdict)

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


def _env(checkout: Optional[str]) -> Optional[dict]:
  """The environment of a job of ``checkout`` (None: this process's, this checkout's)."""
  if checkout is None:
    return None
  return dict(os.environ, PYTHONPATH=os.pathsep.join([checkout, f'{checkout}/reader']))


def _night(images, root, date, *flags, checkout: Optional[str] = None) -> dict:
  repo = pathlib.Path(checkout) if checkout else REPO
  cmd = [sys.executable, '-m', 'pipeline.run', f'--input_dir={images}',
         f'--output_dir={root}', f'--run_date={date}', *one_class_flags(repo), *flags]
  status, wall, peak, output, cpu = run_measured(cmd, env=_env(checkout), cwd=str(repo),
                                                 cpu=True)
  if status != 0:
    raise RuntimeError(f'{cmd} failed:\n{output[-3000:]}')
  manifest = json.loads((root / f'dt={date}' / 'manifest.json').read_text())
  return {'seconds': wall, 'cpu_seconds': cpu, 'peak_rss_mib': peak / 2**20,
          'reused': (manifest['incremental'] or {}).get('reused', 0),
          'converted': (manifest['incremental'] or {}).get('converted'),
          'step_msecs': manifest.get('step_msecs') or {}}


def measure(size: int, work: pathlib.Path,
            checkouts: Dict[str, Tuple[Optional[str], Tuple[str, ...]]], rounds: int) -> dict:
  """Night 1 of ``size`` photos, the changes, then each checkout's night 2 both ways
  ``rounds`` times, interleaved; returns {checkout name: {mode: the fastest night}} and the
  changes. ``checkouts``: name -> (the checkout's path, None for this one; the night's extra
  job flags)."""
  images, first = work / 'images', work / 'night1'
  paths = make_photos(images, size)
  _night(images, first, D1)
  changes = change_night(images, paths)
  names = list(checkouts)
  best, every = {}, {}
  for number in range(rounds):
    order = names if number % 2 == 0 else names[::-1]
    for mode in ('incremental', 'full'):
      for name in order:
        root = work / f'{name}_{mode}'
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(first, root)
        path, flags = checkouts[name]
        row = _night(images, root, D2, *(['--full_rebuild'] if mode == 'full' else []),
                     *flags, checkout=path)
        shutil.rmtree(root)
        every.setdefault(name, {}).setdefault(mode, []).append(
            {key: row[key] for key in ('seconds', 'cpu_seconds')})
        kept = best.setdefault(name, {})
        if mode not in kept:
          kept[mode] = row
        else:  # the least wall and the least CPU time, each over the rounds (noise only adds)
          kept[mode] = dict(row if row['seconds'] < kept[mode]['seconds'] else kept[mode],
                            cpu_seconds=min(row['cpu_seconds'], kept[mode]['cpu_seconds']))
  shutil.rmtree(work)
  return {'size': size, 'changes': changes, 'nights': best, 'every_night': every}


def _summary(name: str, small: dict, big: dict) -> list:
  """The targets' rows of checkout ``name`` from the results at the two sizes."""
  nights = {size: result['nights'][name] for size, result in (('small', small), ('big', big))}
  end_to_end = nights['big']['incremental']['seconds'] / nights['big']['full']['seconds']
  rows = [(f'{name}: end-to-end wall, incremental / full, {big["size"]} photos',
           round(end_to_end, 3), '-', '-')]
  if small is big:
    return rows
  images = big['size'] - small['size']
  slope = {(mode, unit): (nights['big'][mode][unit] - nights['small'][mode][unit]) / images
           for mode in ('incremental', 'full') for unit in ('seconds', 'cpu_seconds')}
  ratio = slope['incremental', 'seconds'] / slope['full', 'seconds']
  cpu_ratio = slope['incremental', 'cpu_seconds'] / slope['full', 'cpu_seconds']
  reused = nights['big']['incremental']['reused'] - nights['small']['incremental']['reused']
  reuse_rate = reused / max(nights['big']['incremental']['seconds']
                            - nights['small']['incremental']['seconds'], 1e-9)
  conversion_rate = images / max(nights['big']['full']['seconds']
                                 - nights['small']['full']['seconds'], 1e-9)
  ms = {key: round(value * 1000, 3) for key, value in slope.items()}
  # a slope that is not positive is noise (too few images between the sizes for the load)
  measured = all(value > 0 for value in slope.values())
  return rows + [
      (f'{name}: slope, incremental / full (wall ms per image: {ms["incremental", "seconds"]} '
       f'vs {ms["full", "seconds"]})', round(ratio, 3), '<= 0.10',
       verdict(0.10 / ratio if measured else None, 1)),
      (f'{name}: the same by CPU (CPU ms per image: {ms["incremental", "cpu_seconds"]} vs '
       f'{ms["full", "cpu_seconds"]})', round(cpu_ratio, 3), '-', '-'),
      (f'{name}: reuse rate / conversion rate', round(reuse_rate / conversion_rate, 1), '>= 10',
       verdict(reuse_rate / conversion_rate if measured else None, 10))]


def _step_slopes(small: dict, big: dict, name: str) -> list:
  """(step, ms at the small size, ms at the big one, µs per added image) of the incremental
  night of checkout ``name``, costliest slope first."""
  before = small['nights'][name]['incremental']['step_msecs']
  after = big['nights'][name]['incremental']['step_msecs']
  images = big['size'] - small['size']
  rows = [(step, before.get(step, 0), after.get(step, 0),
           round((after.get(step, 0) - before.get(step, 0)) * 1000 / images, 1))
          for step in set(before) | set(after)]
  return sorted(rows, key=lambda row: -row[3])


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--sizes', default='4000,16000')
  parser.add_argument('--baseline', default=None,
                      help='Another checkout whose job runs night 2 too, interleaved with this '
                      "checkout's: a before/after in one run.")
  parser.add_argument('--night_flags', default=None,
                      help="Job flags (space-separated) of a variant of this checkout's night "
                      "2, run interleaved with it: e.g. '--direct_running_mode=in_memory'.")
  parser.add_argument('--rounds', type=int, default=2,
                      help='Night 2 runs per checkout and mode; the fastest is kept.')
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  sizes = [int(s) for s in args.sizes.split(',')]
  checkouts = {'this': (None, ())}
  if args.baseline:
    checkouts['baseline'] = (str(pathlib.Path(args.baseline).resolve()), ())
  if args.night_flags:
    checkouts[f'this {args.night_flags}'] = (None, tuple(args.night_flags.split()))
  report = {'machine_before': machine(), 'command': ' '.join(sys.argv),
            'checkouts': {name: ' '.join([path or str(REPO), *flags])
                          for name, (path, flags) in checkouts.items()}}
  results = []
  for size in sizes:
    with tempfile.TemporaryDirectory() as work:
      results.append(measure(size, pathlib.Path(work) / 'bench', checkouts, args.rounds))
      print(f'{size}: {json.dumps(results[-1]["every_night"])}', flush=True)
  report['machine_after'] = machine()
  report['results'] = results
  print_machine(report)
  for name, path in report['checkouts'].items():
    print(f'{name}: {path}')
  print()
  print(format_table(
      ('checkout', 'images', 'night', 'reused', 'converted', 'wall s', 'CPU s', 'peak RSS MiB'),
      [(name, r['size'], mode, night['reused'], night['converted'], night['seconds'],
        night['cpu_seconds'], night['peak_rss_mib'])
       for name in checkouts for r in results for mode, night in r['nights'][name].items()]))
  print()
  small, big = results[0], results[-1]
  targets = [row for name in checkouts for row in _summary(name, small, big)]
  if small is not big:
    steps = _step_slopes(small, big, 'this')
    report['step_slopes_us_per_image'] = {step: slope for step, _, _, slope in steps}
    print(f"this checkout's incremental night, step times (manifest step_msecs, summed over "
          f"workers) at {small['size']} and {big['size']} photos:\n")
    print(format_table(('step', f'ms at {small["size"]}', f'ms at {big["size"]}',
                        'µs per added image'), steps))
    print()
  finish_report(report, targets, args.json)


if __name__ == '__main__':
  main()
