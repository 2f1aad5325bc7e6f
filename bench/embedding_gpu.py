"""EfficientNetB0 embeddings per second on a GPU: the model the job's ``--embedding_model`` runs.

    KERAS_BACKEND=jax python3 bench/embedding_gpu.py --records=DIR [--split=train]
        [--batch_sizes=64,256] [--batches=20] [--json=PATH]

Meant for the GPU machine the device tool lends (an H200), whose Python has JAX with CUDA but no
TensorFlow (its wheel is four times what may travel there), so the job's own RunInference step
(TensorFlow) cannot run on it. This script runs the same Keras 3 model on JAX:
``keras.applications.EfficientNetB0(include_top=False, weights=None, pooling='avg')`` (1,280
floats per image; untrained weights cost what ImageNet's cost), on the job's records decoded once
with OpenCV and centre-cropped to 224 px, in batches, after one warm-up batch per batch size
(the compilation). Rows: float32, and Keras's ``mixed_bfloat16`` policy. The figure is the
model's embeddings per second with the images already decoded in host memory, the copy to the
device included. The CPU figures of the same model in the job are ``bench/embedding.py``'s.
"""

import argparse
import json
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'reader'))
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

import cv2  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from imagerecords import contract, framing, records  # pylint: disable=wrong-import-position

SIZE = 224


def decoded_images(records_dir: pathlib.Path, split: str) -> np.ndarray:
  """uint8 [N, 224, 224, 3] RGB: every record of ``split``, centre square, resized."""
  images = []
  for shard in sorted(records_dir.glob(contract.shard_glob(split))):
    with shard.open('rb') as stream:
      for record in framing.read_records(stream):
        encoded = records.parse_example(record, keys=(contract.IMAGE_ENCODED,))
        image = cv2.imdecode(np.frombuffer(encoded[contract.IMAGE_ENCODED][0], np.uint8),
                             cv2.IMREAD_COLOR)
        height, width = image.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        square = image[top:top + side, left:left + side]
        images.append(cv2.cvtColor(cv2.resize(square, (SIZE, SIZE)), cv2.COLOR_BGR2RGB))
  if not images:
    sys.exit(f'no {split} records in {records_dir}')
  return np.stack(images)


def measure(keras, images: np.ndarray, batch_size: int, batches: int, policy: str) -> dict:
  keras.mixed_precision.set_global_policy(policy)
  model = keras.applications.EfficientNetB0(include_top=False, weights=None,
                                            input_shape=(SIZE, SIZE, 3), pooling='avg')
  repeats = -(-batch_size // len(images))
  pool = np.concatenate([images] * repeats)[:batch_size].astype(np.float32)
  first = time.perf_counter()
  out = model.predict_on_batch(pool)  # compiles for this shape
  compile_s = time.perf_counter() - first
  start = time.perf_counter()
  for _ in range(batches):
    out = model.predict_on_batch(pool)
  np.asarray(out)  # waits for the device
  seconds = time.perf_counter() - start
  return {'policy': policy, 'batch_size': batch_size, 'images': batches * batch_size,
          'seconds': seconds, 'embeddings_per_s': batches * batch_size / seconds,
          'first_batch_s': compile_s, 'embedding_shape': list(np.asarray(out).shape[1:])}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--records', required=True, help="The job's output directory.")
  parser.add_argument('--split', default='train')
  parser.add_argument('--batch_sizes', default='64,256')
  parser.add_argument('--batches', type=int, default=20)
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  import keras  # pylint: disable=import-outside-toplevel
  images = decoded_images(pathlib.Path(args.records), args.split)
  report = {'backend': keras.backend.backend(), 'keras': keras.__version__,
            'images_decoded': len(images), 'rows': []}
  if report['backend'] == 'jax':
    import jax  # pylint: disable=import-outside-toplevel
    report['devices'] = [str(device) for device in jax.devices()]
  print(f"Keras {keras.__version__} on {report['backend']} "
        f"({', '.join(report.get('devices', ['cpu']))}); {len(images)} decoded {args.split} images",
        flush=True)
  for policy in ('float32', 'mixed_bfloat16'):
    for batch_size in [int(b) for b in args.batch_sizes.split(',')]:
      row = measure(keras, images, batch_size, args.batches, policy)
      report['rows'].append(row)
      print(f"{policy:<15} batch {batch_size:>4}: {row['embeddings_per_s']:8.0f} embeddings/s "
            f"(first batch {row['first_batch_s']:.1f} s)", flush=True)
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(report, indent=2) + '\n')


if __name__ == '__main__':
  main()
