"""The dataset's normalisation, from the transform the Beam job's statistics step wrote.

With ``--stats`` (the default) the job's tensorflow-transform analysis of the training split
writes ``OUT/transform_fn/``, a TensorFlow SavedModel, and the same numbers into
``manifest.json``'s ``statistics``. Everything here loads that SavedModel with TensorFlow alone
(``tf.saved_model.load``: no Beam, no tensorflow-transform needed)::

    OUT/transform_fn/      ->  preprocessing_layer(OUT)   encoded images -> normalised model input
                           ->  normalization(OUT)         (mean, std), per channel, 0-255 scale
                               load(OUT, ..., normalize=True) applies them after its own crop
    manifest.json          ->  class_weights(OUT)         {class id: weight} for model.fit

Normalisation is ``(pixel - mean) / std`` per channel, with ``pixel`` on the 0-255 scale (the
images :func:`imagerecords.load` yields without ``normalize``, times 255) and ``mean``/``std``
the exact population mean and standard deviation of every stored pixel of the training split.
"""

import functools
from typing import Dict, Tuple

import tensorflow as tf

from imagerecords import contract
from imagerecords import metadata


class MissingTransformError(FileNotFoundError):
  """The output directory has no ``transform_fn/``: it was written with ``--stats=false``
  (or by a version without statistics); re-run the job with ``--stats=true``."""


def transform_dir(data_dir: str) -> str:
  """The path of ``data_dir``'s ``transform_fn/`` SavedModel.

  Raises:
    IncompleteDatasetError: ``data_dir`` has no ``_SUCCESS`` marker.
    MissingTransformError: there is no ``transform_fn/`` (the message names the directory), or
      its training split was empty.
  """
  statistics = metadata.read_manifest(data_dir).get(contract.MANIFEST_STATISTICS)
  path = tf.io.gfile.join(data_dir, contract.TRANSFORM_FN_DIR)
  if not statistics or not tf.io.gfile.exists(tf.io.gfile.join(path, 'saved_model.pb')):
    raise MissingTransformError(
        f'{path!r} does not exist: {data_dir!r} was converted with --stats=false (or by an '
        'imagerecords version without statistics), so it has no normalisation; convert it '
        'again with --stats=true, or read it without normalize=True.')
  if statistics.get(contract.STATS_PIXEL_MEAN) is None:
    raise MissingTransformError(
        f'{data_dir!r}: the training split {statistics.get(contract.STATS_SPLIT)!r} has no '
        f'example, so {path!r} holds no usable statistics; nothing to normalise with.')
  return path


@functools.lru_cache(maxsize=8)
def _load(path: str):
  """The loaded transform SavedModel (cached per path: loading takes a second or so)."""
  return tf.saved_model.load(path)


def _apply(transform, encoded: tf.Tensor) -> Dict[str, tf.Tensor]:
  """Runs the loaded transform on ``encoded`` (tf.string ``[B]``); returns its outputs.

  The SavedModel's signature also lists the job's analysis inputs (per-image pixel sums, see
  the job's ``transforms/statistics_tft.py``), which no output depends on: they are fed zeros
  of their shapes. A transform without them (older outputs) gets the image alone.
  """
  function = transform.transform_fn
  (signature,), _ = function.structured_input_signature
  batch = tf.shape(encoded)[:1]
  features = {name: tf.zeros(tf.concat([batch, spec.shape[1:]], 0), spec.dtype)
              for name, spec in signature.items() if name != contract.TRANSFORM_INPUT}
  features[contract.TRANSFORM_INPUT] = encoded
  return function(features)


def _channels(data_dir: str) -> int:
  image = metadata.read_manifest(data_dir).get(contract.MANIFEST_IMAGE) or {}
  return int(image.get('channels', 3))


def normalization(data_dir: str) -> Tuple[tf.Tensor, tf.Tensor]:
  """(mean, std): float32 ``[C]`` per-channel pixel mean and standard deviation, 0-255 scale.

  Read from the transform itself (its ``pixel_mean`` and ``pixel_std`` outputs, for a 1-pixel
  probe image), so they are the numbers :func:`preprocessing_layer` normalises with.

  Raises:
    IncompleteDatasetError: ``data_dir`` has no ``_SUCCESS`` marker.
    MissingTransformError: ``data_dir`` was converted with ``--stats=false``.
  """
  probe = tf.io.encode_png(tf.zeros([1, 1, _channels(data_dir)], tf.uint8))
  outputs = _apply(_load(transform_dir(data_dir)), tf.reshape(probe, [1]))
  return outputs[contract.TRANSFORM_PIXEL_MEAN][0], outputs[contract.TRANSFORM_PIXEL_STD][0]


def normalize_images(images: tf.Tensor, mean: tf.Tensor, std: tf.Tensor) -> tf.Tensor:
  """``(images * 255 - mean) / std``, float32: images with values in [0, 1], ``[..., C]``."""
  return (tf.cast(images, tf.float32) * 255. - mean) / std


class PreprocessingLayer(tf.keras.layers.Layer):
  """Keras layer: encoded images (tf.string ``[B]``, JPEG/PNG bytes) -> float32 ``[B, S, S, C]``.

  Runs the job's saved transform: decode, crop the central square, resize to ``S`` (the run's
  ``--image_size``) exactly as :func:`imagerecords.load` does in evaluation, then normalise
  with the training split's per-channel mean and standard deviation. Built by
  :func:`preprocessing_layer`.
  """

  def __init__(self, data_dir: str, **kwargs):
    kwargs['trainable'] = False  # nothing to train: the statistics are constants
    super().__init__(**kwargs)
    self._data_dir = data_dir
    self._transform = _load(transform_dir(data_dir))
    manifest = metadata.read_manifest(data_dir)
    image = manifest.get(contract.MANIFEST_IMAGE) or {}
    self.image_size = int(image['image_size'])
    self.channels = int(image.get('channels', 3))

  def call(self, encoded):
    encoded = tf.reshape(tf.convert_to_tensor(encoded, tf.string), [-1])
    return _apply(self._transform, encoded)[contract.TRANSFORM_IMAGE]

  def compute_output_shape(self, input_shape):
    return (input_shape[0], self.image_size, self.image_size, self.channels)

  def get_config(self):
    return {**super().get_config(), 'data_dir': self._data_dir}


def preprocessing_layer(data_dir: str) -> PreprocessingLayer:
  """A Keras layer that turns encoded images into normalised model input, as in training.

  Input: tf.string ``[B]`` (or ``[B, 1]``), each a JPEG or PNG image as a serving request
  carries it. Output: float32 ``[B, S, S, C]``, ``S`` the run's ``--image_size``: the same
  numbers as ``imagerecords.load(data_dir, split, ..., image_size=S, normalize=True)`` yields
  for the same images in evaluation (``training=False``)::

      encoded = tf.keras.Input(shape=(), dtype=tf.string)
      logits = classifier(imagerecords.preprocessing_layer(data_dir)(encoded))
      serving_model = tf.keras.Model(encoded, logits)

  Raises:
    IncompleteDatasetError: ``data_dir`` has no ``_SUCCESS`` marker.
    MissingTransformError: ``data_dir`` was converted with ``--stats=false``.
  """
  return PreprocessingLayer(data_dir)


def class_weights(data_dir: str) -> Dict[int, float]:
  """``{class id: weight}`` for ``model.fit(class_weight=...)``, from the training split's
  class frequencies in the manifest's ``statistics``.

  The weights follow scikit-learn's ``class_weight='balanced'`` convention
  (``sklearn.utils.class_weight.compute_class_weight``): ``n_samples / (n_classes * count)``,
  over the classes that have training examples; a class without any is left out (no training
  label can take it). Balanced classes all weigh 1.0; a class half as frequent weighs twice as
  much as one twice as frequent.

  Raises:
    IncompleteDatasetError: ``data_dir`` has no ``_SUCCESS`` marker.
    ValueError: the manifest has no statistics (``--stats=false``) or the dataset is unlabeled.
  """
  manifest = metadata.read_manifest(data_dir)
  statistics = manifest.get(contract.MANIFEST_STATISTICS)
  if not statistics:
    raise ValueError(f'{data_dir!r} has no statistics in its manifest: it was converted with '
                     '--stats=false; convert it again with --stats=true.')
  frequencies = statistics.get(contract.STATS_CLASS_FREQUENCIES) or {}
  names = manifest[contract.MANIFEST_CLASSES]
  counts = {class_id: int(frequencies.get(name, 0)) for class_id, name in enumerate(names)}
  counts = {class_id: count for class_id, count in counts.items() if count > 0}
  if not counts:
    raise ValueError(f'{data_dir!r} is unlabeled or its training split '
                     f'{statistics.get(contract.STATS_SPLIT)!r} has no labeled example: '
                     'no class weights.')
  total = sum(counts.values())
  return {class_id: total / (len(counts) * count) for class_id, count in counts.items()}
