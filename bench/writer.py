"""Writer benchmark: the Beam job against its own codec loop, tf.data and Pillow, same photos.

    .venv/bin/python bench/writer.py [--data=../shared/data/hymenoptera] [--sizes=1,16]
        [--original_sizes=1,32] [--workers=2] [--image_size=256] [--limit=N] [--json=PATH]
    .venv/bin/python bench/writer.py --same_work [--sizes=10,41] [--same_work_rounds=2] ...

Every row converts the same real photos (the JPEGs of ``--data``; for size, the set repeated
with distinct file names through symlinks in a temporary directory) to ``--image_size`` px,
shorter side (the job's default ``--resize_mode=shorter_side``), JPEG quality 90:

* ``pipeline Nx``: ``python -m pipeline.run`` end to end (default multi-process local runner,
  ``--direct_num_workers=WORKERS``), wall time of the whole command, at each size of
  ``--sizes``. From the two sizes: the steady-state rate (the slope: extra images over extra
  seconds) and the start-up (the intercept: the time extrapolated to zero images).
* ``tight loop``: the job's own ``transforms.image.codec.convert(data, spec)`` (read the file,
  convert; the job's spec, ``--job_flags`` included) over the largest size's files in a
  ``multiprocessing.Pool(WORKERS)``, no Beam: the limit of this machine.
* ``same-work loop``: what the job's conversion step does per image (decode, resize, encode, the
  pixel sums, the measures, the digests, the record), with the job's own functions and settings,
  in the same Pool over the same files, no Beam. Both loops are bench/same_work.py's.
* ``codec, 1 core`` and ``libjpeg-turbo floor, 1 core``: ``codec.convert`` in one process, and
  the least work that gives the same output (simplejpeg decode, DCT-scaled as the codec does,
  OpenCV resize with the codec's interpolation, simplejpeg encode, nothing else), on the photos
  whose longer side is at most 640 px (the targets' ~500x375 kind; 388 of hymenoptera's 398).
* ``tf.data converter``: what users write (``list_files`` -> ``map(read_file, decode_jpeg,
  resize (``tf.image.resize`` defaults: bilinear), encode_jpeg, AUTOTUNE)`` ->
  ``TFRecordWriter`` of ``tf.train.Example``), one process, all cores.
* ``Pillow loop``: open, convert RGB, resize, save JPEG to a BytesIO; one process, one core.
* ``DCT``: large JPEGs of ``../shared/data/messy`` (both sides at least twice the target): the
  codec with DCT-domain downscaling against a full decode + the same resize + encode.
* ``pipeline --stats=false``: the job without its default tensorflow-transform statistics
  (when it has that option), at the same sizes.
* ``--image_format=original`` (with ``--stats=false``), when the job has that option, at
  ``--original_sizes``.

Issue 26's target: (pipeline steady state - tight loop) / (same-work loop - tight loop), per
image, at most 1.5, by wall ms per image per core and by CPU ms per image. ``--same_work`` runs
only that comparison, in alternated rounds, with the job's conversion DoFn as a third loop: see
bench/same_work.py.

See bench/common.py for the columns' definitions and docs/benchmarks.md for the latest figures.
"""

import argparse
import io
import json
import os
import pathlib
import shlex
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=wrong-import-position
import same_work  # pylint: disable=wrong-import-position

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

QUALITY = 90
MAX_TYPICAL_SIDE = 640  # the codec rows: photos of the targets' ~500x375 kind


# --- rows, each run in its own process ------------------------------------------------------------

def _spec(image_size):
  from transforms.image import codec  # pylint: disable=import-outside-toplevel
  return codec.ImageSpec(image_size=image_size, resize_mode='shorter_side',
                         image_format='jpeg', jpeg_quality=QUALITY)


def _timed_loop(fn, items, min_seconds):
  """Runs ``fn`` over ``items`` (repeated until ``min_seconds``, at least once) after a warm-up
  on the first 8; the row's result dict (one core)."""
  for item in items[:8]:
    fn(item)
  count, start, cpu = 0, time.perf_counter(), time.process_time()
  while True:
    for item in items:
      fn(item)
    count += len(items)
    wall = time.perf_counter() - start
    if wall >= min_seconds:
      return {'images': count, 'seconds': wall, 'cores': 1,
              'cpu_seconds': time.process_time() - cpu}


def _read_all(files):
  datas = []
  for path in files:
    with open(path, 'rb') as handle:
      datas.append(handle.read())
  return datas


def _typical(datas, max_side):
  """The JPEGs whose longer side is at most ``max_side`` (the targets' ~500x375 photos)."""
  import simplejpeg  # pylint: disable=import-outside-toplevel
  kept = []
  for data in datas:
    try:
      if max(simplejpeg.decode_jpeg_header(data)[:2]) <= max_side:
        kept.append(data)
    except ValueError:  # a header libjpeg-turbo's quick parser refuses
      pass
  return kept


def row_codec(files, image_size, min_seconds, max_side):
  """codec.convert on bytes already in memory, one process."""
  from transforms.image import codec  # pylint: disable=import-outside-toplevel
  spec = _spec(image_size)
  datas = [d for d in _typical(_read_all(files), max_side) if _converts(codec, d, spec)]
  return _timed_loop(lambda d: codec.convert(d, spec), datas, min_seconds)


def _converts(codec, data, spec):
  try:
    codec.convert(data, spec)
    return True
  except codec.ImageError:
    return False


def row_floor(files, image_size, min_seconds, max_side):
  """libjpeg-turbo decode (DCT-scaled like the codec) + OpenCV resize + encode, nothing else."""
  import cv2  # pylint: disable=import-outside-toplevel
  import simplejpeg  # pylint: disable=import-outside-toplevel
  cv2.setNumThreads(1)

  def floor(data):
    height, width = simplejpeg.decode_jpeg_header(data)[:2]
    small = min(height, width) >= 2 * image_size  # the codec's rule for DCT scaling
    pixels = simplejpeg.decode_jpeg(data, colorspace='RGB', min_height=image_size if small else 0,
                                    min_width=image_size if small else 0)
    height, width = pixels.shape[:2]
    scale = image_size / min(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # The codec's choice: area when shrinking 2x or more, bilinear below, bicubic enlarging.
    interpolation = (cv2.INTER_AREA if scale <= 0.5 else cv2.INTER_LINEAR if scale < 1
                     else cv2.INTER_CUBIC)
    pixels = cv2.resize(pixels, size, interpolation=interpolation)
    return simplejpeg.encode_jpeg(pixels, quality=QUALITY, colorspace='RGB',
                                  colorsubsampling='420')

  datas = []
  for data in _typical(_read_all(files), max_side):
    try:
      floor(data)
      datas.append(data)
    except ValueError:  # a JPEG libjpeg-turbo's header call refuses (the codec takes Pillow)
      pass
  return _timed_loop(floor, datas, min_seconds)


def row_pillow(files, image_size, min_seconds):
  """The plain Pillow loop users write: open, RGB, resize (shorter side), save JPEG."""
  from PIL import Image  # pylint: disable=import-outside-toplevel

  def pillow(path):
    with Image.open(path) as image:
      image = image.convert('RGB')
      scale = image_size / min(image.size)
      image = image.resize((max(1, round(image.width * scale)),
                            max(1, round(image.height * scale))))
      buffer = io.BytesIO()
      image.save(buffer, 'JPEG', quality=QUALITY)
      return buffer.getvalue()

  paths = [str(p) for p in files]
  return _timed_loop(pillow, paths, min_seconds)


def row_tf_data(patterns, output, image_size, warm_up=True):
  """The tf.data converter users write; wall time from the first file listed to the last record
  written (TensorFlow's import and graph tracing excluded unless ``warm_up`` is False: then the
  one run is timed as it comes, for the start-up comparison, which times the whole command)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel

  def convert(path):
    image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    size = tf.cast(tf.round(shape * (image_size / tf.reduce_min(shape))), tf.int32)
    image = tf.cast(tf.round(tf.image.resize(image, size)), tf.uint8)  # defaults: bilinear
    return path, tf.io.encode_jpeg(image, quality=QUALITY), size

  def run(limit=None):
    files = tf.data.Dataset.list_files(patterns, shuffle=False)
    if limit:
      files = files.take(limit)
    dataset = (files.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
               .ignore_errors().prefetch(tf.data.AUTOTUNE))
    count = 0
    with tf.io.TFRecordWriter(output) as writer:
      for path, encoded, size in dataset.as_numpy_iterator():
        feature = {
            'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
            'image/format': tf.train.Feature(bytes_list=tf.train.BytesList(value=[b'jpeg'])),
            'image/height': tf.train.Feature(int64_list=tf.train.Int64List(value=[size[0]])),
            'image/width': tf.train.Feature(int64_list=tf.train.Int64List(value=[size[1]])),
            'image/filename': tf.train.Feature(bytes_list=tf.train.BytesList(value=[path])),
        }
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        writer.write(example.SerializeToString())
        count += 1
    return count

  if warm_up:
    run(limit=16)  # warm-up: TensorFlow start-up, function tracing
  start, cpu = time.perf_counter(), time.process_time()
  count = run()
  wall = time.perf_counter() - start
  return {'images': count, 'seconds': wall, 'cores': os.cpu_count(),
          'cpu_seconds': time.process_time() - cpu}


def row_dct(files, image_size, repeats):
  """Per large JPEG: ms of codec.convert (DCT-scaled decode) and of a full decode + the same
  resize + encode; the median of ``repeats`` runs each."""
  import simplejpeg  # pylint: disable=import-outside-toplevel
  from transforms.image import codec, resizing  # pylint: disable=import-outside-toplevel
  spec = _spec(image_size)

  def full(data):
    pixels = simplejpeg.decode_jpeg(data, colorspace='RGB')
    return codec.encode(resizing.resize(pixels, image_size, 'shorter_side'), spec)

  results = []
  for path in files:
    with open(path, 'rb') as handle:
      data = handle.read()
    try:
      height, width = simplejpeg.decode_jpeg_header(data)[:2]
      full(data)
      codec.convert(data, spec)
    except (ValueError, codec.ImageError) as error:
      results.append({'file': path, 'error': str(error)})
      continue
    small = simplejpeg.decode_jpeg(data, colorspace='RGB', min_height=image_size,
                                   min_width=image_size)
    timings = {'decoded': f'{small.shape[1]}x{small.shape[0]}',
               'bytes_per_pixel': len(data) / (width * height)}
    for name, fn in (('dct_ms', lambda: codec.convert(data, spec)),
                     ('full_ms', lambda: full(data))):
      runs = []
      for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(1000 * (time.perf_counter() - start))
      timings[name] = statistics.median(runs)
    results.append({'file': path, 'width': width, 'height': height, 'bytes': len(data),
                    **timings})
  return {'files': results}


ROWS = {**same_work.ROWS, 'codec': row_codec, 'floor': row_floor, 'pillow': row_pillow,
        'tf_data': row_tf_data, 'dct': row_dct}


# --- start-up: whole commands, side by side ------------------------------------------------------

def _tf_data_command(patterns, output, image_size):
  """The tf.data converter as a user runs it: a fresh ``python`` that imports TensorFlow,
  lists, converts and writes (no warm-up); (wall seconds of the whole command, images, CPU
  seconds)."""
  with tempfile.NamedTemporaryFile('w', suffix='.json') as arguments:
    json.dump({'patterns': patterns, 'output': output, 'image_size': image_size,
               'warm_up': False}, arguments)
    arguments.flush()
    status, wall, _, output_text, cpu = common.run_measured(
        [sys.executable, str(pathlib.Path(__file__).resolve()), '--_row=tf_data',
         f'--_args={arguments.name}'], cpu=True)
  if status != 0:
    raise RuntimeError(f'tf.data converter failed (exit {status}):\n{output_text[-3000:]}')
  return wall, json.loads(output_text.strip().splitlines()[-1])['images'], cpu


def startup_comparison(photos, root, times, image_size, rounds, extra_flags, work,
                       baseline=None):
  """The job with its defaults against the tf.data converter, whole commands, on ``photos``
  repeated ``times`` times, and the README's first command on the bundled samples; ``rounds``
  rounds, the commands interleaved within each round so that both meet the same load.
  ``extra_flags``: more runs of the job, one per string of flags; ``baseline``: a checkout of
  another version whose job runs too, with its defaults and with each of ``extra_flags``.
  Returns the report's ``startup`` section (every time, medians, the per-round ratios)."""
  data = work / f'startup_{times}x'
  links = common.repeat_tree(photos, root, times, data)
  patterns = sorted({str(p.parent / ('*' + p.suffix)) for p in links})
  commands = {'job, defaults': ([], None)}
  for flags in extra_flags:
    commands[f'job {flags}'] = (flags.split(), None)
  if baseline:
    commands[f'job of {baseline}, defaults'] = ([], baseline)
    for flags in extra_flags:  # the same flags on both sides: a before/after of each
      commands[f'job of {baseline} {flags}'] = (flags.split(), baseline)
  samples = {'README command (48 samples)': None}
  if baseline:
    samples[f'README command (48 samples), job of {baseline}'] = baseline
  times_by = {name: [] for name in [*commands, 'tf.data converter', *samples]}
  cpu_by = {name: [] for name in times_by}
  images = {}
  for _ in range(rounds):
    for name, (flags, repo) in commands.items():
      wall, _, written, cpu = run_pipeline(data, work / 'startup_out', os.cpu_count(),
                                           image_size, flags, workers_flag=False, repo=repo)
      times_by[name].append(wall)
      cpu_by[name].append(cpu)
      images[name] = written
    wall, images['tf.data converter'], cpu = _tf_data_command(
        patterns, str(work / 'startup_tf_data.tfrecord'), image_size)
    times_by['tf.data converter'].append(wall)
    cpu_by['tf.data converter'].append(cpu)
    for name, repo in samples.items():
      env = repo and dict(os.environ, PYTHONPATH=os.pathsep.join([repo, f'{repo}/reader']))
      status, wall, _, output, cpu = common.run_measured(
          [sys.executable, '-m', 'pipeline.run',
           f'--input_dir={common.REPO / "samples" / "hymenoptera"}',
           f'--output_dir={work / "startup_samples"}', '--overwrite'], env=env, cwd=repo,
          cpu=True)
      if status != 0:
        raise RuntimeError(f'{name} failed (exit {status}):\n{output[-3000:]}')
      times_by[name].append(wall)
      cpu_by[name].append(cpu)
      images[name] = 48
  ratios = [job / tf for job, tf in zip(times_by['job, defaults'], times_by['tf.data converter'])]
  cpu_ratios = [job / tf for job, tf in zip(cpu_by['job, defaults'], cpu_by['tf.data converter'])]
  return {'photos': len(links), 'image_size': image_size, 'rounds': rounds,
          'images': images, 'seconds': times_by, 'cpu_seconds': cpu_by,
          'median_s': {name: statistics.median(t) for name, t in times_by.items()},
          'median_cpu_s': {name: statistics.median(t) for name, t in cpu_by.items()},
          'job_over_tf_data': ratios, 'median_ratio': statistics.median(ratios),
          'cpu_job_over_tf_data': cpu_ratios, 'median_cpu_ratio': statistics.median(cpu_ratios)}


def print_startup(section):
  """The start-up comparison as a table, and its two targets."""
  rows = [(name, section['images'][name], ' '.join(f'{t:.2f}' for t in times),
           section['median_s'][name],
           ' '.join(f'{t:.1f}' for t in section['cpu_seconds'][name]),
           section['median_cpu_s'][name]) for name, times in section['seconds'].items()]
  print(f"Start-up: whole commands, {section['photos']} photos at {section['image_size']} px "
        f"(shorter side), {section['rounds']} interleaved rounds\n")
  print(common.format_table(('command', 'images', 'wall s per round', 'median wall s',
                             'CPU s per round', 'median CPU s'), rows))
  print(f"\njob defaults / tf.data converter per round: wall "
        f"{' '.join(f'{r:.2f}' for r in section['job_over_tf_data'])}, CPU "
        f"{' '.join(f'{r:.2f}' for r in section['cpu_job_over_tf_data'])}")
  print()
  ratio = section['median_ratio']
  samples = section['median_s']['README command (48 samples)']
  print(common.format_table(('target', 'value', 'wanted', 'verdict'), [
      ('job defaults / tf.data converter (median of per-round ratios)', ratio, '<= 1.5',
       'met' if ratio <= 1.5 else 'NOT met'),
      ('README command on the 48 samples, s (median)', samples, '< 6',
       'met' if samples < 6 else 'NOT met')]))


# --- the benchmark ------------------------------------------------------------------------------

def job_accepts(flag: str) -> bool:
  """Whether the job's own options accept ``flag`` (``--name=value``) as one of theirs."""
  # pylint: disable=import-outside-toplevel
  import contextlib
  from apache_beam.options.pipeline_options import PipelineOptions
  from pipeline import options as opts
  name, value = flag[2:].split('=', 1)
  try:
    with contextlib.redirect_stderr(io.StringIO()):
      parsed = PipelineOptions([flag]).view_as(opts.ConvertOptions).get_all_options(
          retain_unknown_options=False)
    return name in parsed and str(parsed[name]).lower() == value.lower()
  except SystemExit:  # argparse refuses a value outside the option's choices
    return False


def run_pipeline(input_dir, output_dir, workers, image_size, flags=(), workers_flag=True,
                 repo=None):
  """The Beam job end to end as users run it; (seconds, peak RSS MiB, examples written, CPU
  seconds of the command and every process it started). ``workers_flag``: pass
  ``--direct_num_workers=WORKERS`` (else the job's own default). ``repo``: run the job of
  that checkout (another version, for a before/after) instead of this one's."""
  cmd = [sys.executable, '-m', 'pipeline.run', f'--input_dir={input_dir}',
         f'--output_dir={output_dir}', f'--image_size={image_size}', '--overwrite',
         *([f'--direct_num_workers={workers}'] if workers_flag else []), common.FOLLOW_LINKS,
         *common.one_class_flags(repo), *flags]
  env = None
  if repo:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo), str(pathlib.Path(repo) /
                                                                        'reader')]))
  status, wall, peak, output, cpu = common.run_measured(cmd, cpu=True, env=env, cwd=repo)
  if status != 0:
    raise RuntimeError(f'pipeline failed (exit {status}):\n{output[-3000:]}')
  manifest = json.loads((pathlib.Path(output_dir) / 'manifest.json').read_text())
  written = sum(split['num_examples'] for split in manifest['splits'].values())
  return wall, peak / 2**20, written, cpu


unreliable = set()  # labels of pipeline rows whose wall slope is not a rate (see pipeline_rows)


def pipeline_rows(label, base, sizes, work, workers, image_size, flags):
  """The job at every size: (rows, steady-state images/s, start-up s, steady-state CPU ms per
  image); the last three None when the sizes do not give a slope."""
  rows, points = [], []
  for times in sizes:
    wall, peak, written, cpu = run_pipeline(base[times], work / f'out_{label}_{times}x',
                                            workers, image_size, flags)
    points.append((written, wall, cpu))
    rows.append(common.rate_row(f'{label} {times}x (end to end)', {
        'images': written, 'seconds': wall, 'cpu_seconds': cpu, 'cores': workers,
        'peak_rss_mib': peak}, 'whole command, start-up included'))
  rate, startup, cpu_ms, load_changed = common.steady_state(points)
  if rate and load_changed:  # the wall slope is not a rate; the CPU slope still is
    note = 'wall slope UNRELIABLE: the load changed between the two sizes; see CPU ms/img'
    unreliable.add(label)
  elif rate:
    note = f'slope {min(sizes)}x->{max(sizes)}x; start-up {startup:.1f} s'
  if rate:
    rows.append({'row': f'{label}, steady state', 'images': None, 'seconds': None,
                 'images_per_s': rate, 'ms_per_image_per_core': 1000 * workers / rate,
                 'cpu_ms_per_image': cpu_ms, 'cores': workers, 'peak_rss_mib': None,
                 'note': note})
  return rows, rate, startup, cpu_ms


def _ratio_verdict(by, row, reference, target):
  """(ratio of ``row``'s rate to ``reference``, wanted, verdict); 'not measured' when absent."""
  value = by[row]['images_per_s'] / reference if row in by else None
  if row.rsplit(',', 1)[0] in unreliable:
    return value, f'>= {target}', 'unreliable (load changed): see the CPU-time ratio'
  return value, f'>= {target}', common.verdict(value, target)


def _cpu_ratio_verdict(by, row, reference_cpu_ms, target):
  """(``reference_cpu_ms`` over ``row``'s CPU ms per image, wanted, verdict)."""
  value = reference_cpu_ms / by[row]['cpu_ms_per_image'] if row in by else None
  return value, f'>= {target}', common.verdict(value, target)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--data', default=str(common.SHARED_DATA / 'hymenoptera'),
                      help='Folder of real photos (class folders, optionally in split folders).')
  parser.add_argument('--sizes', default='1,16',
                      help='Two repetitions of the data set for the pipeline rows (the rate is '
                      'the slope between them, the start-up the intercept).')
  parser.add_argument('--original_sizes', default='1,32',
                      help='The same for the --image_format=original rows (faster: more images '
                      'for the slope to rise above the start-up time\'s noise).')
  parser.add_argument('--workers', type=int, default=2,
                      help='Processes of the pipeline and of the tight loop. Default 2.')
  parser.add_argument('--image_size', type=int, default=256, help='Target size. Default 256.')
  parser.add_argument('--limit', type=int, default=None,
                      help='Use only the first N photos (a quick check, e.g. 8).')
  parser.add_argument('--dct_data', default=str(common.SHARED_DATA / 'messy'),
                      help='Folder holding large JPEGs for the DCT rows.')
  parser.add_argument('--dct_repeats', type=int, default=5, help='Runs per large JPEG.')
  parser.add_argument('--min_seconds', type=float, default=3.0,
                      help='Single-process rows repeat the photos until they ran this long.')
  parser.add_argument('--skip_original', action='store_true',
                      help='Skip the --image_format=original rows.')
  common.add_job_flags(parser, '--job_flags')
  parser.add_argument('--skip_variants', action='store_true',
                      help='Skip the pipeline rows with --stats=false.')
  parser.add_argument('--startup', action='store_true',
                      help='Only the start-up comparison: the job with its defaults against the '
                      'tf.data converter, whole commands (python start, imports included), on '
                      '--data repeated --startup_times times, and the README command on the '
                      '48 samples, in --startup_rounds interleaved rounds.')
  parser.add_argument('--startup_times', type=int, default=11,
                      help='Repetitions of --data for --startup (11 x hymenoptera: 4,378 photos).')
  parser.add_argument('--startup_rounds', type=int, default=3, help='Rounds of --startup.')
  parser.add_argument('--startup_flags', action='append', default=[],
                      help='--startup: also the job with these flags (repeatable, e.g. '
                      '--startup_flags=--stats=tft).')
  parser.add_argument('--startup_baseline', default=None,
                      help='--startup: also the job of this checkout (another version, e.g. '
                      'from `git worktree add`), with its defaults and with each '
                      '--startup_flags: a before/after.')
  parser.add_argument('--same_work', action='store_true',
                      help="Only the job against the same-work loop (issue 26): the job with its "
                      'defaults (and --job_flags) at the two --sizes; the same-work loop, the '
                      'DoFn loop and the tight loop on the larger size\'s files; alternated in '
                      '--same_work_rounds rounds; (job - tight loop) / (same-work loop - tight '
                      'loop) per image.')
  parser.add_argument('--same_work_rounds', type=int, default=2,
                      help='Rounds of --same_work (each: the job at both sizes, each loop twice).')
  common.add_row_flags(parser)
  args = parser.parse_args(argv)
  if args.startup:
    root = pathlib.Path(args.data).resolve()
    with tempfile.TemporaryDirectory(prefix='bench_startup_') as tmp:
      report = {'command': ' '.join(['bench/writer.py', *(argv or sys.argv[1:])]),
                'machine_before': common.machine()}
      report['startup'] = startup_comparison(
          common.image_files(root, args.limit), root, args.startup_times, args.image_size,
          args.startup_rounds, args.startup_flags, pathlib.Path(tmp), args.startup_baseline)
      report['machine_after'] = common.machine()
    common.print_machine(report)
    print_startup(report['startup'])
    common.write_json(args.json, report)
    return
  sizes = sorted({int(s) for s in args.sizes.split(',')})
  original_sizes = sorted({int(s) for s in args.original_sizes.split(',')})
  if len(sizes) != 2 or len(original_sizes) != 2:
    parser.error('--sizes and --original_sizes need two sizes each, to separate start-up from '
                 'the steady state')

  root = pathlib.Path(args.data).resolve()
  photos = common.image_files(root, args.limit)
  if args.same_work:
    rows_runner = common.Rows(str(pathlib.Path(__file__).resolve()), ROWS, args.in_process)
    with tempfile.TemporaryDirectory(prefix='bench_same_work_') as tmp:
      report = {'command': ' '.join(['bench/writer.py', *(argv or sys.argv[1:])]),
                'machine_before': common.machine(), 'data': str(root)}
      report['same_work'] = same_work.same_work_comparison(
          photos, root, sizes, args.workers, args.image_size, shlex.split(args.job_flags),
          args.same_work_rounds, pathlib.Path(tmp), rows_runner, run_pipeline)
      report['machine_after'] = common.machine()
    common.print_machine(report)
    print(f'data: {root}')
    targets = same_work.print_same_work(report['same_work'])
    common.finish_report(report, targets, args.json)
    return
  report = {'command': ' '.join(['bench/writer.py', *(argv or sys.argv[1:])]),
            'machine_before': common.machine(), 'data': str(root), 'photos': len(photos),
            'sizes': sizes, 'workers': args.workers, 'image_size': args.image_size}
  rows_runner = common.Rows(str(pathlib.Path(__file__).resolve()), ROWS, args.in_process)
  with tempfile.TemporaryDirectory(prefix='bench_writer_') as tmp:
    work = pathlib.Path(tmp)
    every_size = set(sizes) | (set() if args.skip_original else set(original_sizes))
    base = {times: work / f'data_{times}x' for times in every_size}
    links = {times: common.repeat_tree(photos, root, times, base[times]) for times in every_size}
    largest = [str(p) for p in links[max(sizes)]]
    one = [str(p) for p in links[min(sizes)]]

    rows = []
    job_flags = shlex.split(args.job_flags)
    pipe_label = ' '.join(['pipeline', *job_flags])
    pipe_rows, _, startup, pipe_cpu = pipeline_rows(
        pipe_label, base, sizes, work, args.workers, args.image_size, job_flags)
    rows += pipe_rows
    images, training, loop_work = same_work.loop_inputs(
        job_flags, args.image_size, links[max(sizes)], base[max(sizes)])
    tight = rows_runner.run('tight_loop', {'files': largest, 'workers': args.workers,
                                           'work': loop_work})
    rows.append(common.rate_row(same_work.TIGHT_ROW, tight, f'{max(sizes)}x files; the limit'))
    same = rows_runner.run('same_work', {'images': images, 'workers': args.workers,
                                         'work': loop_work})
    rows.append(common.rate_row(same_work.SAME_WORK_ROW, same, f"{max(sizes)}x files; "
                                f"{same['pixel_sums']} with pixel sums ({training})"))
    typical = {'files': one, 'image_size': args.image_size, 'min_seconds': args.min_seconds,
               'max_side': MAX_TYPICAL_SIDE}
    codec_row = rows_runner.run('codec', typical)
    rows.append(common.rate_row('codec.convert, 1 core', codec_row,
                                f'photos up to {MAX_TYPICAL_SIDE} px, bytes in memory'))
    floor = rows_runner.run('floor', typical)
    rows.append(common.rate_row('libjpeg-turbo floor, 1 core', floor,
                                'the same photos: decode + resize + encode only'))
    # One glob per folder, as users list their files.
    patterns = sorted({str(p.parent / ('*' + p.suffix)) for p in links[max(sizes)]})
    tf_row = rows_runner.run('tf_data', {
        'patterns': patterns, 'output': str(work / 'tf_data.tfrecord'),
        'image_size': args.image_size})
    rows.append(common.rate_row('tf.data converter', tf_row, f'{max(sizes)}x files, all cores'))
    pillow = rows_runner.run('pillow', {'files': one, 'image_size': args.image_size,
                                        'min_seconds': args.min_seconds})
    rows.append(common.rate_row('Pillow loop, 1 core', pillow, 'files from disk'))

    if (not args.skip_variants and '--stats=false' not in job_flags
        and job_accepts('--stats=false')):
      # The default tensorflow-transform analysis (--stats) decodes every training image again.
      rows += pipeline_rows('pipeline --stats=false', base, sizes, work, args.workers,
                            args.image_size, ['--stats=false', *job_flags])[0]
    original = None
    if args.skip_original:
      report['original'] = 'skipped (--skip_original)'
    elif job_accepts('--image_format=original'):
      # Without the statistics, which would decode every (full-size) training image.
      flags = ['--image_format=original', *job_flags]
      if job_accepts('--stats=false'):
        flags.append('--stats=false')
      orig_rows, orig_rate, orig_startup, _ = pipeline_rows(
          'pipeline ' + ' '.join(flags), base, original_sizes, work, args.workers,
          args.image_size, flags)
      rows += orig_rows
      original = {'rate': orig_rate, 'startup_s': orig_startup,
                  'label': 'pipeline ' + ' '.join(flags)}
      report['original'] = original
    else:
      report['original'] = 'the job has no --image_format=original option'

  dct_files = []
  if pathlib.Path(args.dct_data).is_dir():
    import simplejpeg  # pylint: disable=import-outside-toplevel
    for path in common.image_files(pathlib.Path(args.dct_data)):
      try:
        height, width = simplejpeg.decode_jpeg_header(path.read_bytes())[:2]
      except ValueError:
        continue
      if min(height, width) >= 2 * args.image_size:
        dct_files.append(str(path))
  dct = rows_runner.run('dct', {'files': dct_files, 'image_size': args.image_size,
                                'repeats': args.dct_repeats})['files']
  report['machine_after'] = common.machine()

  # --- ratios and targets -------------------------------------------------------------------------
  by = {row['row']: row for row in rows}
  tight_row, same_row = by[same_work.TIGHT_ROW], by[same_work.SAME_WORK_ROW]
  tight_rate = tight_row['images_per_s']
  tf_rate = by['tf.data converter']['images_per_s']
  # One core each: CPU time per image is the cost per core, whatever else shares the machine.
  codec_ms = by['codec.convert, 1 core']['cpu_ms_per_image']
  floor_ms = by['libjpeg-turbo floor, 1 core']['cpu_ms_per_image']
  tight_cpu = tight_row['cpu_ms_per_image']
  pipe_steady = by.get(f'{pipe_label}, steady state', {})
  # issue 26: the job's cost beyond decode, resize and encode against the same-work loop's
  pipe_wall = None if pipe_label in unreliable else pipe_steady.get('ms_per_image_per_core')
  # the wall figures are costs only where each row had its cores (see same_work.WALL_SHARE)
  shares = [row['cpu_ms_per_image'] * row['images_per_s'] / 1000 / row['cores']
            for row in (pipe_steady, tight_row, same_row) if row]
  wall_share_low = min(shares) < same_work.WALL_SHARE
  beyond_wall = same_work.beyond_codec(pipe_wall, tight_row['ms_per_image_per_core'],
                                       same_row['ms_per_image_per_core'])
  beyond_cpu = same_work.beyond_codec(pipe_cpu, tight_cpu, same_row['cpu_ms_per_image'])
  beyond_target = same_work.SAME_WORK_TARGET
  tf_cpu = by['tf.data converter']['cpu_ms_per_image']
  good_dct = [d for d in dct if 'error' not in d]
  dct_ratio = (sum(d['full_ms'] for d in good_dct) / sum(d['dct_ms'] for d in good_dct)
               if good_dct else None)
  targets = [
      ('codec CPU ms per image / libjpeg-turbo floor measured here', codec_ms / floor_ms,
       '<= 1.10', 'met' if codec_ms <= 1.10 * floor_ms else 'NOT met'),
      ('codec CPU ms per image (floor about 1.5 ms)', codec_ms, '<= 1.65',
       'met' if codec_ms <= 1.65 else 'NOT met'),
      ('pipeline steady state / tight loop',
       *_ratio_verdict(by, f'{pipe_label}, steady state', tight_rate, 0.85)),
      ('pipeline steady state / tf.data converter',
       *_ratio_verdict(by, f'{pipe_label}, steady state', tf_rate, 2.0)),
      ('the same, by CPU time per image: tight loop / pipeline',
       tight_cpu / pipe_cpu if pipe_cpu else None, '>= 0.85',
       common.verdict(tight_cpu / pipe_cpu if pipe_cpu else None, 0.85)),
      ('the same, by CPU time per image: tf.data / pipeline',
       tf_cpu / pipe_cpu if pipe_cpu else None, '>= 2',
       common.verdict(tf_cpu / pipe_cpu if pipe_cpu else None, 2.0)),
      ('(pipeline - tight loop) / (same-work loop - tight loop), ms/img/core', beyond_wall,
       f'<= {beyond_target}',
       'unreliable (load changed): see the CPU-time ratio' if pipe_label in unreliable else
       f'unreliable (a row had {min(shares):.0%} of its cores): see the CPU-time ratio'
       if wall_share_low else same_work.at_most_verdict(beyond_wall, beyond_target)),
      ('the same, by CPU time per image', beyond_cpu, f'<= {beyond_target}',
       same_work.at_most_verdict(beyond_cpu, beyond_target)),
      ('DCT downscale speed-up on large JPEGs (full / DCT)', dct_ratio, '>= 2',
       common.verdict(dct_ratio, 2.0)),
      ('pipeline --stats=false steady state / tight loop',
       *_ratio_verdict(by, 'pipeline --stats=false, steady state', tight_rate, 0.85)),
      ('the same, by CPU time per image: tight loop / pipeline --stats=false',
       *_cpu_ratio_verdict(by, 'pipeline --stats=false, steady state', tight_cpu, 0.85)),
      ('pipeline --stats=false steady state / tf.data converter',
       *_ratio_verdict(by, 'pipeline --stats=false, steady state', tf_rate, 2.0)),
      ('the same, by CPU time per image: tf.data / pipeline --stats=false',
       *_cpu_ratio_verdict(by, 'pipeline --stats=false, steady state', tf_cpu, 2.0)),
      ('--image_format=original steady state, images/s',
       original['rate'] if original else None, '>= 3000',
       (common.verdict(original['rate'], 3000.0) if original['label'] not in unreliable
        else 'unreliable (load changed): see its CPU ms/img') if original
       else report['original']),
  ]
  report.update({'rows': rows, 'dct': dct, 'pipeline_startup_s': startup})

  common.print_machine(report)
  print(f'{len(photos)} photos of {root}, sizes {sizes}, {args.workers} workers, '
        f'{args.image_size} px shorter side\n')
  print(common.rate_table(rows, extra=('note',)))
  print()
  print(common.format_table(
      ('large JPEG', 'size', 'bytes/pixel', 'DCT-decoded to', 'DCT-scaled ms', 'full decode ms',
       'speed-up'),
      [(pathlib.Path(d['file']).name, f"{d.get('width')}x{d.get('height')}",
        d.get('bytes_per_pixel'), d.get('decoded'), d.get('dct_ms'), d.get('full_ms'),
        d['full_ms'] / d['dct_ms'] if 'error' not in d else d['error']) for d in dct]))
  print()
  common.finish_report(report, targets, args.json)


if __name__ == '__main__':
  if not common.child_main(ROWS):
    main()
