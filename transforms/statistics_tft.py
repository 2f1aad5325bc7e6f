"""``--stats=tft``: exact pixel statistics of the training split with tensorflow-transform, and
the transform that normalises with them (the default ``--stats`` computes the same numbers with
Beam combiners alone, ``transforms.statistics``, and writes no transform).

A tensorflow-transform (TFT) analysis over every stored image of the training split (not a
sample) computes the per-channel pixel mean and standard deviation of the images *as stored*
(decoded from the records' ``image/encoded`` as TensorFlow decodes them, after the job's
resize, on the 0-255 scale). TFT writes the resulting transform (a TensorFlow SavedModel with
the statistics baked in) into the output directory, and the same numbers go into
``manifest.json``::

    PCollection[ConvertedExample]          the training split's examples carry their stored
                                           image's exact per-channel sums (Python ints, computed
                                           in the conversion step: transforms.pixel_sums)
      | keep the training split            ``train`` if the run has it, else the first split
      | add up the sums                    Beam CombineGlobally (AddPixelSums): the split's
      |                                    totals, a few integers per bundle on the way
      | to a TFT instance                  {'pixel_sums': int64 [C], 'pixel_squares': int64 [C],
      |                                     'num_pixels': int64, 'image/encoded': 1-pixel PNG}
      | analyze (tft_beam.AnalyzeDataset)  tft.sum of each (over the one instance: the totals)
      |   -> transform_fn                  -> OUT/transform_fn/, OUT/transformed_metadata/
      |                                       (tft_beam.WriteTransformFn)
      | transform a probe image            the transform's pixel_mean, pixel_std outputs
      -> one element: the manifest's ``statistics`` (without class frequencies; WriteMetadata
         adds the training split's exact class counts)

Mean and variance come from exact integer sums: ``mean = S / N``, ``std = sqrt(Q / N - mean^2)``
(the population standard deviation, divide by N), with ``S`` and ``Q`` the int64 sums of the
pixel values and of their squares over all ``N`` pixels of the split, exact up to 1.4e14 pixels.
TensorFlow never sees the images here: their pixels were decoded once, by the conversion step,
from the bytes it had just encoded, and Beam adds up their sums. (Decoding every image again
inside TFT's analysis graph cost about 1 CPU ms per image and grew each worker's memory with
the images analysed; feeding TFT one instance per image still cost its per-instance graph run;
see docs/benchmarks.md.) The one instance's image is a placeholder: TensorFlow's function runs
the whole graph, image ops included, even where only the analyzers' inputs are needed.

The transform (``preprocessing_fn``) maps a batch of encoded images (tf.string ``[B]``) to
model input: decode, crop the central square and resize to the run's ``--image_size`` ``S``
exactly as :func:`imagerecords.preprocessing.preprocess_image` does in evaluation, convert to float on
the 0-255 scale, subtract the mean and divide by the standard deviation. Its outputs:

* ``image``: float32 ``[B, S, S, C]``, normalised (``C``: the run's ``--channels``);
* ``pixel_mean``, ``pixel_std``: float32 ``[B, C]``, the statistics (the same row for every
  example), so a reader that crops and resizes differently (training augmentation) applies the
  same normalisation; the reader loads the SavedModel with TensorFlow alone;
* ``num_pixels``: int64 ``[B]``, the number of pixels the statistics cover.

Its input signature lists the analysis inputs (``pixel_sums``, ``pixel_squares``,
``num_pixels``) beside ``image/encoded``; no output depends on them (their totals are constants
of the saved graph). ``tft.TFTransformOutput(OUT).transform_raw_features`` needs
``image/encoded`` alone; calling the SavedModel's ``transform_fn`` directly, pass zeros for them
(``imagerecords.transform`` does).

The manifest's numbers are read back from the transform itself (a 1-pixel probe image through
``tft_beam.TransformDataset``), so they are the ones the transform normalises with.
"""

import logging
from typing import List, Optional

import apache_beam as beam
import cv2
import numpy as np
from apache_beam.io.filesystems import FileSystems
from imagerecords import contract

from transforms.folders import delete_tree
from transforms.pixel_sums import PixelSums
from transforms.statistics import AddPixelSums, training_split  # pylint: disable=unused-import

_LOG = logging.getLogger('imagerecords')

STAGING_DIR = '.staging-tft'
"""The output directory's subfolder for TFT's temporary files; deleted when the analysis ends."""

PIXEL_SUMS, PIXEL_SQUARES, NUM_PIXELS = 'pixel_sums', 'pixel_squares', 'num_pixels'
"""The analysis inputs: an image's per-channel sums of pixel values and of their squares, and
its pixel count (``transforms.pixel_sums.PixelSums``)."""


def make_preprocessing_fn(image_size: int, channels: int = 3):
  """The TFT ``preprocessing_fn`` of a run's ``--image_size`` and ``--channels`` (module doc)."""

  def preprocessing_fn(inputs):
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf
    import tensorflow_transform as tft
    from imagerecords.transform import normalized_batch

    encoded = inputs[contract.TRANSFORM_INPUT]  # tf.string [B]
    # Analyzers: exact totals over the whole split of the per-image sums, computed by Beam.
    total = tf.cast(tft.sum(inputs[PIXEL_SUMS], reduce_instance_dims=False), tf.float64)  # [C]
    total_squares = tf.cast(tft.sum(inputs[PIXEL_SQUARES], reduce_instance_dims=False),
                            tf.float64)  # [C]
    pixel_count = tft.sum(inputs[NUM_PIXELS])  # int64 []
    num_pixels = tf.cast(pixel_count, tf.float64)
    mean = total / num_pixels
    std = tf.sqrt(tf.maximum(total_squares / num_pixels - mean * mean, 0.))
    mean, std = tf.cast(mean, tf.float32), tf.cast(std, tf.float32)

    batch = tf.shape(encoded)[:1]
    return {
        # the reader's own preprocessing_layer code, so both agree to the bit
        contract.TRANSFORM_IMAGE: normalized_batch(encoded, image_size, channels, mean, std),
        contract.TRANSFORM_PIXEL_MEAN: tf.tile(mean[tf.newaxis], tf.concat([batch, [1]], 0)),
        contract.TRANSFORM_PIXEL_STD: tf.tile(std[tf.newaxis], tf.concat([batch, [1]], 0)),
        'num_pixels': tf.fill(batch, pixel_count),  # int64 [B], for the manifest
    }

  return preprocessing_fn


def _raw_metadata(channels: int):
  """TFT's DatasetMetadata of the instances: the encoded image (tf.string) and the analysis
  inputs (int64 ``[C]``, ``[C]``, ``[]``)."""
  # pylint: disable=import-outside-toplevel
  import tensorflow as tf
  from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils
  return dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec({
      contract.TRANSFORM_INPUT: tf.io.FixedLenFeature([], tf.string),
      PIXEL_SUMS: tf.io.FixedLenFeature([channels], tf.int64),
      PIXEL_SQUARES: tf.io.FixedLenFeature([channels], tf.int64),
      NUM_PIXELS: tf.io.FixedLenFeature([], tf.int64),
  }))


def _instance(sums: PixelSums, encoded: bytes) -> dict:
  """A TFT instance: the one analysed (the split's totals, with a 1-pixel PNG as the image,
  which the analysis does not use but TensorFlow's function decodes anyway), or the probe
  (zero sums, the same pixel)."""
  return {contract.TRANSFORM_INPUT: encoded,
          PIXEL_SUMS: np.array(sums.sums, np.int64),
          PIXEL_SQUARES: np.array(sums.squares, np.int64),
          NUM_PIXELS: np.int64(sums.num_pixels)}


class _OneInstanceAdvice(logging.Filter):
  """Drops tensorflow-transform's two warnings that instance dicts "will not provide optimal
  performance" (use Arrow RecordBatches, TFXIO): TFT converts them itself, and here they are
  one instance of a few integers analysed and one probe transformed, where its batching has
  nothing to gain. Only these two messages, of TFT's ``absl`` logger; everything else passes."""

  _ADVICE = ('You are passing instance dicts and DatasetMetadata to TFT',
             'You are outputting instance dicts from `TransformDataset`')

  def filter(self, record):
    return not record.getMessage().startswith(self._ADVICE)


def _quiet_instance_dict_advice() -> None:
  """Adds :class:`_OneInstanceAdvice` to the ``absl`` logger, once."""
  absl_logger = logging.getLogger('absl')
  if not any(isinstance(f, _OneInstanceAdvice) for f in absl_logger.filters):
    absl_logger.addFilter(_OneInstanceAdvice())


def _one_pixel_png(channels: int) -> bytes:
  """One black pixel as a PNG of ``channels`` channels."""
  ok, png = cv2.imencode('.png', np.zeros((1, 1, channels), np.uint8))
  if not ok:
    raise RuntimeError('OpenCV could not encode a 1-pixel PNG')
  return png.tobytes()


def _statistics(unused_published, transformed: List[dict], split: str, num_examples: int,
                staging_dir: str) -> dict:
  """The transformed probe instance (none: an empty split) -> the manifest's ``statistics``
  (see contract); ``pixel_mean`` and ``pixel_std`` are None for an empty training split."""
  try:  # TFT's temporary files: the transform is published, they served their purpose
    delete_tree(staging_dir)
  except OSError as error:  # BeamIOError: a file went away meanwhile; the run has succeeded
    _LOG.debug('left %s: %s', staging_dir, error)
  instance = transformed[0] if transformed and num_examples else None  # else 0 / 0
  return {
      contract.STATS_SPLIT: split,
      contract.STATS_NUM_EXAMPLES: num_examples,
      contract.STATS_NUM_PIXELS: int(instance['num_pixels']) if instance else 0,
      contract.STATS_PIXEL_MEAN: instance and [
          round(float(v), 6) for v in instance['pixel_mean']],
      contract.STATS_PIXEL_STD: instance and [round(float(v), 6) for v in instance['pixel_std']],
      contract.STATS_TRANSFORM_FN: contract.TRANSFORM_FN_DIR,
  }


class AnalyzeTrainingSplit(beam.PTransform):
  """PCollection[ConvertedExample] -> a one-element PCollection: the manifest's ``statistics``.

  Writes ``OUT/transform_fn/`` and ``OUT/transformed_metadata/`` (TFT's layout, readable with
  ``tft.TFTransformOutput(OUT)`` or ``tf.saved_model.load(OUT/transform_fn)``) before the element
  is emitted, so a step that takes the element as a side input runs after both are published.
  The element: ``{'split', 'num_examples', 'num_pixels', 'pixel_mean': [3 floats],
  'pixel_std': [3 floats], 'transform_fn': 'transform_fn'}``; 0-255 scale. When the training
  split has no example, ``pixel_mean`` and ``pixel_std`` are None (the transform's are NaN).

  Args:
    output_dir: the run's output directory (TFT's temporary files go to ``STAGING_DIR`` in it).
    split: the training split's name (see :func:`training_split`).
    image_size: the run's ``--image_size``: the side of the transform's ``image`` output.
    channels: the run's ``--channels`` (3: RGB, 1: grayscale): of the images and statistics.
  """

  def __init__(self, output_dir: str, split: str, image_size: int, channels: int = 3):
    super().__init__()
    self._output_dir = output_dir
    self._split = split
    self._image_size = image_size
    self._channels = channels

  def expand(self, examples):
    # pylint: disable=import-outside-toplevel
    import tensorflow_transform.beam as tft_beam

    _quiet_instance_dict_advice()
    split = self._split
    staging_dir = FileSystems.join(self._output_dir, STAGING_DIR)
    placeholder = _one_pixel_png(self._channels)
    training = examples | 'keep the training split' >> beam.Filter(lambda e: e.split == split)
    # the split's sums, added up by Beam (a lifted combiner: a few integers per bundle), as the
    # one instance TFT analyses
    instances = (
        training
        | 'pixel sums' >> beam.Map(lambda example: example.pixel_sums)
        | 'add up the sums' >> beam.CombineGlobally(AddPixelSums(self._channels))
        | 'to a TFT instance' >> beam.Map(_instance, placeholder))
    metadata = _raw_metadata(self._channels)
    with tft_beam.Context(temp_dir=staging_dir, force_tf_compat_v1=False):
      transform_fn = ((instances, metadata)
                      | 'analyze pixels' >> tft_beam.AnalyzeDataset(
                          make_preprocessing_fn(self._image_size, self._channels)))
      published = transform_fn | 'write transform_fn' >> tft_beam.WriteTransformFn(
          self._output_dir)
      # one black pixel through the transform: its pixel_mean / pixel_std are the numbers
      probe = instances.pipeline | 'probe image' >> beam.Create([_instance(
          AddPixelSums(self._channels).create_accumulator(), placeholder)])
      transformed, _ = (((probe, metadata), transform_fn)
                        | 'transform the probe' >> tft_beam.TransformDataset())
    num_examples = training | 'count' >> beam.combiners.Count.Globally()
    return published | 'statistics' >> beam.Map(
        _statistics, beam.pvalue.AsList(transformed), split=split,
        num_examples=beam.pvalue.AsSingleton(num_examples), staging_dir=staging_dir)
