"""CPU per image of the conversion DoFn's own code, this checkout against another, side by side.

    .venv/bin/python bench/convert_step.py [--vs=CHECKOUT] [--passes=15] [--images=1000]
        [--image_size=64] [--parts] [--json=PATH]

Calls ``transforms.image.convert._ConvertImageFn.process`` in a plain loop (no Beam runner: no
coders, no shuffles, no other step) over the 64x64 photos of Tiny ImageNet's validation set
(``../shared/data/tiny_imagenet_val``), with what the job does by default at
``--image_size=64``: ``--stats`` (the pixel sums of 4 of every 5 images, standing in for the
training split), ``--image_checks`` (the measures), labels from ``val_annotations.txt``, JPEG
at quality 90.

One process per checkout, each importing its own code (``PYTHONPATH=CHECKOUT:CHECKOUT/reader``),
started together; each reads the files once untimed (so both read from the page cache) and
converts them once untimed. Then the parent asks them for one pass each in turn (this
checkout, then ``--vs``), ``--passes`` times: a pass is ``time.process_time`` (user + system
CPU of that process) over all the images, divided by their number. Interleaving the passes,
not whole runs, keeps the comparison fair on a shared machine whose speed drifts by tens of
percent within a minute. The table gives each checkout's median pass, and the median of the
ratios of the passes run back to back.

``--parts``: also the CPU per image of each piece the DoFn calls, each in its own loop over the
same photos (smallest of 5 passes), in each process after its passes: what the DoFn's time is
made of. A piece alone runs with its own data hot in the caches and the other pieces' cold,
so the pieces do not add up to the DoFn's figure; single figures drift with the machine as
above (the pieces' passes are not interleaved).
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

# bench/ is on the path as the script's folder; the job's code comes from PYTHONPATH, each
# worker's own checkout (the repository itself is not put on the path here)
import common

REPO = common.REPO
DATA = common.SHARED_DATA / 'tiny_imagenet_val'


def _images(limit: int):
  """LabeledImage of the first ``limit`` photos (sorted by name), their val_annotations label,
  split 'train' for 4 of every 5, 'validation' for the 5th."""
  from transforms.elements import LabeledImage  # pylint: disable=import-outside-toplevel
  labels = common.tiny_imagenet_labels(DATA)
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


def worker(args) -> None:
  """A checkout's process: answers 'pass' with one timed pass (CPU ms per image) and 'parts'
  with the pieces' figures, one JSON line each, until its input ends."""
  images = _images(args.images)
  class_names = sorted({image.label for image in images})
  fn = _dofn(args.image_size)
  for image in images:  # the files into the page cache
    pathlib.Path(image.path).read_bytes()
  outputs = []

  def one_pass():
    outputs.clear()
    for image in images:
      outputs.extend(fn.process(image, class_names, len(images)))

  one_pass()  # the code and the caches warm
  print(json.dumps({'ready': len(outputs)}), flush=True)
  for line in sys.stdin:
    if line.strip() == 'pass':
      start = time.process_time()
      one_pass()
      print(json.dumps((time.process_time() - start) * 1000 / len(images)), flush=True)
    elif line.strip() == 'parts':
      print(json.dumps(parts(args)), flush=True)


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
  rows = {}
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
    rows[name] = best * 1000 / len(images)
  return rows


class _Worker:
  """A checkout's worker process, asked for one answer at a time."""

  def __init__(self, checkout: pathlib.Path, args):
    env = {**os.environ, 'PYTHONPATH': f'{checkout}{os.pathsep}{checkout / "reader"}'}
    command = [sys.executable, str(pathlib.Path(__file__).resolve()), '--worker',
               f'--images={args.images}', f'--image_size={args.image_size}']
    self._process = subprocess.Popen(command, env=env, cwd=checkout, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

  def ask(self, command: str = None):
    if command:
      self._process.stdin.write(command + '\n')
      self._process.stdin.flush()
    line = self._process.stdout.readline()
    if not line:
      raise RuntimeError(f'the worker exited with {self._process.wait()}')
    return json.loads(line)

  def close(self):
    self._process.stdin.close()
    self._process.wait()


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--vs', default=None, help='another checkout of the repository')
  parser.add_argument('--passes', type=int, default=15)
  parser.add_argument('--images', type=int, default=1000)
  parser.add_argument('--image_size', type=int, default=64)
  parser.add_argument('--parts', action='store_true')
  parser.add_argument('--json', default=None)
  parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    worker(args)
    return
  common.shared_data(DATA.name)  # exits with a message when it is missing
  checkouts = {'this checkout': REPO}
  if args.vs:
    checkouts['--vs'] = pathlib.Path(args.vs).resolve()
  workers = {name: _Worker(path, args) for name, path in checkouts.items()}
  outputs = {name: process.ask()['ready'] for name, process in workers.items()}
  passes = {name: [] for name in checkouts}
  for _ in range(args.passes):
    for name, process in workers.items():
      passes[name].append(process.ask('pass'))
  pieces = {name: process.ask('parts') for name, process in workers.items()} if args.parts \
      else {}
  for process in workers.values():
    process.close()

  print(f'CPU ms per image of _ConvertImageFn.process, {args.images} photos of {DATA.name}, '
        f'--image_size={args.image_size}; {args.passes} passes per checkout, interleaved; '
        f'outputs per pass: {outputs}\n')
  print('| checkout | CPU ms/img (median pass) | fastest | slowest |')
  print('|---|---|---|---|')
  medians = {}
  for name, values in passes.items():
    medians[name] = statistics.median(values)
    print(f'| {name} ({checkouts[name]}) | {medians[name]:.4f} | {min(values):.4f} | '
          f'{max(values):.4f} |')
  report = {'checkouts': {name: str(path) for name, path in checkouts.items()},
            'outputs': outputs, 'passes': passes, 'medians': medians, 'parts': pieces}
  if args.vs:
    ratios = [mine / other for mine, other in zip(passes['this checkout'], passes['--vs'])]
    report['ratio'] = statistics.median(ratios)
    print(f'\nthis checkout / --vs: {report["ratio"]:.3f} (median of the {len(ratios)} '
          f'back-to-back pairs; {min(ratios):.3f}-{max(ratios):.3f})')
  if pieces:
    names = list(pieces)
    print('\nThe pieces, each in its own loop (CPU ms per image, smallest of 5 passes):\n')
    print('| piece | ' + ' | '.join(names) + (' | ratio |' if len(names) == 2 else ' |'))
    print('|---' * (len(names) + 1 + (len(names) == 2)) + '|')
    for piece in pieces[names[0]]:
      values = [pieces[name][piece] for name in names]
      ratio = f' | {values[0] / values[1]:.2f}' if len(values) == 2 else ''
      print(f'| {piece} | ' + ' | '.join(f'{value:.4f}' for value in values) + ratio + ' |')
  common.write_json(args.json, report)


if __name__ == '__main__':
  main()
