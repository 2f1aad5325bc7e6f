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
  convert) over the largest size's files in a ``multiprocessing.Pool(WORKERS)``, no Beam: the
  limit of this machine.
* ``same-work loop``: what the job's conversion step (``transforms.image.convert``'s
  ``_ConvertImageFn.process``) does per image, with the job's own functions and settings (read
  from the job's options with ``--job_flags``), in the same ``Pool(WORKERS)`` over the same
  files, no Beam (not imported by the pool): read the file (``open``; the job reads through
  Beam's ``FileSystems``); ``codec.convert_keeping_pixels`` (decode, resize, encode); for the
  training split's images with ``--stats`` (the default), ``pixel_sums.stored_pixels`` (the
  stored JPEG decoded as the reader decodes it) and ``pixel_sums.pixel_sums``; with
  ``--image_checks`` (the default), ``image_measures.measure`` (perceptual hash, quality
  measures); SHA-256 of the source; ``example.build_example`` (the record, by
  ``imagerecords.records``) with the job's relative path, label and class id; SHA-256 of the
  record. Splits, labels and class ids come from the job's own rules (``job_images``). Not in
  it: the job's other steps (listing, shuffle, shard writing, the analysis of the examples) and
  Beam's per-element work. Each split's fingerprint of its records and the pixels it summed are
  computed afterwards, untimed: equal to the job's manifest, they show it built the job's very
  records (``--same_work`` checks that).
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
image, at most 1.5: the job's cost of the work beyond decode, resize and encode against the
plain loop's cost of the same work; by wall ms per image per core and by CPU ms per image.

``--same_work`` runs only that comparison: the job at the two ``--sizes``, and on the larger
size's files the same-work loop, the tight loop and the ``DoFn loop`` (the job's conversion
DoFn itself, ``_ConvertImageFn.process``, called in the same Pool: no runner, no other step),
alternated in ``--same_work_rounds`` rounds (job small, same-work, DoFn, tight, job large,
tight, DoFn, same-work); the ratios per round and their medians, where the job's time per image
goes (the tight loop; the work beyond it; the DoFn's own code beyond the work; the runner and
the other steps); and checks that the loops' records are the job's (split fingerprints, pixels
summed).

See bench/common.py for the columns' definitions and docs/benchmarks.md for the latest figures.
"""

import argparse
import dataclasses
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

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

QUALITY = 90
MAX_TYPICAL_SIDE = 640  # the codec rows: photos of the targets' ~500x375 kind


# --- rows, each run in its own process ------------------------------------------------------------

def _spec(image_size):
  from transforms.image import codec  # pylint: disable=import-outside-toplevel
  return codec.ImageSpec(image_size=image_size, resize_mode='shorter_side',
                         image_format='jpeg', jpeg_quality=QUALITY)


def _convert_file(path):
  """Pool worker: read the file and run the job's codec on it; (output bytes or -1 for a failed
  image, CPU seconds this process spent on it)."""
  from transforms.image import codec  # pylint: disable=import-outside-toplevel
  cpu = time.process_time()
  with open(path, 'rb') as handle:
    data = handle.read()
  try:
    size = len(codec.convert(data, _POOL_SPEC).data)
  except codec.ImageError:
    size = -1
  return size, time.process_time() - cpu


_POOL_SPEC = None


def _init_pool(image_size):
  global _POOL_SPEC  # pylint: disable=global-statement
  _POOL_SPEC = _spec(image_size)


def row_tight_loop(files, workers, image_size):
  """codec.convert over ``files`` in a Pool(workers); pool start-up and warm-up excluded."""
  import multiprocessing  # pylint: disable=import-outside-toplevel
  with multiprocessing.get_context('fork').Pool(
      workers, initializer=_init_pool, initargs=(image_size,)) as pool:
    pool.map(_convert_file, files[:4 * workers], chunksize=1)  # warm-up: imports, caches
    start = time.perf_counter()
    results = pool.map(_convert_file, files, chunksize=8)
    wall = time.perf_counter() - start
  done = sum(size >= 0 for size, _ in results)
  return {'images': done, 'seconds': wall, 'cores': workers,
          'cpu_seconds': sum(cpu for _, cpu in results)}


def job_setup(job_flags, image_size):
  """What the job's conversion step does per image with ``job_flags`` (``--image_size`` from
  ``image_size``), read by the job's own option parsing: (ImageSpec, the pixel sums on (``--stats``
  of any kind), the measures on (``--image_checks``), ``--splits``, ``--label_source``)."""
  # pylint: disable=import-outside-toplevel
  from apache_beam.options.pipeline_options import PipelineOptions
  from pipeline import options as opts
  options = PipelineOptions([*job_flags, f'--image_size={image_size}']).view_as(
      opts.ConvertOptions)
  return (opts.image_spec(options), options.stats != opts.STATS_OFF, options.image_checks,
          options.splits, options.label_source)


def job_images(files, root, splits_flag='auto', label_source='directory'):
  """The job's view of each of ``files`` (under ``root``), by the job's own rules: (a list of
  (path, relpath, label or None, class id or None, split, whether it is the training split,
  whose images the job's ``--stats`` sums), the training split's name or None).

  Split folders (``train/``, ``val/``, ...) at the top of ``root`` are the splits, else the
  path's hash with ``--splits``' fractions; labels are the class folders (``--label_source``
  ``directory``, the default) or none; class ids are the sorted class names' indices.
  """
  # pylint: disable=import-outside-toplevel
  from pipeline import options as opts
  from transforms.analysis.statistics import training_split
  from transforms.inputs.labels import directory_label
  from transforms.inputs.splits import hash_split, probe_split_folders
  if label_source not in ('directory', 'none'):
    raise ValueError(f'the same-work loop labels by folder or not at all, not {label_source!r}')
  folders, fractions = opts.resolve_splits(splits_flag, probe_split_folders(str(root)))
  views = []
  for path in files:
    relpath = pathlib.Path(path).relative_to(root).as_posix()
    split = relpath.split('/', 1)[0] if folders else hash_split(relpath, fractions)
    label = (directory_label(relpath, split if folders else None)
             if label_source == 'directory' else None)
    views.append((str(path), relpath, label, split))
  training = training_split(list(folders) or [name for name, _ in fractions])
  class_ids = {name: i for i, name in enumerate(sorted({v[2] for v in views} - {None}))}
  return [(path, relpath, label, class_ids.get(label), split, split == training)
          for path, relpath, label, split in views], training


_POOL_WORK = None  # the same-work loop's (ImageSpec, pixel sums on, measures on), per worker


def job_work(job_flags, image_size):
  """:func:`job_setup`'s per-image settings as the same-work row takes them (JSON): the
  ImageSpec's fields, the pixel sums on, the measures on."""
  spec, stats, measure, _, _ = job_setup(job_flags, image_size)
  return {'spec': dataclasses.asdict(spec), 'stats': stats, 'measure': measure}


def _init_same_work(work):
  global _POOL_WORK  # pylint: disable=global-statement
  from transforms.image import codec  # pylint: disable=import-outside-toplevel
  spec = dict(work['spec'], background=tuple(work['spec']['background']))  # JSON gave a list
  _POOL_WORK = (codec.ImageSpec(**spec), work['stats'], work['measure'])


def _same_work_file(image):
  """Pool worker: the conversion step's work on one image, in the order
  ``transforms.image.convert._ConvertImageFn.process`` does it, with its functions; ``image``
  one of :func:`job_images`. (record bytes or -1 for a failed image, the record's SHA-256, the
  pixels summed (0 without pixel sums), CPU seconds this process spent on it)."""
  # pylint: disable=import-outside-toplevel
  import hashlib
  from transforms.image import codec, image_measures
  from transforms.image.example import build_example
  from transforms.image.pixel_sums import pixel_sums, stored_pixels
  spec, stats, measure = _POOL_WORK
  path, relpath, label, class_id, _, training = image
  cpu = time.process_time()
  with open(path, 'rb') as handle:  # the job: reads.read_bytes, through Beam's FileSystems
    data = handle.read()
  try:
    converted = codec.convert_keeping_pixels(data, spec)  # decode, resize, encode
  except codec.ImageError:
    return -1, b'', 0, time.process_time() - cpu
  sums = None
  if stats and training:  # --stats: the stored image decoded as the reader decodes it, summed
    sums = pixel_sums(stored_pixels(converted.encoded, spec.channels,
                                    original=spec.image_format == 'original'))
  if measure and converted.pixels is not None:  # --image_checks: pHash and quality measures
    tuple(image_measures.measure(converted.pixels, converted.source_size))
  source_sha256 = hashlib.sha256(data).hexdigest()  # the contract's image/key/sha256
  serialized = build_example(converted.encoded, relpath, source_sha256, label, class_id)
  digest = hashlib.sha256(serialized).digest()  # the record's, for the split's fingerprint
  return (len(serialized), digest, sums.num_pixels if sums else 0,
          time.process_time() - cpu)


def row_same_work(images, workers, work):
  """The same-work loop: the job's conversion step's per-image work over ``images`` (of
  :func:`job_images`) in a Pool(workers), no Beam (not even imported: ``work`` is
  :func:`job_work`'s, from the parent); pool start-up and warm-up excluded. The row's dict:
  images, wall seconds, CPU seconds of the pool's workers (as the tight loop's), and, untimed,
  the images whose pixels were summed, the pixels, the record bytes and each split's
  fingerprint of its records.

  What each image gets (:func:`_same_work_file`) is ``_ConvertImageFn.process``
  (``transforms/image/convert.py``) at the job's settings, call for call, in its order:

  * read the file's bytes (the job: ``reads.read_bytes``, through Beam's ``FileSystems`` and a
    retry wrapper: that layer is the job's, not the work's, so the loop uses ``open``);
  * ``codec.convert_keeping_pixels(data, spec)``: decode, resize, encode, keeping the pixels;
  * with ``--stats`` (on by default), for the training split's images only (the job sums no
    other split's): ``pixel_sums.pixel_sums(pixel_sums.stored_pixels(encoded, channels))``, the
    stored JPEG decoded as TensorFlow decodes it and summed;
  * with ``--image_checks`` (on by default): ``image_measures.measure(pixels, source_size)``,
    the perceptual hash and quality measures of the stored pixels;
  * ``hashlib.sha256`` of the source's bytes (the job's default ``--dedup=keep_all`` does not
    hash before the conversion, so the step does);
  * ``example.build_example(encoded, relpath, source_sha256, label, class_id)``: the
    serialized ``tf.train.Example``, by ``imagerecords.records``;
  * ``hashlib.sha256`` of the record (the split's fingerprint).

  The functions are the job's own, the spec is the one the job's options give
  (``pipeline.options.image_spec``), the relative paths, labels, class ids and splits follow
  the job's rules: so the loop builds the job's very records (the fingerprints show it) with
  the job's per-image work. What it leaves out is what is not per-image work of the step:
  Beam's counters, progress file and side inputs, the element it yields, and the job's other
  steps (listing, shuffle, writing the shards, analysing the examples).
  """
  return _pool_row(_same_work_file, _init_same_work, (work,), images, workers)


def _pool_row(fn, initializer, initargs, images, workers):
  """``fn`` (a pool worker returning (record bytes or -1, record SHA-256, pixels summed, CPU
  seconds)) over ``images`` (of :func:`job_images`) in a Pool(workers) made with
  ``initializer(*initargs)``, as the tight loop runs; pool start-up and warm-up excluded. The
  row's dict (see :func:`row_same_work`)."""
  import multiprocessing  # pylint: disable=import-outside-toplevel
  images = [tuple(image) for image in images]  # JSON gave lists
  with multiprocessing.get_context('fork').Pool(
      workers, initializer=initializer, initargs=initargs) as pool:
    pool.map(fn, images[:4 * workers], chunksize=1)  # warm-up: imports, caches
    start = time.perf_counter()
    results = pool.map(fn, images, chunksize=8)
    wall = time.perf_counter() - start
  # What the job's manifest would say of these records and sums (outside the timing): each
  # split's fingerprint (transforms.analysis.statistics: the sum of the records' SHA-256 as
  # integers, mod 2**256) and the training split's pixels summed. Equal to the job's, they show
  # that the loop built the job's very records and summed the same images.
  totals = {}
  for image, (size, digest, _, _) in zip(images, results):
    if size >= 0:
      totals[image[4]] = totals.get(image[4], 0) + int.from_bytes(digest, 'big')
  done = [result for result in results if result[0] >= 0]
  return {'images': len(done), 'seconds': wall, 'cores': workers,
          'cpu_seconds': sum(result[3] for result in results),
          'pixel_sums': sum(1 for result in done if result[2]),
          'num_pixels': sum(result[2] for result in done),
          'record_bytes': sum(result[0] for result in done),
          'fingerprints': {split: f'{total % 2**256:064x}' for split, total in totals.items()}}


_POOL_DOFN = None  # the DoFn loop's (_ConvertImageFn set up, class names, total), per worker


def _init_dofn(work, training, class_names, total, progress_dir):
  global _POOL_DOFN  # pylint: disable=global-statement
  # pylint: disable=import-outside-toplevel
  from transforms.image import codec
  from transforms.image.convert import _ConvertImageFn
  spec = codec.ImageSpec(**dict(work['spec'], background=tuple(work['spec']['background'])))
  fn = _ConvertImageFn(spec, training if work['stats'] else None, work['measure'], progress_dir)
  fn.setup()
  fn.start_bundle()
  _POOL_DOFN = (fn, class_names, total)


def _dofn_file(image):
  """Pool worker: the job's conversion DoFn on one image (``process``, as the runner calls it,
  its outputs taken); the same tuple as :func:`_same_work_file`'s."""
  from transforms.elements import LabeledImage  # pylint: disable=import-outside-toplevel
  fn, class_names, total = _POOL_DOFN
  path, relpath, label, _, split, _ = image
  element = LabeledImage(path, relpath, label, split)  # what the shuffle hands the step
  cpu = time.process_time()
  outputs = list(fn.process(element, class_names, total))
  cpu = time.process_time() - cpu
  example = outputs[0]
  if not hasattr(example, 'serialized'):  # a TaggedOutput: the image failed
    return -1, b'', 0, cpu
  return (len(example.serialized), example.record_sha256,
          example.pixel_sums.num_pixels if example.pixel_sums else 0, cpu)


def row_dofn_loop(images, workers, work, training, class_names):
  """The DoFn loop: the job's conversion DoFn (``transforms.image.convert._ConvertImageFn``)
  itself, set up as the job's local run sets it up (the training split summed with ``--stats``,
  the measures with ``--image_checks``, a progress folder), its ``process`` called on each of
  ``images`` (of :func:`job_images`) in a Pool(workers), as the same-work loop runs: no runner,
  no other step. Against the same-work loop it is the DoFn's own code beyond the work (the read
  through Beam's ``FileSystems``, counters, the progress file, the element it yields); against
  the job, the runner and the job's other steps. The row's dict as :func:`row_same_work`'s."""
  import shutil  # pylint: disable=import-outside-toplevel
  progress_dir = tempfile.mkdtemp(prefix='bench_dofn_progress_')
  try:
    return _pool_row(_dofn_file, _init_dofn,
                     (work, training, class_names, len(images), progress_dir), images, workers)
  finally:
    shutil.rmtree(progress_dir, ignore_errors=True)


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


ROWS = {'tight_loop': row_tight_loop, 'same_work': row_same_work, 'dofn_loop': row_dofn_loop,
        'codec': row_codec, 'floor': row_floor, 'pillow': row_pillow, 'tf_data': row_tf_data,
        'dct': row_dct}


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


# --- the job against a loop doing the same work (issue 26) --------------------------------------

SAME_WORK_TARGET = 1.5
"""Issue 26: the per-image work beyond decode, resize and encode may cost the job at most this
many times what it costs the same-work loop."""

WALL_SHARE = 0.9
"""A round's wall-time ratios count when each of its runs kept at least this share of its cores
busy (CPU time over wall time and cores); on a shared machine often none does."""

SAME_WORK_ROW = "same-work loop (the conversion step's work, Pool)"
TIGHT_ROW = 'tight loop (codec.convert, Pool)'
DOFN_ROW = "DoFn loop (the job's conversion DoFn, Pool)"


def beyond_codec(job, tight, same):
  """Issue 26's ratio: (job - tight loop) / (same-work loop - tight loop), from three costs per
  image in one unit: what the job spends beyond decode, resize and encode over what the plain
  loop spends on the same work. None when a cost is missing or the loop's extra is not positive
  (the loops' difference drowned in the noise)."""
  if job is None or tight is None or same is None or same <= tight:
    return None
  return (job - tight) / (same - tight)


def at_most_verdict(value, target):
  """'met' or 'NOT met' for ``value <= target``; 'not measured' for None."""
  if value is None:
    return 'not measured'
  return 'met' if value <= target else 'NOT met'


def _run_row(name, number, images, seconds, cpu, workers, peak, note=''):
  """One timed run of the comparison, as a rate_table row (``number``: its round)."""
  return {'row': f'round {number}: {name}', 'images': images, 'seconds': seconds,
          'images_per_s': images / seconds, 'ms_per_image_per_core': 1000 * workers * seconds
          / images, 'cpu_ms_per_image': 1000 * cpu / images, 'cores': workers,
          'peak_rss_mib': peak, 'note': note}


def _loop_costs(results, workers):
  """(wall ms per image per core, CPU ms per image) of a loop's runs taken together."""
  images = sum(r['images'] for r in results)
  return (1000 * workers * sum(r['seconds'] for r in results) / images,
          1000 * sum(r['cpu_seconds'] for r in results) / images)


def _progress(run):
  """One line on stderr per finished run, as it ends: a long comparison's figures so far."""
  print(f"{time.strftime('%H:%M:%S')} {run['row']}: {run['images']} images, "
        f"{run['seconds']:.1f} s, {run['cpu_ms_per_image']:.3f} CPU ms/img, load "
        f'{os.getloadavg()[0]:.1f}', file=sys.stderr, flush=True)


def _same_as_job(results, manifest):
  """Whether each loop run built the job's records and summed its pixels: every split's
  fingerprint and the statistics' pixel count as the job's ``manifest`` (of the same files) has
  them; a dict of the figures compared and ``same``."""
  job = {'fingerprints': {name: split.get('fingerprint')
                          for name, split in manifest['splits'].items()},
         'num_pixels': (manifest.get('statistics') or {}).get('num_pixels', 0)}
  loops = [{'fingerprints': r['fingerprints'], 'num_pixels': r['num_pixels']} for r in results]
  return {'job': job, 'loops': loops, 'same': all(loop == job for loop in loops)}


# the comparison's runners: key -> (row name, note)
_LOOPS = {
    'same_work': (SAME_WORK_ROW, 'the work beyond the codec as a plain loop does it'),
    'dofn_loop': (DOFN_ROW, "the job's conversion DoFn, no runner"),
    'tight_loop': (TIGHT_ROW, 'decode, resize, encode only'),
}
# one round: each loop runs once beside each of the job's two runs, in mirrored order
_ROUND = ('job small', 'same_work', 'dofn_loop', 'tight_loop', 'job large', 'tight_loop',
          'dofn_loop', 'same_work')
_COSTS = ('job', 'dofn', 'same', 'tight')  # the four costs per image of a round, in each unit


def same_work_comparison(photos, root, sizes, workers, image_size, job_flags, rounds, work,
                         rows_runner):
  """The job at the two ``sizes`` against three loops on the larger size's files, in ``rounds``
  rounds; in each the runs alternate (``_ROUND``: job at the smaller size, same-work loop, DoFn
  loop, tight loop, job at the larger size, the loops in reverse), so that each loop runs
  beside each of the job's runs and all meet the same load.

  Per round: the job's steady-state cost per image (the slope between its two sizes: wall ms
  per image per core, and CPU ms per image of the command and every process it started), each
  loop's (its two runs together; CPU of the pool's workers), the ratio job / same-work loop and
  issue 26's (job - tight loop) / (same-work loop - tight loop). Returns the report's
  ``same_work`` section (every run, the rounds, the medians over the rounds)."""
  small, large = sizes
  base = {times: work / f'data_{times}x' for times in sizes}
  links = {times: common.repeat_tree(photos, root, times, base[times]) for times in sizes}
  _, _, _, splits_flag, label_source = job_setup(job_flags, image_size)
  images, training = job_images(links[large], base[large], splits_flag, label_source)
  work_args = job_work(job_flags, image_size)
  loop_args = {
      'same_work': {'images': images, 'workers': workers, 'work': work_args},
      'dofn_loop': {'images': images, 'workers': workers, 'work': work_args,
                    'training': training,
                    'class_names': sorted({image[2] for image in images} - {None})},
      'tight_loop': {'files': [image[0] for image in images], 'workers': workers,
                     'image_size': image_size},
  }
  runs, rounds_out = [], []
  for number in range(1, rounds + 1):
    job, manifests, loops = {}, {}, {key: [] for key in _LOOPS}
    for step in _ROUND:
      if step.startswith('job'):
        times = small if step == 'job small' else large
        wall, peak, written, cpu = run_pipeline(base[times], work / f'out_{times}x', workers,
                                                image_size, job_flags)
        job[times] = (written, wall, cpu)
        manifests[times] = json.loads((work / f'out_{times}x' / 'manifest.json').read_text())
        runs.append(_run_row(f'job {times}x (end to end)', number, written, wall, cpu, workers,
                             peak, 'whole command, start-up included'))
        _progress(runs[-1])
        continue
      result = rows_runner.run(step, loop_args[step])
      loops[step].append(result)
      name, note = _LOOPS[step]
      if 'pixel_sums' in result:
        note += f"; {result['pixel_sums']} with pixel sums ({training})"
      runs.append(_run_row(name, number, result['images'], result['seconds'],
                           result['cpu_seconds'], result['cores'], result['peak_rss_mib'], note))
      _progress(runs[-1])
    (n1, t1, c1), (n2, t2, c2) = job[small], job[large]
    figures = {'round': number, 'job_images': [n1, n2],
               'loop_images': {key: [r['images'] for r in loops[key]] for key in _LOOPS},
               'pixel_sums': loops['same_work'][0]['pixel_sums'],
               'same_as_job': _same_as_job(loops['same_work'] + loops['dofn_loop'],
                                           manifests[large])}
    if n2 > n1 and t2 > t1:
      figures['job_wall_ms'] = 1000 * workers * (t2 - t1) / (n2 - n1)
      figures['job_cpu_ms'] = 1000 * (c2 - c1) / (n2 - n1)
      figures['job_startup_s'] = t1 - n1 * (t2 - t1) / (n2 - n1)
      # more cores busy along the slope than the machine has: the two runs met different loads,
      # so the wall slope is no cost (as in pipeline_rows); the CPU slope still is
      figures['job_wall_unreliable'] = (c2 - c1) / (t2 - t1) > 1.05 * os.cpu_count()
    else:
      figures.update(job_wall_ms=None, job_cpu_ms=None, job_startup_s=None,
                     job_wall_unreliable=True)
    for key, cost in (('same_work', 'same'), ('dofn_loop', 'dofn'), ('tight_loop', 'tight')):
      figures[f'{cost}_wall_ms'], figures[f'{cost}_cpu_ms'] = _loop_costs(loops[key], workers)
    if figures['job_wall_unreliable']:
      figures['job_wall_ms'] = None
    for unit in ('wall', 'cpu'):
      job_ms, same_ms = figures[f'job_{unit}_ms'], figures[f'same_{unit}_ms']
      figures[f'job_over_same_{unit}'] = job_ms / same_ms if job_ms is not None else None
      figures[f'beyond_codec_{unit}'] = beyond_codec(job_ms, figures[f'tight_{unit}_ms'], same_ms)
    # Wall ms per image per core is a cost only for a run that had its cores: one that kept 1 of
    # its 2 busy (other jobs held the rest) counts its images twice as dear, and the difference
    # of differences above magnifies that. So the round's wall ratios count only when every run
    # kept at least WALL_SHARE of its cores busy; the CPU ratios do not depend on it.
    busy = [run['cpu_ms_per_image'] * run['images_per_s'] / 1000 / run['cores']
            for run in runs if run['row'].startswith(f'round {number}:')]
    figures['cores_busy_share'] = [min(busy), max(busy)]
    if min(busy) < WALL_SHARE:
      figures['job_over_same_wall'] = figures['beyond_codec_wall'] = None
    # the job's steps along the slope: each top-level step's milliseconds (the manifest's
    # step_msecs, elapsed time as Beam's state sampler attributes it) per extra image
    small_steps, large_steps = (manifests[t].get('step_msecs') or {} for t in (small, large))
    figures['step_ms'] = ({step: (large_steps.get(step, 0) - small_steps.get(step, 0)) / (n2 - n1)
                           for step in set(small_steps) | set(large_steps)}
                          if n2 > n1 and large_steps else {})
    rounds_out.append(figures)

  def median(key):
    values = [r[key] for r in rounds_out if r[key] is not None]
    return statistics.median(values) if values else None

  keys = [f'{cost}_{unit}_ms' for unit in ('wall', 'cpu') for cost in _COSTS] + [
      'job_over_same_wall', 'job_over_same_cpu', 'beyond_codec_wall', 'beyond_codec_cpu',
      'job_startup_s']
  return {'photos': len(photos), 'sizes': list(sizes), 'workers': workers,
          'image_size': image_size, 'job_flags': list(job_flags), 'rounds': rounds_out,
          'loop_images': len(images), 'training_split': training,
          'training_images': sum(1 for image in images if image[5]),
          'runs': runs, 'median': {key: median(key) for key in keys},
          'same_as_job': all(r['same_as_job']['same'] for r in rounds_out)}


def print_same_work(section):
  """The comparison's runs, its rounds, where the job's time goes; returns the targets table's
  rows (for ``common.finish_report``)."""
  small, large = section['sizes']
  print(f"{section['photos']} photos repeated {small}x and {large}x for the job; the loops on "
        f"the {large}x files ({section['loop_images']}, {section['training_images']} of them in "
        f"the training split '{section['training_split']}', whose images the job's --stats "
        f"sums); {section['workers']} workers, {section['image_size']} px shorter side; job "
        f"flags: {' '.join(section['job_flags']) or 'none (its defaults)'}; "
        f"{len(section['rounds'])} rounds\n")
  print(common.rate_table(section['runs'], extra=('note',)))
  print()
  print("Per round: the job's steady state (the slope between its two sizes) and the loops "
        "(their two runs together), per image\n")
  def wall(r, key):
    if r['job_wall_unreliable']:
      return 'unreliable (load changed)'
    low = r['cores_busy_share'][0]
    return r[key] if low >= WALL_SHARE else f'unreliable (a run had {low:.0%} of its cores)'

  print(common.format_table(
      ('round', 'job ms/img/core', 'DoFn loop', 'same-work loop', 'tight loop', 'job CPU ms/img',
       'DoFn loop', 'same-work loop', 'tight loop', 'cores busy / cores', 'job / same, wall',
       'job / same, CPU', '(job - tight) / (same - tight), wall',
       '(job - tight) / (same - tight), CPU'),
      [(r['round'], r['job_wall_ms'] if not r['job_wall_unreliable'] else 'unreliable',
        r['dofn_wall_ms'], r['same_wall_ms'], r['tight_wall_ms'], r['job_cpu_ms'],
        r['dofn_cpu_ms'], r['same_cpu_ms'], r['tight_cpu_ms'],
        '{:.2f}-{:.2f}'.format(*r['cores_busy_share']), wall(r, 'job_over_same_wall'),
        r['job_over_same_cpu'], wall(r, 'beyond_codec_wall'), r['beyond_codec_cpu'])
       for r in section['rounds']]))
  print()
  job = section['rounds'][-1]['same_as_job']['job']
  figures = (', '.join(f'{name} {value[:12]}...' for name, value in
                       sorted(job['fingerprints'].items()))
             + f"; {job['num_pixels']:,} pixels summed for the statistics")
  if section['same_as_job']:
    print(f"The same-work loop and the DoFn loop built the job's records byte for byte and "
          f"summed the pixels of the same images (every run: the job's split fingerprints and "
          f"pixel count for the {large}x files, {figures})\n")
  else:
    print(f"NOT the same work: a loop run's split fingerprints or pixel count differ from the "
          f"job's ({figures}; the JSON report has every run's)\n")
  median = section['median']
  rounds = len(section['rounds'])
  names = ('decode, resize, encode (tight loop)',
           'the work beyond them, as a plain loop does it (same-work - tight)',
           "the conversion DoFn's own code beyond that work (DoFn loop - same-work)",
           "the runner and the job's other steps (job - DoFn loop)",
           'the job, steady state (the slope)')

  def parts(r):
    job = r['job_cpu_ms']
    return (r['tight_cpu_ms'], r['same_cpu_ms'] - r['tight_cpu_ms'],
            r['dofn_cpu_ms'] - r['same_cpu_ms'], None if job is None else job - r['dofn_cpu_ms'],
            job)

  by_round = [parts(r) for r in section['rounds']]

  def middle(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

  print("Where the job's time per image goes: CPU ms per image, each round's costs taken apart "
        '(the parts of a round add up to its job; their medians need not)\n')
  print(common.format_table(
      ('part', *(f'round {r["round"]}' for r in section['rounds']), 'median'),
      [(name, *(p[i] for p in by_round), middle([p[i] for p in by_round]))
       for i, name in enumerate(names)]))
  print()
  steps = sorted({step for r in section['rounds'] for step in r['step_ms']},
                 key=lambda step: -(middle([r['step_ms'].get(step, 0)
                                            for r in section['rounds']]) or 0))
  if steps:
    rest = [r['job_cpu_ms'] - sum(r['step_ms'].values())
            if r['job_cpu_ms'] is not None and r['step_ms'] else None for r in section['rounds']]
    medians = {step: middle([r['step_ms'].get(step, 0.0) for r in section['rounds']])
               for step in steps}
    total = sum(value for value in medians.values() if value > 0)
    print("The job's steps along the slope: the manifest's step_msecs per extra image (elapsed "
          'ms as Beam\'s state sampler attributes them, summed over the workers: CPU time only '
          'when the cores were free; on shared cores the steps\' times include waiting for '
          'one, and the last row, the runner\'s own work, turns negative)\n')
    print(common.format_table(
        ('step: ms per image', *(f'round {r["round"]}' for r in section['rounds']), 'median',
         'share of the steps'),
        [(step, *(r['step_ms'].get(step, 0.0) for r in section['rounds']), medians[step],
          f'{100 * medians[step] / total:.1f}%' if total else '-') for step in steps]
        + [('(the slope\'s CPU less the steps: the runner\'s own work)', *rest, middle(rest),
            '-')]))
    print()
  return [
      (f'job steady state / same-work loop, CPU ms per image (median of {rounds} rounds)',
       median['job_over_same_cpu'], '-', 'for information'),
      ('the same, by wall ms per image per core', median['job_over_same_wall'], '-',
       'for information'),
      (f'(job - tight loop) / (same-work loop - tight loop), CPU ms per image (median of '
       f'{rounds} rounds)', median['beyond_codec_cpu'], f'<= {SAME_WORK_TARGET}',
       at_most_verdict(median['beyond_codec_cpu'], SAME_WORK_TARGET)),
      ('the same, by wall ms per image per core', median['beyond_codec_wall'],
       f'<= {SAME_WORK_TARGET}', at_most_verdict(median['beyond_codec_wall'], SAME_WORK_TARGET)
       if median['beyond_codec_wall'] is not None else
       f'unreliable (no round whose runs all had {WALL_SHARE:.0%} of their cores): see CPU'),
  ]


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


def _rate_row(name, result, note=''):
  rate = result['images'] / result['seconds']
  return {'row': name, 'images': result['images'], 'seconds': result['seconds'],
          'images_per_s': rate, 'ms_per_image_per_core': 1000 * result['cores'] / rate,
          'cpu_ms_per_image': 1000 * result['cpu_seconds'] / result['images'],
          'cores': result['cores'], 'peak_rss_mib': result.get('peak_rss_mib'), 'note': note}


def _steady_state(points):
  """(rate images/s, start-up s, CPU ms per extra image) from the smallest and largest
  (images, seconds, CPU seconds) points: the slope and the intercept of the line through them."""
  (n1, t1, c1), (n2, t2, c2) = min(points), max(points)
  if n2 <= n1 or t2 <= t1:
    return None, None, None
  rate = (n2 - n1) / (t2 - t1)
  return rate, t1 - n1 / rate, 1000 * (c2 - c1) / (n2 - n1)


unreliable = set()  # labels of pipeline rows whose wall slope is not a rate (see pipeline_rows)


def pipeline_rows(label, base, sizes, work, workers, image_size, flags):
  """The job at every size: (rows, steady-state images/s, start-up s, steady-state CPU ms per
  image); the last three None when the sizes do not give a slope."""
  rows, points = [], []
  for times in sizes:
    wall, peak, written, cpu = run_pipeline(base[times], work / f'out_{label}_{times}x',
                                            workers, image_size, flags)
    points.append((written, wall, cpu))
    rows.append({'row': f'{label} {times}x (end to end)', 'images': written, 'seconds': wall,
                 'images_per_s': written / wall, 'ms_per_image_per_core': 1000 * workers * wall
                 / written, 'cpu_ms_per_image': 1000 * cpu / written, 'cores': workers,
                 'peak_rss_mib': peak, 'note': 'whole command, start-up included'})
  rate, startup, cpu_ms = _steady_state(points)
  if rate and cpu_ms * rate / 1000 > 1.05 * os.cpu_count():
    # More cores busy than the machine has: the two runs met different loads from other jobs
    # (the smaller one slowed more), so the wall slope is not a rate. The CPU slope still is.
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
      report['same_work'] = same_work_comparison(
          photos, root, sizes, args.workers, args.image_size, shlex.split(args.job_flags),
          args.same_work_rounds, pathlib.Path(tmp), rows_runner)
      report['machine_after'] = common.machine()
    common.print_machine(report)
    print(f'data: {root}')
    targets = print_same_work(report['same_work'])
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
    tight = rows_runner.run('tight_loop', {
        'files': largest, 'workers': args.workers, 'image_size': args.image_size})
    rows.append(_rate_row(TIGHT_ROW, tight, f'{max(sizes)}x files; the limit'))
    _, _, _, splits_flag, label_source = job_setup(job_flags, args.image_size)
    images, training = job_images(links[max(sizes)], base[max(sizes)], splits_flag,
                                  label_source)
    same = rows_runner.run('same_work', {'images': images, 'workers': args.workers,
                                         'work': job_work(job_flags, args.image_size)})
    rows.append(_rate_row(SAME_WORK_ROW, same, f"{max(sizes)}x files; "
                          f"{same['pixel_sums']} with pixel sums ({training})"))
    typical = {'files': one, 'image_size': args.image_size, 'min_seconds': args.min_seconds,
               'max_side': MAX_TYPICAL_SIDE}
    codec_row = rows_runner.run('codec', typical)
    rows.append(_rate_row('codec.convert, 1 core', codec_row,
                          f'photos up to {MAX_TYPICAL_SIDE} px, bytes in memory'))
    floor = rows_runner.run('floor', typical)
    rows.append(_rate_row('libjpeg-turbo floor, 1 core', floor,
                          'the same photos: decode + resize + encode only'))
    # One glob per folder, as users list their files.
    patterns = sorted({str(p.parent / ('*' + p.suffix)) for p in links[max(sizes)]})
    tf_row = rows_runner.run('tf_data', {
        'patterns': patterns, 'output': str(work / 'tf_data.tfrecord'),
        'image_size': args.image_size})
    rows.append(_rate_row('tf.data converter', tf_row, f'{max(sizes)}x files, all cores'))
    pillow = rows_runner.run('pillow', {'files': one, 'image_size': args.image_size,
                                        'min_seconds': args.min_seconds})
    rows.append(_rate_row('Pillow loop, 1 core', pillow, 'files from disk'))

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
  tight_rate = by[TIGHT_ROW]['images_per_s']
  tf_rate = by['tf.data converter']['images_per_s']
  # One core each: CPU time per image is the cost per core, whatever else shares the machine.
  codec_ms = by['codec.convert, 1 core']['cpu_ms_per_image']
  floor_ms = by['libjpeg-turbo floor, 1 core']['cpu_ms_per_image']
  tight_cpu = by[TIGHT_ROW]['cpu_ms_per_image']
  pipe_steady = by.get(f'{pipe_label}, steady state', {})
  # issue 26: the job's cost beyond decode, resize and encode against the same-work loop's
  pipe_wall = None if pipe_label in unreliable else pipe_steady.get('ms_per_image_per_core')
  # the wall figures are costs only where each row had its cores (see WALL_SHARE)
  shares = [row['cpu_ms_per_image'] * row['images_per_s'] / 1000 / row['cores']
            for row in (pipe_steady, by[TIGHT_ROW], by[SAME_WORK_ROW]) if row]
  wall_share_low = min(shares) < WALL_SHARE
  beyond_wall = beyond_codec(pipe_wall, by[TIGHT_ROW]['ms_per_image_per_core'],
                             by[SAME_WORK_ROW]['ms_per_image_per_core'])
  beyond_cpu = beyond_codec(pipe_cpu, tight_cpu, by[SAME_WORK_ROW]['cpu_ms_per_image'])
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
       f'<= {SAME_WORK_TARGET}',
       'unreliable (load changed): see the CPU-time ratio' if pipe_label in unreliable else
       f'unreliable (a row had {min(shares):.0%} of its cores): see the CPU-time ratio'
       if wall_share_low else at_most_verdict(beyond_wall, SAME_WORK_TARGET)),
      ('the same, by CPU time per image', beyond_cpu, f'<= {SAME_WORK_TARGET}',
       at_most_verdict(beyond_cpu, SAME_WORK_TARGET)),
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
