"""Trains a linear classifier on the embeddings stored in an imagerecords output directory.

The workflow of precomputed CNN features: the job stores each image's embedding
(``--embedding_model``), and a small head trains in seconds without touching a pixel. On
hymenoptera (ants vs bees, 245 training and 153 validation photos)::

    .venv/bin/python -m pipeline.run --input_dir=../shared/data/hymenoptera \\
        --output_dir=out/hymenoptera_b0 --image_size=224 --resize_mode=center_crop \\
        --embedding_model=keras.applications:EfficientNetB0 [--embedding_weights=B0.weights.h5]
    .venv/bin/python examples/train_linear_head.py --data_dir=out/hymenoptera_b0

Input: ``imagerecords.load_embeddings`` (float32 ``[B, D]`` pooled embeddings and int32 labels;
no image is decoded), shuffled every epoch for training. Model: a ``Normalization`` layer
adapted to the training embeddings (each feature to mean 0, variance 1), then one dense layer
of logits; Adam. The accuracy says how linearly separable the classes are in the model's
embedding: with ImageNet weights (``keras.applications:EfficientNetB0`` on a machine that can
download them) a linear head on such features is the classic strong baseline of this data set;
with untrained weights (``weights=None``, what the tests and this repository's offline machines
use) the features are random projections and the accuracy stays near chance (docs/embeddings.md
gives the figures measured).

Prints one line per epoch (training loss and accuracy, validation loss and accuracy), then the
final validation accuracy.
"""

import argparse
import sys
import time

import tensorflow as tf

import imagerecords
from imagerecords import metadata

_VALIDATION_SPLITS = ('validation', 'val', 'test')


def build_head(train: tf.data.Dataset, dimensions: int, num_classes: int) -> tf.keras.Model:
  """float32 ``[B, dimensions]`` embeddings -> float32 ``[B, num_classes]`` logits: the
  embeddings standardised with the training split's per-feature mean and variance, then one
  dense layer."""
  normalization = tf.keras.layers.Normalization()
  normalization.adapt(train.map(lambda embeddings, labels: embeddings))
  inputs = tf.keras.Input((dimensions,))
  outputs = tf.keras.layers.Dense(num_classes)(normalization(inputs))
  return tf.keras.Model(inputs, outputs, name='linear_head')


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--data_dir', required=True, help='An output directory of the job, '
                      'converted with --embedding_model (pooled: --embedding_pooling=avg).')
  parser.add_argument('--epochs', type=int, default=30)
  parser.add_argument('--batch_size', type=int, default=32)
  parser.add_argument('--learning_rate', type=float, default=1e-3)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  tf.keras.utils.set_random_seed(args.seed)
  manifest = metadata.read_manifest(args.data_dir)
  section = manifest.embedding
  if section is None or len(section.shape) != 1:
    print(f'{args.data_dir} holds no pooled embeddings: convert with --embedding_model '
          '(and --embedding_pooling=avg)', file=sys.stderr)
    return 2
  splits = sorted(manifest.splits)
  val_split = next((s for s in _VALIDATION_SPLITS if s in splits), None)
  if 'train' not in splits or val_split is None:
    print(f'{args.data_dir}: needs a train split and one of {_VALIDATION_SPLITS}',
          file=sys.stderr)
    return 2
  classes = imagerecords.class_names(args.data_dir)
  train = imagerecords.load_embeddings(args.data_dir, 'train', args.batch_size, training=True,
                                       seed=args.seed, drop_remainder=False)
  val = imagerecords.load_embeddings(args.data_dir, val_split, args.batch_size)
  print(f'{args.data_dir}: {section.model} embeddings of {section.shape[0]} floats, '
        f'{len(classes)} classes, {imagerecords.num_examples(args.data_dir, "train")} train, '
        f'{imagerecords.num_examples(args.data_dir, val_split)} {val_split}; '
        f'chance is {1 / len(classes):.3f}')
  head = build_head(train, section.shape[0], len(classes))
  head.compile(optimizer=tf.keras.optimizers.Adam(args.learning_rate),
               loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
               metrics=['accuracy'])
  start = time.perf_counter()
  history = head.fit(train, validation_data=val, epochs=args.epochs, verbose=0)
  for epoch in range(args.epochs):
    print(f'epoch {epoch + 1:3d}/{args.epochs}: loss {history.history["loss"][epoch]:.3f} '
          f'accuracy {history.history["accuracy"][epoch]:.3f}  val_loss '
          f'{history.history["val_loss"][epoch]:.3f} val_accuracy '
          f'{history.history["val_accuracy"][epoch]:.3f}')
  _, accuracy = head.evaluate(val, verbose=0)
  print(f'final val_accuracy {accuracy:.3f} after {args.epochs} epochs; '
        f'{time.perf_counter() - start:.1f} s of training')
  return 0


if __name__ == '__main__':
  sys.exit(main())
