"""ResNet-50 training steps on a GPU, fed from the job's records: what the GPU eats, what feeds it.

    python3 bench/gpu_step.py --records=DIR [--split=train] [--batch_size=256] [--image_size=224]
        [--warmup=8] [--steps=24] [--workers=4,8,15] [--json=PATH]

Meant for the GPU machine the device tool lends (an H200), whose Python has PyTorch and
torchvision but no TensorFlow: the TensorFlow wheel (tensorflow-cpu 2.21, 274 MB) is four times
what may travel there, so ``imagerecords.load`` (tf.data) cannot run on it. This script reads the
same shards without TensorFlow (``imagerecords.framing`` for the TFRecord frames,
``imagerecords.records`` for the ``tf.train.Example``, which needs protobuf 6.31.1 or later
there) and times one training step: torchvision's
ResNet-50 (1,000 classes, random weights), SGD with momentum, bfloat16 autocast, channels-last,
``--batch_size`` images of ``--image_size`` px. The rows, each over ``--steps`` steps after
``--warmup``:

* ``synthetic``: uint8 batches made once on the device; only the step. The GPU's appetite.
* ``records, CPU decode, N workers``: a ``torch.utils.data.DataLoader`` with N worker processes,
  each reading every N-th record of the split, decoding the JPEG with OpenCV (libjpeg-turbo),
  taking the reader's Inception-style random crop (area 8-100%, aspect 3/4-4/3, as
  ``imagerecords.load(training=True)``), bilinear resize, random flip, into a uint8 batch; pinned,
  copied to the device and normalised there (as ``imagerecords.load(dtype=tf.uint8)`` leaves it).
* ``records, GPU decode``: the main process hands the JPEG bytes to nvJPEG
  (``torchvision.io.decode_jpeg(device='cuda')``); crop and resize on the device.
* ``CPU decode, 1 process, no GPU``: the workers' per-image work alone in one process: the
  images one core prepares per second on that machine.

The figures are recorded in docs/benchmarks.md.
"""

import argparse
import json
import math
import os
import pathlib
import random
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'reader'))

import cv2  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
import torch  # pylint: disable=wrong-import-position
import torchvision  # pylint: disable=wrong-import-position

from imagerecords import contract, framing, records  # pylint: disable=wrong-import-position

# ImageNet's per-channel statistics in [0, 255] (torchvision's and Keras's convention).
MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# The reader's random crop (reader/imagerecords/dataset.py: Inception-style, TF-slim's ranges).
AREA_RANGE = (0.08, 1.0)
ASPECT_RANGE = (3 / 4, 4 / 3)
ATTEMPTS = 10


def read_split(records_dir: pathlib.Path, split: str):
  """[(JPEG bytes, label)] of every record of ``split`` in ``records_dir``, in shard order."""
  shards = sorted(records_dir.glob(contract.shard_glob(split)))
  if not shards:
    sys.exit(f'no {split} shards in {records_dir}')
  examples = []
  for shard in shards:
    with shard.open('rb') as stream:
      for record in framing.read_records(stream):
        features = records.parse_example(record,
                                         keys=(contract.IMAGE_ENCODED, contract.CLASS_LABEL))
        examples.append((features[contract.IMAGE_ENCODED][0],
                         features.get(contract.CLASS_LABEL, [0])[0]))
  return examples


def crop_window(height: int, width: int, rng: random.Random):
  """(y, x, h, w): an Inception-style random window, the whole image after ATTEMPTS misses."""
  area = height * width
  for _ in range(ATTEMPTS):
    target = area * rng.uniform(*AREA_RANGE)
    aspect = rng.uniform(*ASPECT_RANGE)
    h = int(round(math.sqrt(target / aspect)))
    w = int(round(math.sqrt(target * aspect)))
    if 0 < h <= height and 0 < w <= width:
      return rng.randint(0, height - h), rng.randint(0, width - w), h, w
  return 0, 0, height, width


def prepare(encoded: bytes, size: int, rng: random.Random, out: np.ndarray) -> None:
  """Decodes one JPEG, crops, resizes and flips it into ``out`` (uint8 [size, size, 3], RGB)."""
  image = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
  y, x, h, w = crop_window(image.shape[0], image.shape[1], rng)
  crop = image[y:y + h, x:x + w]
  if rng.random() < 0.5:
    crop = crop[:, ::-1]
  cv2.resize(crop, (size, size), dst=out, interpolation=cv2.INTER_LINEAR)
  cv2.cvtColor(out, cv2.COLOR_BGR2RGB, dst=out)


class RecordBatches(torch.utils.data.IterableDataset):
  """Endless uint8 batches ``[B, S, S, 3]`` and int64 labels ``[B]``; worker k of N takes every
  N-th record."""

  def __init__(self, examples, batch_size, size):
    super().__init__()
    self.examples, self.batch_size, self.size = examples, batch_size, size

  def __iter__(self):
    info = torch.utils.data.get_worker_info()
    worker, workers = (info.id, info.num_workers) if info else (0, 1)
    cv2.setNumThreads(1)
    mine = self.examples[worker::workers]
    rng = random.Random(worker)
    position = 0
    while True:
      images = np.empty((self.batch_size, self.size, self.size, 3), np.uint8)
      labels = np.empty(self.batch_size, np.int64)
      for i in range(self.batch_size):
        encoded, labels[i] = mine[position % len(mine)]
        position += 1
        prepare(encoded, self.size, rng, images[i])
      yield torch.from_numpy(images), torch.from_numpy(labels)


class Step:
  """One SGD step of ResNet-50 on a uint8 NHWC batch already on the device."""

  def __init__(self, device):
    self.model = torchvision.models.resnet50(num_classes=1000).to(
        device, memory_format=torch.channels_last)
    self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9,
                                     weight_decay=1e-4)
    self.loss = torch.nn.CrossEntropyLoss()
    self.mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    self.std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    self.device = device

  def __call__(self, images_nhwc, labels):
    images = images_nhwc.permute(0, 3, 1, 2).float().sub_(self.mean).div_(self.std)
    images = images.contiguous(memory_format=torch.channels_last)
    with torch.autocast(self.device.type, dtype=torch.bfloat16):
      loss = self.loss(self.model(images), labels)
    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    self.optimizer.step()


def timed(step, batches, warmup, steps, batch_size, device):
  """Images per second over ``steps`` steps after ``warmup``; ``batches`` yields device tensors."""
  for _ in range(warmup):
    step(*next(batches))
  if device.type == 'cuda':
    torch.cuda.synchronize()
  start = time.perf_counter()
  for _ in range(steps):
    step(*next(batches))
  if device.type == 'cuda':
    torch.cuda.synchronize()
  seconds = time.perf_counter() - start
  return {'images': steps * batch_size, 'seconds': seconds,
          'images_per_s': steps * batch_size / seconds}


def synthetic_batches(batch_size, size, device):
  images = torch.randint(0, 256, (batch_size, size, size, 3), dtype=torch.uint8, device=device)
  labels = torch.randint(0, 1000, (batch_size,), device=device)
  while True:
    yield images, labels


def loader_batches(examples, batch_size, size, workers, device):
  loader = torch.utils.data.DataLoader(
      RecordBatches(examples, batch_size, size), batch_size=None, num_workers=workers,
      pin_memory=device.type == 'cuda', prefetch_factor=4, persistent_workers=False)
  for images, labels in loader:
    yield (images.to(device, non_blocking=True), labels.to(device, non_blocking=True))


def gpu_decode_batches(examples, batch_size, size, device):
  """nvJPEG decodes on the device; random crop, resize and flip there too."""
  rng = random.Random(0)
  data = [torch.frombuffer(bytearray(encoded), dtype=torch.uint8) for encoded, _ in examples]
  labels = [label for _, label in examples]
  position = 0
  while True:
    index = [(position + i) % len(data) for i in range(batch_size)]
    position += batch_size
    decoded = torchvision.io.decode_jpeg([data[i] for i in index],
                                         mode=torchvision.io.ImageReadMode.RGB, device=device)
    out = torch.empty((batch_size, size, size, 3), dtype=torch.uint8, device=device)
    for slot, image in enumerate(decoded):
      y, x, h, w = crop_window(image.shape[1], image.shape[2], rng)
      crop = image[None, :, y:y + h, x:x + w].float()
      if rng.random() < 0.5:
        crop = crop.flip(3)
      resized = torch.nn.functional.interpolate(crop, size=(size, size), mode='bilinear',
                                                align_corners=False)
      out[slot] = resized[0].round_().clamp_(0, 255).permute(1, 2, 0).to(torch.uint8)
    yield out, torch.tensor([labels[i] for i in index], device=device)


def cpu_decode_rate(examples, size, seconds=3.0):
  """Images one process decodes, crops and resizes per second (no GPU, no batching)."""
  cv2.setNumThreads(1)
  rng = random.Random(0)
  out = np.empty((size, size, 3), np.uint8)
  done, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    prepare(examples[done % len(examples)][0], size, rng, out)
    done += 1
  elapsed = time.perf_counter() - start
  return {'images': done, 'seconds': elapsed, 'images_per_s': done / elapsed}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--records', required=True, help="The job's output directory.")
  parser.add_argument('--split', default='train')
  parser.add_argument('--batch_size', type=int, default=256)
  parser.add_argument('--image_size', type=int, default=224)
  parser.add_argument('--warmup', type=int, default=8)
  parser.add_argument('--steps', type=int, default=24)
  parser.add_argument('--workers', default='4,8,15', help='DataLoader worker counts to try.')
  parser.add_argument('--json', default=None, help='Also write the rows as JSON here.')
  args = parser.parse_args(argv)

  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  torch.backends.cudnn.benchmark = True
  examples = read_split(pathlib.Path(args.records), args.split)
  report = {'device': torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu',
            'torch': torch.__version__, 'torchvision': torchvision.__version__,
            'cpu_count': os.cpu_count(), 'records': len(examples),
            'batch_size': args.batch_size, 'image_size': args.image_size, 'rows': []}
  print(f"{report['device']}, torch {torch.__version__}, {os.cpu_count()} CPUs; "
        f'{len(examples)} {args.split} records; batch {args.batch_size} x {args.image_size} px',
        flush=True)

  def row(name, result):
    result['row'] = name
    report['rows'].append(result)
    print(f"{name:<34} {result['images_per_s']:9.0f} images/s", flush=True)

  row('CPU decode, 1 process, no GPU', cpu_decode_rate(examples, args.image_size))
  step = Step(device)
  common = (args.warmup, args.steps, args.batch_size, device)
  row('synthetic', timed(step, synthetic_batches(args.batch_size, args.image_size, device),
                         *common))
  if device.type == 'cuda':
    row('records, GPU decode', timed(
        step, gpu_decode_batches(examples, args.batch_size, args.image_size, device), *common))
  for workers in [int(w) for w in args.workers.split(',')]:
    row(f'records, CPU decode, {workers} workers', timed(
        step, loader_batches(examples, args.batch_size, args.image_size, workers, device),
        *common))
  # Again at the end: the drift of the GPU's own rate over the run (clocks, heat).
  row('synthetic, again', timed(
      step, synthetic_batches(args.batch_size, args.image_size, device), *common))
  synthetic = report['rows'][1]['images_per_s']
  for result in report['rows'][2:]:
    result['of_synthetic'] = result['images_per_s'] / synthetic
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(report, indent=2) + '\n')


if __name__ == '__main__':
  main()
