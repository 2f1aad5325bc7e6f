"""The dataset's normalisation, from the statistics the Beam job wrote.

With ``--stats`` (the default) the job adds up the exact per-channel pixel mean and standard
deviation of its training split and writes them into ``manifest.json``'s ``statistics``; with
``--stats=tft`` a tensorflow-transform analysis also writes ``OUT/transform_fn/``, a TensorFlow
SavedModel holding the same numbers. Everything here works from either, with TensorFlow alone
(``tf.saved_model.load``: no Beam, no tensorflow-transform needed)::

    manifest.json / OUT/transform_fn/ -> preprocessing_layer(OUT)  encoded images -> model input
                                      -> normalization(OUT)        (mean, std), per channel
                                         load(OUT, ..., normalize=True) applies them after its crop
    manifest.json                     -> class_weights(OUT)        {class id: weight} for model.fit

Normalisation is ``(pixel - mean) / std`` per channel, with ``pixel`` on the 0-255 scale (the
images :func:`imagerecords.load` yields without ``normalize``, times 255) and ``mean``/``std``
the exact population mean and standard deviation of every stored pixel of the training split.
Where ``transform_fn/`` exists its numbers are used (they are the manifest's, computed in
float64 and rounded to float32 instead of to 6 decimals); the decode, crop and resize are the
same code either way (:func:`normalized_batch`).
"""

import functools
from typing import Dict, Tuple

import tensorflow as tf

from imagerecords import contract
from imagerecords import manifest_schema
from imagerecords import metadata
from imagerecords.preprocessing import preprocess_image


class MissingTransformError(FileNotFoundError):
  """The output directory has no pixel statistics: it was written with ``--stats=false`` (or
  by a version without statistics), or its training split was empty; re-run the job with
  ``--stats=true``. (For a ``transform_fn/``, which only ``--stats=tft`` writes, see
  :func:`transform_dir`.)"""


def _statistics(data_dir: str) -> manifest_schema.StatisticsSection:
  """The manifest's ``statistics``, with a pixel mean (MissingTransformError otherwise)."""
  statistics = metadata.read_manifest(data_dir).statistics
  if statistics is None:
    raise MissingTransformError(
        f'{data_dir!r} has no pixel statistics (no "statistics" in its manifest.json, no '
        f'{contract.TRANSFORM_FN_DIR!r}): it was converted with --stats=false (or by an '
        'imagerecords version without statistics), so it has no normalisation; convert it '
        'again with --stats=true, or read it without normalize=True.')
  if statistics.pixel_mean is None or statistics.pixel_std is None:
    raise MissingTransformError(
        f'{data_dir!r}: the training split {statistics.split!r} has no '
        'example, so there are no usable statistics; nothing to normalise with.')
  return statistics


def _saved_transform(data_dir: str):
  """The path of ``data_dir``'s ``transform_fn/`` SavedModel (``--stats=tft``), or None."""
  path = tf.io.gfile.join(data_dir, contract.TRANSFORM_FN_DIR)
  return path if tf.io.gfile.exists(tf.io.gfile.join(path, 'saved_model.pb')) else None


def transform_dir(data_dir: str) -> str:
  """The path of ``data_dir``'s ``transform_fn/`` SavedModel, written with ``--stats=tft``.

  Raises:
    IncompleteDatasetError: ``data_dir`` has no ``_SUCCESS`` marker.
    MissingTransformError: there are no statistics, or its training split was empty.
    FileNotFoundError: there are statistics but no ``transform_fn/`` (converted with
      ``--stats``, not ``--stats=tft``); the message names the directory.
  """
  _statistics(data_dir)
  path = _saved_transform(data_dir)
  if path is None:
    raise FileNotFoundError(
        f'{tf.io.gfile.join(data_dir, contract.TRANSFORM_FN_DIR)!r} does not exist: '
        f'{data_dir!r} was converted with --stats, which writes the statistics into '
        'manifest.json only; convert it with --stats=tft for a tensorflow-transform '
        'transform_fn/ (preprocessing_layer and normalize=True need neither).')
  return path


@functools.lru_cache(maxsize=8)
def _load(path: str):
  """The loaded transform SavedModel (cached per path: loading takes a second or so)."""
  return tf.saved_model.load(path)


def _apply(transform, encoded: tf.Tensor) -> Dict[str, tf.Tensor]:
  """Runs the loaded transform on ``encoded`` (tf.string ``[B]``); returns its outputs.

  The SavedModel's signature also lists the job's analysis inputs (per-image pixel sums, see
  the job's ``transforms/analysis/statistics_tft.py``), which no output depends on: they are fed
  zeros of their shapes. A transform without them (older outputs) gets the image alone.
  """
  function = transform.transform_fn
  (signature,), _ = function.structured_input_signature
  batch = tf.shape(encoded)[:1]
  features = {name: tf.zeros(tf.concat([batch, spec.shape[1:]], 0), spec.dtype)
              for name, spec in signature.items() if name != contract.TRANSFORM_INPUT}
  features[contract.TRANSFORM_INPUT] = encoded
  return function(features)


def _channels(data_dir: str) -> int:
  return metadata.read_manifest(data_dir).image.channels


def normalization(data_dir: str) -> Tuple[tf.Tensor, tf.Tensor]:
  """(mean, std): float32 ``[C]`` per-channel pixel mean and standard deviation, 0-255 scale.

  From ``transform_fn/`` where ``--stats=tft`` wrote one (:func:`saved_statistics`), else
  from the manifest's ``statistics``: the numbers :func:`preprocessing_layer` normalises with.

  Raises:
    IncompleteDatasetError: ``data_dir`` has no ``_SUCCESS`` marker.
    MissingTransformError: ``data_dir`` was converted with ``--stats=false``, or its training
      split was empty.
  """
  statistics = _statistics(data_dir)
  path = _saved_transform(data_dir)
  if path is None:
    return (tf.constant(statistics.pixel_mean, tf.float32),
            tf.constant(statistics.pixel_std, tf.float32))
  mean, std, _ = saved_statistics(_load(path), _channels(data_dir))
  return mean, std


def saved_statistics(transform, channels: int = 3) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """(mean, std, num_pixels) that a loaded ``transform_fn/`` SavedModel
  (``tf.saved_model.load``) normalises with: float32 ``[C]``, float32 ``[C]`` (0-255 scale) and
  int64 ``[]``, the number of pixels they cover; NaN, NaN and 0 for an empty training split.

  tensorflow-transform bakes its analyzers' results into the transform as constants and offers
  no reader for them, so they are the transform's ``pixel_mean``, ``pixel_std`` and
  ``num_pixels`` outputs for one probe: a black pixel, PNG-encoded with ``channels`` channels
  (the transform's ``--channels``). The job reads its manifest's numbers the same way
  (``transforms/analysis/statistics_tft.py``), so both are the transform's own.
  """
  probe = tf.io.encode_png(tf.zeros([1, 1, channels], tf.uint8))
  outputs = _apply(transform, tf.reshape(probe, [1]))
  return (outputs[contract.TRANSFORM_PIXEL_MEAN][0], outputs[contract.TRANSFORM_PIXEL_STD][0],
          outputs[contract.TRANSFORM_NUM_PIXELS][0])


def normalize_images(images: tf.Tensor, mean: tf.Tensor, std: tf.Tensor) -> tf.Tensor:
  """``(images * 255 - mean) / std``, float32: images with values in [0, 1], ``[..., C]``."""
  return (tf.cast(images, tf.float32) * 255. - mean) / std


def normalized_batch(encoded: tf.Tensor, image_size: int, channels: int, mean: tf.Tensor,
                     std: tf.Tensor) -> tf.Tensor:
  """Encoded images (tf.string ``[B]``) -> float32 ``[B, S, S, C]`` model input: each decoded,
  centre-cropped and resized to ``S = image_size`` as :func:`imagerecords.load` does in
  evaluation (``preprocess_image(training=False)``), then :func:`normalize_images` with
  ``mean``/``std`` (float32 ``[C]``, 0-255 scale). The one implementation behind
  :func:`preprocessing_layer` and the job's ``--stats=tft`` transform."""
  images = tf.map_fn(
      lambda e: preprocess_image(e, image_size, training=False, channels=channels), encoded,
      fn_output_signature=tf.TensorSpec([image_size, image_size, channels], tf.float32))
  return normalize_images(images, mean, std)


class PreprocessingLayer(tf.keras.layers.Layer):
  """Keras layer: encoded images (tf.string ``[B]``, JPEG/PNG bytes) -> float32 ``[B, S, S, C]``.

  Decodes, crops the central square and resizes to ``S`` (the run's ``--image_size``) exactly
  as :func:`imagerecords.load` does in evaluation, then normalises with the training split's
  per-channel mean and standard deviation: the job's saved transform where ``--stats=tft``
  wrote one, else :func:`normalized_batch` with the manifest's numbers (the same code).
  Built by :func:`preprocessing_layer`.
  """

  def __init__(self, data_dir: str, **kwargs):
    kwargs['trainable'] = False  # nothing to train: the statistics are constants
    super().__init__(**kwargs)
    self._data_dir = data_dir
    statistics = _statistics(data_dir)
    path = _saved_transform(data_dir)
    self._transform = _load(path) if path else None
    self._mean = tf.constant(statistics.pixel_mean, tf.float32)
    self._std = tf.constant(statistics.pixel_std, tf.float32)
    image = metadata.read_manifest(data_dir).image
    self.image_size = image.image_size
    self.channels = image.channels

  def call(self, encoded):
    encoded = tf.reshape(tf.convert_to_tensor(encoded, tf.string), [-1])
    if self._transform is None:
      return normalized_batch(encoded, self.image_size, self.channels, self._mean, self._std)
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
  statistics = manifest.statistics
  if statistics is None:
    raise ValueError(f'{data_dir!r} has no statistics in its manifest: it was converted with '
                     '--stats=false; convert it again with --stats=true.')
  frequencies = statistics.class_frequencies
  names = manifest.classes
  counts = {class_id: frequencies.get(name, 0) for class_id, name in enumerate(names)}
  counts = {class_id: count for class_id, count in counts.items() if count > 0}
  if not counts:
    raise ValueError(f'{data_dir!r} is unlabeled or its training split '
                     f'{statistics.split!r} has no labeled example: '
                     'no class weights.')
  total = sum(counts.values())
  return {class_id: total / (len(counts) * count) for class_id, count in counts.items()}
