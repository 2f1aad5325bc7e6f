"""CPU per image of the conversion DoFn's own code, this checkout against another, side by side.

    .venv/bin/python bench/convert_step.py [--vs=CHECKOUT] [--rounds=5] [--passes=3]
        [--images=1000] [--image_size=64] [--parts] [--json=PATH]

Calls ``transforms.image.convert._ConvertImageFn.process`` in a plain loop (no Beam runner: no
coders, no shuffles, no other step) over the 64x64 photos of Tiny ImageNet's validation set
(``../shared/data/tiny_imagenet_val``), with what the job does by default at
``--image_size=64``: ``--stats`` (the pixel sums of every 4th of 5 images, standing in for the
training split), ``--image_checks`` (the measures), labels from ``val_annotations.txt``, JPEG
at quality 90. Each round runs one process per checkout, one after the other (this checkout,
then ``--vs``), each importing its own code (``PYTHONPATH=CHECKOUT:CHECKOUT/reader``), reading
the files once untimed (so both read from the page cache), converting them once untimed, then
``--passes`` timed passes: ``time.process_time`` (user + system CPU of the process) per image,
the smallest pass kept. The table gives each checkout's median over the rounds and the ratio;
interleaving the rounds keeps the comparison fair on a shared machine.

``--parts``: also the CPU per image of each piece the DoFn calls, each in its own loop over the
same photos (smallest of 5 passes), in each checkout's process of every round, the median over
the rounds: what the DoFn's time is made of. A piece alone runs with its own data hot in the caches and another
piece's data cold (at ``--image_size=256`` the pixels of 1,000 images do not fit), so the
pieces do not add up to the DoFn's figure.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO.parent / 'shared' / 'data' / 'tiny_imagenet_val'


def _images(limit: int):
  """LabeledImage of the first ``limit`` photos (sorted by name), their val_annotations label,
  split 'train' for 4 of every 5, 'validation' for the 5th."""
  from transforms.elements import LabeledImage  # pylint: disable=import-outside-toplevel
  labels = {}
  for line in (DATA / 'val_annotations.txt').read_text().splitlines():
    fields = line.split('\t')
    labels[fields[0]] = fields[1]
  paths = sorted((DATA / 'images').glob('*.JPEG'))[:limit]
  return [LabeledImage(str(path), f'images/{path.name}', labels[path.name],
                       'validation' if i % 5 == 4 else 'train') for i, path in enumerate(paths)]


def _dofn(image_size: int):
  from transforms.image import codec  # pylint: disable=import-outside-toplevel
  from transforms.image.convert import _ConvertImageFn  # pylint: disable=import-outside-toplevel
  fn = _ConvertImageFn(codec.ImageSpec(image_size=image_size), stats_split='train', measure=True)
  fn.setup()
  fn.start_bundle()
  return fn


def child(args) -> dict:
  """One process's measurement of the DoFn (see the module docstring)."""
  images = _images(args.images)
  class_names = sorted({image.label for image in images})
  fn = _dofn(args.image_size)
  for image in images:  # the files into the page cache, the code warm
    pathlib.Path(image.path).read_bytes()
  outputs = []

  def one_pass():
    outputs.clear()
    for image in images:
      outputs.extend(fn.process(image, class_names, len(images)))

  one_pass()
  times = []
  for _ in range(args.passes):
    start = time.process_time()
    one_pass()
    times.append((time.process_time() - start) * 1000 / len(images))
  result = {'cpu_ms_per_image': min(times), 'passes': times, 'outputs': len(outputs)}
  if args.parts:
    result['parts'] = parts(args)
  return result


def _run_child(checkout: pathlib.Path, args, with_parts: bool) -> dict:
  env = {**os.environ, 'PYTHONPATH': f'{checkout}{os.pathsep}{checkout / "reader"}'}
  command = [sys.executable, str(pathlib.Path(__file__).resolve()), '--child',
             f'--images={args.images}', f'--passes={args.passes}',
             f'--image_size={args.image_size}'] + (['--parts'] if with_parts else [])
  result = subprocess.run(command, env=env, cwd=checkout, check=True, capture_output=True,
                          text=True)
  return json.loads(result.stdout.strip().splitlines()[-1])


def parts(args) -> dict:
  """piece -> CPU ms per image of what the DoFn calls, each in its own loop."""
  import hashlib  # pylint: disable=import-outside-toplevel
  from transforms.files import reads  # pylint: disable=import-outside-toplevel
  from transforms.image import codec, image_measures  # pylint: disable=import-outside-toplevel
  from transforms.image import example, pixel_sums  # pylint: disable=import-outside-toplevel
  images = _images(args.images)
  spec = codec.ImageSpec(image_size=args.image_size)
  data = [reads.read_bytes(image.path) for image in images]
  converted = [codec.convert_keeping_pixels(item, spec) for item in data]
  stored = [pixel_sums.stored_pixels(item.encoded, 3) for item in converted]
  pieces = [
      ('reads.read_bytes', lambda image, _, __: reads.read_bytes(image.path)),
      ('codec.convert_keeping_pixels (decode, resize, encode)',
       lambda _, item, __: codec.convert_keeping_pixels(item, spec)),
      ('pixel_sums.stored_pixels (decode the stored JPEG)',
       lambda _, __, c: pixel_sums.stored_pixels(c.encoded, 3)),
      ('pixel_sums.pixel_sums', None),
      ('image_measures.measure', lambda _, __, c: image_measures.measure(c.pixels, c.source_size)),
      ('example.build_example', lambda image, _, c: example.build_example(
          c.encoded, image.relpath, 'ab' * 32, image.label, 7)),
      ('hashlib.sha256 of the source', lambda _, item, __: hashlib.sha256(item).hexdigest()),
  ]
  rows = []
  for name, piece in pieces:
    if piece is None:
      def loop():
        for pixels in stored:
          pixel_sums.pixel_sums(pixels)
    else:
      def loop(piece=piece):
        for image, item, conv in zip(images, data, converted):
          piece(image, item, conv)
    loop()
    best = float('inf')
    for _ in range(5):
      start = time.process_time()
      loop()
      best = min(best, time.process_time() - start)
    rows.append((name, best * 1000 / len(images)))
  return dict(rows)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--vs', default=None, help='another checkout of the repository')
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--passes', type=int, default=3)
  parser.add_argument('--images', type=int, default=1000)
  parser.add_argument('--image_size', type=int, default=64)
  parser.add_argument('--parts', action='store_true')
  parser.add_argument('--json', default=None)
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(child(args)))
    return
  if not DATA.is_dir():
    sys.exit(f'{DATA} is missing: the benchmark reads the real photos in ../shared/data')
  checkouts = {'this checkout': REPO}
  if args.vs:
    checkouts['--vs'] = pathlib.Path(args.vs).resolve()
  results = {name: [] for name in checkouts}
  pieces = {name: {} for name in checkouts} if args.parts else {}
  for round_number in range(args.rounds):
    for name, checkout in checkouts.items():
      result = _run_child(checkout, args, with_parts=args.parts)
      results[name].append(result['cpu_ms_per_image'])
      for piece, value in result.get('parts', {}).items():
        pieces[name].setdefault(piece, []).append(value)
    print(f'round {round_number + 1}: ' + ', '.join(
        f'{name} {values[-1]:.4f}' for name, values in results.items()), flush=True)
  print(f'\nCPU ms per image of _ConvertImageFn.process, {args.images} photos of '
        f'{DATA.name}, --image_size={args.image_size}; median of {args.rounds} rounds '
        f'(each the smallest of {args.passes} passes)\n')
  print('| checkout | CPU ms/img (median) | rounds |')
  print('|---|---|---|')
  medians = {}
  for name, values in results.items():
    medians[name] = statistics.median(values)
    print(f'| {name} ({checkouts[name]}) | {medians[name]:.4f} | '
          + ', '.join(f'{value:.4f}' for value in values) + ' |')
  if args.vs:
    print(f'\nthis checkout / --vs: {medians["this checkout"] / medians["--vs"]:.3f}')
  if pieces:
    names = list(pieces)
    print('\nThe pieces, each in its own loop (CPU ms per image, median of the rounds):\n')
    print('| piece | ' + ' | '.join(names) + (' | ratio |' if len(names) == 2 else ' |'))
    print('|---' * (len(names) + 1 + (len(names) == 2)) + '|')
    for piece in pieces[names[0]]:
      values = [statistics.median(pieces[name][piece]) for name in names]
      ratio = f' | {values[0] / values[1]:.2f}' if len(values) == 2 else ''
      print(f'| {piece} | ' + ' | '.join(f'{value:.4f}' for value in values) + ratio + ' |')
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(
        {'checkouts': {name: str(path) for name, path in checkouts.items()},
         'cpu_ms_per_image': results, 'medians': medians, 'parts': pieces}, indent=1))


if __name__ == '__main__':
  main()
