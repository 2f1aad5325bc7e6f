"""Embedding benchmark: the job with ``--embedding_model`` beside the same job without it.

    .venv/bin/python bench/embedding.py [--data=../shared/data/hymenoptera] [--repeat=2]
        [--image_size=256] [--input_size=224] [--batch_size=8] [--limit=N] [--json=PATH]

The model is EfficientNetB0 without its top (``keras.applications:EfficientNetB0``) with
untrained weights (``weights=None``, saved to a temporary ``.weights.h5`` and passed as
``--embedding_weights``: no download; ImageNet's weights cost the same to run). The photos are
the JPEGs of ``--data`` repeated ``--repeat`` times (symlinks with distinct names).

Three rows, run one after the other on the same photos:

* ``convert``: ``python -m pipeline.run`` as a user runs it (multi-process local runner, one
  SDK worker per core), ``--stats=false``;
* ``convert + embed``: the same with ``--embedding_model`` (pooling avg: 1,280 floats per record);
* ``model alone``: the embedding function of the job (``transforms.image.embedding.Embedder``:
  parse, decode, crop and resize as the reader does, preprocess, EfficientNetB0, pool) on the
  records the second row wrote, in batches of ``--batch_size``, in this process (TensorFlow's own
  threads on every core), after one warm-up batch: the model's embeddings/s without Beam.

Printed per row: images, wall seconds (start-up included for the job rows), images/s, CPU
seconds, peak RSS of the process tree (MiB); then the ratio of the two job rows.
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


def _job(data: pathlib.Path, out: pathlib.Path, flags):
  cmd = [sys.executable, '-m', 'pipeline.run', f'--input_dir={data}', f'--output_dir={out}',
         '--stats=false', '--num_shards=2', common.FOLLOW_LINKS, *common.one_class_flags(),
         *flags]
  status, wall, peak, output, cpu = common.run_measured(cmd, cpu=True)
  if status != 0:
    sys.exit(f'the job failed ({status}):\n{output[-3000:]}')
  manifest = json.loads((out / 'manifest.json').read_text())
  return {'images': manifest['num_examples'], 'wall_s': round(wall, 2),
          'images_per_s': round(manifest['num_examples'] / wall, 1),
          'cpu_s': round(cpu, 1), 'peak_rss_mib': round(peak / 2**20)}


def _model_alone(out: pathlib.Path, spec, batch_size: int):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from transforms.image import embedding  # pylint: disable=import-outside-toplevel
  records = [record for path in sorted(out.glob('*.tfrecord'))
             for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()]
  embedder = embedding.Embedder(embedding.load(spec), spec)
  embedder(records[:batch_size])  # warm-up: trace the function
  start, cpu_start = time.perf_counter(), time.process_time()
  for i in range(0, len(records), batch_size):
    embedder(records[i:i + batch_size])
  wall = time.perf_counter() - start
  return {'images': len(records), 'wall_s': round(wall, 2),
          'images_per_s': round(len(records) / wall, 1),
          'cpu_s': round(time.process_time() - cpu_start, 1), 'peak_rss_mib': None}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--data', default=str(common.SHARED_DATA / 'hymenoptera'))
  parser.add_argument('--repeat', type=int, default=2)
  parser.add_argument('--image_size', type=int, default=256)
  parser.add_argument('--input_size', type=int, default=224)
  parser.add_argument('--batch_size', type=int, default=8)
  parser.add_argument('--limit', type=int, default=None, help='only the first N photos')
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import keras  # pylint: disable=import-outside-toplevel
  from transforms.image import embedding  # pylint: disable=import-outside-toplevel
  root = pathlib.Path(args.data)
  files = common.image_files(root, args.limit)
  report = {'machine_before': common.machine(), 'command': ' '.join(sys.argv), 'rows': {}}
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    data = tmp / 'data'
    common.repeat_tree(files, root, args.repeat, data)
    weights = tmp / 'b0.weights.h5'
    keras.applications.EfficientNetB0(
        include_top=False, weights=None,
        input_shape=(args.input_size, args.input_size, 3)).save_weights(weights)
    spec = embedding.EmbeddingSpec('keras.applications:EfficientNetB0', str(weights),
                                   image_size=args.input_size, batch_size=args.batch_size)
    common_flags = [f'--image_size={args.image_size}']
    rows = report['rows']
    rows['convert'] = _job(data, tmp / 'plain', common_flags)
    rows['convert + embed'] = _job(data, tmp / 'embedded', [
        *common_flags, f'--embedding_model={spec.model}', f'--embedding_weights={weights}',
        f'--embedding_image_size={args.input_size}',
        f'--embedding_batch_size={args.batch_size}'])
    rows['model alone'] = _model_alone(tmp / 'embedded', spec, args.batch_size)
  report['machine_after'] = common.machine()
  common.print_machine(report)
  columns = ('row', 'images', 'wall_s', 'images_per_s', 'cpu_s', 'peak_rss_mib')
  print(common.format_table(columns, [[name, *(row[c] for c in columns[1:])]
                                      for name, row in rows.items()]))
  ratio = rows['convert']['images_per_s'] / rows['convert + embed']['images_per_s']
  print(f'convert + embed is {ratio:.1f}x slower than convert alone; the model alone runs '
        f"{rows['model alone']['images_per_s']} embeddings/s")
  report['slowdown'] = round(ratio, 2)
  common.write_json(args.json, report)


if __name__ == '__main__':
  main()
