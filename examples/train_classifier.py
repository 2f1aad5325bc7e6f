"""Trains a small convolutional network from scratch on an imagerecords output directory.

The proof that converted data trains: no downloaded weights, only the records and the reader.
On hymenoptera (ants vs bees, 245 training and 153 validation photos)::

    .venv/bin/python -m pipeline.run --input_dir=../shared/data/hymenoptera \\
        --output_dir=out/hymenoptera --image_size=160 --num_shards=train=4,val=2
    .venv/bin/python examples/train_classifier.py --data_dir=out/hymenoptera

Input: ``imagerecords.load`` in training mode (shuffled every epoch, Inception-style random crop,
random flip) for the training split, evaluation mode (central square) for the validation split,
both at ``--image_size`` px. Model: four blocks of 3x3 convolution, batch normalisation, ReLU
and 2x2 max pooling (32, 64, 128, 256 filters), global average pooling, dropout, one dense
layer of logits; Adam with a cosine-decayed learning rate. ``--seed`` fixes the weights'
initialisation and the augmentation (the order in which parallel map results arrive may still
vary a little between runs).

Prints one line per epoch with the training loss and accuracy and the validation loss and
accuracy, then the final validation accuracy, the best one and the wall time.
"""

import argparse
import sys
import time

import tensorflow as tf

import imagerecords
from imagerecords import metadata

_VALIDATION_SPLITS = ('validation', 'val', 'test')


def build_model(image_size: int, num_classes: int, dropout: float = 0.3) -> tf.keras.Model:
  """A small CNN: float32 ``[B, S, S, 3]`` images in [0, 1] -> float32 ``[B, num_classes]``
  logits."""
  inputs = tf.keras.Input((image_size, image_size, 3))
  x = tf.keras.layers.Rescaling(2., offset=-1.)(inputs)  # [0, 1] -> [-1, 1]
  for filters in (32, 64, 128, 256):
    x = tf.keras.layers.Conv2D(filters, 3, padding='same', use_bias=False)(x)
    # momentum 0.9, not Keras' 0.99: a few hundred steps in all, so the moving statistics that
    # validation uses must follow the weights quickly
    x = tf.keras.layers.BatchNormalization(momentum=0.9)(x)
    x = tf.keras.layers.ReLU()(x)
    x = tf.keras.layers.MaxPooling2D()(x)
  x = tf.keras.layers.GlobalAveragePooling2D()(x)
  x = tf.keras.layers.Dropout(dropout)(x)
  outputs = tf.keras.layers.Dense(num_classes)(x)
  return tf.keras.Model(inputs, outputs, name='small_cnn')


class EpochLine(tf.keras.callbacks.Callback):
  """Prints one line per epoch: losses, accuracies and seconds taken."""

  def __init__(self, epochs: int):
    super().__init__()
    self._epochs = epochs
    self._start = 0.

  def on_epoch_begin(self, epoch, logs=None):
    self._start = time.time()

  def on_epoch_end(self, epoch, logs=None):
    logs = logs or {}
    print(f'epoch {epoch + 1:3d}/{self._epochs}: loss {logs["loss"]:.3f} '
          f'accuracy {logs["accuracy"]:.3f}  val_loss {logs["val_loss"]:.3f} '
          f'val_accuracy {logs["val_accuracy"]:.3f}  ({time.time() - self._start:.1f} s)',
          flush=True)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n', 1)[0])
  parser.add_argument('--data_dir', required=True, help='an imagerecords output directory')
  parser.add_argument('--train_split', default='train', help='split to train on')
  parser.add_argument('--val_split', default=None,
                      help='split to validate on (default: the first of validation, val, test '
                           'in the manifest)')
  parser.add_argument('--image_size', type=int, default=96, help='side of the model input, px')
  parser.add_argument('--batch_size', type=int, default=16, help='examples per batch')
  parser.add_argument('--epochs', type=int, default=30, help='passes over the training split')
  parser.add_argument('--learning_rate', type=float, default=2e-3, help='initial Adam rate')
  parser.add_argument('--seed', type=int, default=0, help='seed of weights and augmentation')
  args = parser.parse_args(argv)

  splits = metadata.split_names(args.data_dir)
  val_split = args.val_split or next((s for s in _VALIDATION_SPLITS if s in splits), None)
  if val_split is None:
    parser.error(f'no validation split among {splits}; pass --val_split')
  class_names = imagerecords.class_names(args.data_dir)
  num_train = imagerecords.num_examples(args.data_dir, args.train_split)
  num_val = imagerecords.num_examples(args.data_dir, val_split)
  print(f'{args.data_dir}: {len(class_names)} classes {class_names}, {num_train} train '
        f'({args.train_split}), {num_val} validation ({val_split}); chance is '
        f'{1 / len(class_names):.3f}', flush=True)

  tf.keras.utils.set_random_seed(args.seed)
  train = imagerecords.load(args.data_dir, args.train_split, args.batch_size, args.image_size,
                            training=True, seed=args.seed)
  val = imagerecords.load(args.data_dir, val_split, args.batch_size, args.image_size)
  model = build_model(args.image_size, len(class_names))
  steps = args.epochs * max(len(train), 1)
  schedule = tf.keras.optimizers.schedules.CosineDecay(args.learning_rate, steps)
  model.compile(optimizer=tf.keras.optimizers.Adam(schedule),
                loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=['accuracy'])

  start = time.time()
  history = model.fit(train, validation_data=val, epochs=args.epochs, verbose=0,
                      shuffle=False,  # the reader shuffles files and records every epoch
                      callbacks=[EpochLine(args.epochs)])
  wall = time.time() - start
  _, final = model.evaluate(val, verbose=0)
  accuracies = history.history['val_accuracy']
  best = max(range(len(accuracies)), key=accuracies.__getitem__)
  epochs = f'{args.epochs} epoch{"s" * (args.epochs != 1)}'
  print(f'final val_accuracy {final:.3f} after {epochs} (best {accuracies[best]:.3f} '
        f'at epoch {best + 1}); {wall:.0f} s of training', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
