"""Reader benchmark: ``imagerecords.load`` against a tight tf.data loop, TFDS and raw JPEG files.

    .venv/bin/python bench/reader.py [--data=../shared/data/hymenoptera] [--records=DIR]
        [--split=train] [--batch_size=128] [--image_size=224] [--warmup=5] [--batches=100]
        [--limit=N] [--json=PATH]

The shards are the Beam job's output for ``--data`` at 256 px (shorter side), converted once
into a temporary directory with ``python -m pipeline.run`` (or taken from ``--records``, an
existing output directory). Every row reads the same split in training mode -- Inception-style
random crop to ``--image_size`` and random left-right flip -- in batches of ``--batch_size``,
repeated, and reports the images per second over ``--batches`` batches after ``--warmup``
batches. Each row runs in its own process (its own peak RSS; nothing shared with the others).

* ``load``: ``imagerecords.load(dir, split, batch, size, training=True, repeat=True)``, float32
  (the default) and ``dtype=tf.uint8`` (normalisation moved to the accelerator).
* ``load, full decode``: ``load`` with its crop-window decode (``tf.io.decode_and_crop_jpeg``)
  replaced by a full ``decode_jpeg`` and a crop: what the window decode buys.
* ``limit``: the least tf.data pipeline doing the same per-image work (parse, window decode,
  the reader's own resize, flip, batch): no file shuffle, no record shuffle, no per-example
  seeds (stateful random ops instead).
* ``TFDS``: ``tfds.builder_from_directory`` on the same directory, with the same preprocessing,
  when the output holds TFDS metadata (``dataset_info.json``) and tensorflow_datasets is
  installed.
* ``original JPEGs``: what users had before: ``list_files`` over the source photos of the split,
  ``read_file``, ``decode_jpeg``, the same random crop window, ``tf.image.resize`` (its
  defaults: bilinear, no antialiasing), flip, batch.

A ResNet-50 training step fed from the same records on a GPU machine: ``bench/gpu_step.py``.
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=wrong-import-position

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


# --- rows, each run in its own process ------------------------------------------------------------

def _time_batches(dataset, warmup, batches, batch_size):
  """Images per second over ``batches`` batches after ``warmup``; (images, seconds)."""
  iterator = iter(dataset)
  for _ in range(warmup):
    next(iterator)
  start, cpu = time.perf_counter(), time.process_time()
  for _ in range(batches):
    images = next(iterator)[0]
  wall = time.perf_counter() - start
  cpu = time.process_time() - cpu
  assert images.shape[0] == batch_size, images.shape
  return {'images': batches * batch_size, 'seconds': wall, 'cores': os.cpu_count(),
          'cpu_seconds': cpu, 'dtype': images.dtype.name}


def _random_crop_fn(image_size, dtype, plain_resize=False):
  """encoded JPEG -> the reader's training preprocessing, with stateful random ops:
  Inception-style window (decoded alone, or the whole image decoded and cropped), resized with
  the reader's own resize (or, ``plain_resize``, the ``tf.image.resize`` defaults users write),
  flipped, cast. Two functions: (window decode, full decode). The reader's IDCT
  (``contract.JPEG_DCT_METHOD``), or with ``plain_resize`` TensorFlow's default, as users write."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from imagerecords import contract  # pylint: disable=import-outside-toplevel
  from imagerecords import preprocessing as lib  # pylint: disable=import-outside-toplevel
  dct_method = '' if plain_resize else contract.JPEG_DCT_METHOD

  def window(shape):
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        shape, bounding_boxes=tf.constant([0., 0., 1., 1.], shape=[1, 1, 4]),
        # pylint: disable=protected-access
        min_object_covered=lib._MIN_OBJECT_COVERED, aspect_ratio_range=lib._ASPECT_RATIO_RANGE,
        area_range=lib._AREA_RANGE, max_attempts=lib._MAX_ATTEMPTS,
        use_image_if_no_bounding_boxes=True)
    return tf.stack([begin[0], begin[1], size[0], size[1]])

  def finish(image):
    if plain_resize:
      image = tf.image.resize(image, [image_size, image_size])
    else:
      image = lib._resize(image, image_size)  # pylint: disable=protected-access
    if dtype == 'uint8':
      image = tf.cast(tf.clip_by_value(tf.round(image), 0., 255.), tf.uint8)
    else:
      image = tf.clip_by_value(image / 255., 0., 1.)
    return tf.image.random_flip_left_right(image)

  def window_decode(encoded):
    crop = window(tf.image.extract_jpeg_shape(encoded))
    return finish(tf.io.decode_and_crop_jpeg(encoded, crop, channels=3, dct_method=dct_method))

  def full_decode(encoded):
    image = tf.io.decode_jpeg(encoded, channels=3, dct_method=dct_method)
    y, x, h, w = tf.unstack(window(tf.shape(image)))
    return finish(tf.image.crop_to_bounding_box(image, y, x, h, w))

  return window_decode, full_decode


def row_load(records, split, batch_size, image_size, dtype, warmup, batches, full_decode=False):
  """imagerecords.load in training mode; optionally without the crop-window decode."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  import imagerecords  # pylint: disable=import-outside-toplevel
  from imagerecords import contract  # pylint: disable=import-outside-toplevel
  from imagerecords import preprocessing as lib  # pylint: disable=import-outside-toplevel
  window_decode = lib._decode_window  # pylint: disable=protected-access
  if full_decode:
    def decode_whole_then_crop(encoded, window_fn, channels=3, raw_shape=None):
      del raw_shape  # the benchmark's records are JPEGs
      image = tf.io.decode_jpeg(encoded, channels=channels,
                                dct_method=contract.JPEG_DCT_METHOD)
      y, x, h, w = tf.unstack(window_fn(tf.shape(image)))
      return tf.image.crop_to_bounding_box(image, y, x, h, w)
    lib._decode_window = decode_whole_then_crop  # pylint: disable=protected-access
  try:
    dataset = imagerecords.load(records, split, batch_size, image_size, training=True, seed=0,
                                repeat=True, dtype=getattr(tf, dtype))
  finally:  # the map function is traced inside load(): later rows (--in_process) get the real one
    lib._decode_window = window_decode  # pylint: disable=protected-access
  return _time_batches(dataset, warmup, batches, batch_size)


def row_limit(files, batch_size, image_size, dtype, warmup, batches):
  """The least tf.data pipeline with the same per-image work as load(training=True)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  window_decode, _ = _random_crop_fn(image_size, dtype)
  spec = {'image/encoded': tf.io.FixedLenFeature([], tf.string),
          'image/class/label': tf.io.FixedLenFeature([], tf.int64)}

  def parse(serialized):
    features = tf.io.parse_single_example(serialized, spec)
    return (window_decode(features['image/encoded']),
            tf.cast(features['image/class/label'], tf.int32))

  dataset = (tf.data.TFRecordDataset(files, num_parallel_reads=len(files)).repeat()
             .map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
             .batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))
  return _time_batches(dataset, warmup, batches, batch_size)


def row_tfds(records, split, batch_size, image_size, dtype, warmup, batches):
  """TFDS reading the same shards (its own metadata), the same preprocessing."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  window_decode, _ = _random_crop_fn(image_size, dtype)
  builder = tfds.builder_from_directory(records)
  # The features are the record keys; the image stays encoded so that the same window decode
  # applies (TFDS's own decode would decode the whole image first).
  dataset = builder.as_dataset(split=split, shuffle_files=True, as_supervised=True,
                               decoders={'image/encoded': tfds.decode.SkipDecoding()})
  dataset = (dataset.repeat().shuffle(10_000)
             .map(lambda image, label: (window_decode(image), tf.cast(label, tf.int32)),
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
             .batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))
  return _time_batches(dataset, warmup, batches, batch_size)


def row_original(patterns, class_names, batch_size, image_size, dtype, warmup, batches):
  """A tf.data pipeline over the source JPEGs: list, read, decode, crop, resize, flip, batch."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  _, full_decode = _random_crop_fn(image_size, dtype, plain_resize=True)
  names = tf.constant(class_names)

  def load_file(path):
    label = tf.argmax(tf.cast(tf.equal(tf.strings.split(path, '/')[-2], names), tf.int32),
                      output_type=tf.int32)
    return full_decode(tf.io.read_file(path)), label

  dataset = (tf.data.Dataset.list_files(patterns, shuffle=True).repeat()
             .map(load_file, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
             .batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))
  return _time_batches(dataset, warmup, batches, batch_size)


ROWS = {'load': row_load, 'limit': row_limit, 'tfds': row_tfds, 'original': row_original}


# --- the benchmark ------------------------------------------------------------------------------

def convert(data, output, image_size, limit):
  """The Beam job on ``data`` (its first ``limit`` photos: symlinked into a temp dir)."""
  source = data
  if limit:
    source = output.parent / 'limited'
    common.repeat_tree(common.image_files(data, limit), data, 1, source)
  cmd = [sys.executable, '-m', 'pipeline.run', f'--input_dir={source}', f'--output_dir={output}',
         f'--image_size={image_size}', '--num_shards=4', '--overwrite', common.FOLLOW_LINKS,
         *common.one_class_flags()]
  status, wall, _, log = common.run_measured(cmd)
  if status != 0:
    raise RuntimeError(f'conversion failed (exit {status}):\n{log[-3000:]}')
  return wall


def _has_tfds():
  try:
    import tensorflow_datasets  # pylint: disable=import-outside-toplevel,unused-import
    return True
  except ImportError:
    return False


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--data', default=str(common.SHARED_DATA / 'hymenoptera'),
                      help='Folder of real photos to convert (and to read raw, the last row).')
  parser.add_argument('--records', default=None,
                      help='An existing output directory of the job for --data (skips the '
                      'conversion).')
  parser.add_argument('--split', default='train', help='Split to read. Default train.')
  parser.add_argument('--batch_size', type=int, default=128, help='Default 128.')
  parser.add_argument('--image_size', type=int, default=224, help='Crop size. Default 224.')
  parser.add_argument('--warmup', type=int, default=5, help='Batches before timing.')
  parser.add_argument('--batches', type=int, default=100, help='Batches timed.')
  parser.add_argument('--limit', type=int, default=None,
                      help='Convert only the first N photos (a quick check, e.g. 8).')
  common.add_row_flags(parser)
  args = parser.parse_args(argv)
  data = pathlib.Path(args.data).resolve()
  rows_runner = common.Rows(str(pathlib.Path(__file__).resolve()), ROWS, args.in_process)
  report = {'command': ' '.join(['bench/reader.py', *(argv or sys.argv[1:])]),
            'machine_before': common.machine(), 'data': str(data), 'split': args.split,
            'batch_size': args.batch_size, 'image_size': args.image_size,
            'warmup': args.warmup, 'batches': args.batches}

  with tempfile.TemporaryDirectory(prefix='bench_reader_') as tmp:
    records = args.records
    if records is None:
      records = str(pathlib.Path(tmp) / 'records')
      report['conversion_seconds'] = convert(data, pathlib.Path(records), 256, args.limit)
    manifest = json.loads((pathlib.Path(records) / 'manifest.json').read_text())
    shards = [str(pathlib.Path(records) / shard['file'])
              for shard in manifest['splits'][args.split]['shards']]
    class_names = (pathlib.Path(records) / 'labels.txt').read_text().split()
    # The source photos of the split: the split folder's JPEGs (split folders) or all of them.
    split_dir = data / args.split if (data / args.split).is_dir() else data
    photos = common.image_files(split_dir, args.limit)
    patterns = sorted({str(p.parent / ('*' + p.suffix)) for p in photos})

    timing = {'batch_size': args.batch_size, 'image_size': args.image_size,
              'warmup': args.warmup, 'batches': args.batches}
    plan = [
        ('load, float32', 'load', {'records': records, 'split': args.split, 'dtype': 'float32'}),
        ('load, uint8', 'load', {'records': records, 'split': args.split, 'dtype': 'uint8'}),
        ('load, float32, full decode', 'load', {'records': records, 'split': args.split,
                                                'dtype': 'float32', 'full_decode': True}),
        ('limit, float32', 'limit', {'files': shards, 'dtype': 'float32'}),
        ('limit, uint8', 'limit', {'files': shards, 'dtype': 'uint8'}),
    ]
    tfds_note = None
    if not (pathlib.Path(records) / 'dataset_info.json').exists():
      tfds_note = 'not measured: the output has no dataset_info.json (TFDS metadata)'
    elif not _has_tfds():
      tfds_note = 'not measured: tensorflow_datasets is not installed'
    else:
      plan.append(('TFDS, float32', 'tfds', {'records': records, 'split': args.split,
                                             'dtype': 'float32'}))
    plan.append(('original JPEGs, float32', 'original', {
        'patterns': patterns, 'class_names': class_names, 'dtype': 'float32'}))
    rows = []
    for name, row, row_args in plan:
      result = rows_runner.run(row, {**row_args, **timing})
      rate = result['images'] / result['seconds']
      rows.append({'row': name, 'images': result['images'], 'seconds': result['seconds'],
                   'images_per_s': rate, 'ms_per_image_per_core': 1000 * result['cores'] / rate,
                   'cpu_ms_per_image': 1000 * result['cpu_seconds'] / result['images'],
                   'peak_rss_mib': result['peak_rss_mib'], 'dtype': result['dtype']})
  report['machine_after'] = common.machine()

  by = {row['row']: row['images_per_s'] for row in rows}
  cpu = {row['row']: row['cpu_ms_per_image'] for row in rows}
  def ratio(a, b):
    return by[a] / by[b] if a in by and b in by else None
  def cpu_ratio(a, b):  # a's rate over b's, from CPU time per image: b's CPU / a's CPU
    return cpu[b] / cpu[a] if a in cpu and b in cpu else None
  targets = [
      ('load / limit (float32)', ratio('load, float32', 'limit, float32'), '>= 0.9'),
      ('load / limit (uint8)', ratio('load, uint8', 'limit, uint8'), '>= 0.9'),
      ('load / TFDS (float32)', ratio('load, float32', 'TFDS, float32'), '>= 1'),
      ('load / original JPEGs (float32)', ratio('load, float32', 'original JPEGs, float32'),
       '>= 2'),
      ('the same by CPU time per image: load / limit (float32)',
       cpu_ratio('load, float32', 'limit, float32'), '>= 0.9'),
      ('the same by CPU time per image: load / TFDS (float32)',
       cpu_ratio('load, float32', 'TFDS, float32'), '>= 1'),
      ('the same by CPU time per image: load / original JPEGs',
       cpu_ratio('load, float32', 'original JPEGs, float32'), '>= 2'),
      ('uint8 / float32 output (load)', ratio('load, uint8', 'load, float32'), 'shown'),
      ('window decode / full decode (load, float32)',
       ratio('load, float32', 'load, float32, full decode'), 'shown'),
  ]
  targets = [(m, v, t, common.verdict(v, float(t.split()[-1])) if t != 'shown' else '-')
             for m, v, t in targets]
  if tfds_note:
    for i in (2, 5):
      targets[i] = (targets[i][0], None, targets[i][2], tfds_note)
  report.update({'rows': rows, 'tfds': tfds_note or 'measured'})

  common.print_machine(report)
  print(f"split {args.split} of {records} ({manifest['splits'][args.split]['num_examples']} "
        f'examples, repeated), batch {args.batch_size}, {args.image_size} px random crop + '
        f'flip, {args.batches} batches timed after {args.warmup}\n')
  print(common.rate_table(rows))
  print()
  common.finish_report(report, targets, args.json)


if __name__ == '__main__':
  if not common.child_main(ROWS):
    main()
