"""Exact pixel statistics of the training split with tensorflow-transform, and the transform
that normalises with them.

A tensorflow-transform (TFT) analysis over every stored image of the training split (not a
sample) computes the per-channel pixel mean and standard deviation of the images *as stored*
(decoded from the records' ``image/encoded``, after the job's resize, on the 0-255 scale). TFT
writes the resulting transform (a TensorFlow SavedModel with the statistics baked in) into the
output directory, and the same numbers go into ``manifest.json``::

    PCollection[ConvertedExample]
      | keep the training split            ``train`` if the run has it, else the first split
      | to TFT instances                   {'image/encoded': bytes}
      | analyze (tft_beam.AnalyzeDataset)  per image, in the TF graph: decode, sum the pixels and
      |                                    their squares per channel (int64, exact) and count
      |                                    them; tft.sum over the split
      |   -> transform_fn                  -> OUT/transform_fn/, OUT/transformed_metadata/
      |                                       (tft_beam.WriteTransformFn)
      | transform one image                the transform's pixel_mean, pixel_std outputs
      -> one element: the manifest's ``statistics`` (without class frequencies; WriteMetadata
         adds the training split's exact class counts)

Mean and variance come from exact integer sums: ``mean = S / N``, ``std = sqrt(Q / N - mean^2)``
(the population standard deviation, divide by N), with ``S`` and ``Q`` the int64 sums of the
pixel values and of their squares over all ``N`` pixels of the split, exact up to 1.4e14 pixels.
Each image is decoded and reduced to those sums inside a ``tf.map_fn`` (a few images at a time,
in batches of at most ``_DESIRED_BATCH_SIZE`` encoded images): the analysis never gathers pixels.

The transform (``preprocessing_fn``) maps a batch of encoded images (tf.string ``[B]``) to
model input: decode, crop the central square and resize to the run's ``--image_size`` ``S``
exactly as :func:`imagerecords.dataset.preprocess_image` does in evaluation, convert to float on
the 0-255 scale, subtract the mean and divide by the standard deviation. Its outputs:

* ``image``: float32 ``[B, S, S, C]``, normalised (``C``: the run's ``--channels``);
* ``pixel_mean``, ``pixel_std``: float32 ``[B, C]``, the statistics (the same row for every
  example), so a reader that crops and resizes differently (training augmentation) applies the
  same normalisation; the reader loads the SavedModel with TensorFlow alone;
* ``num_pixels``: int64 ``[B]``, the number of pixels the statistics cover.

The manifest's numbers are read back from the transform itself (one training image through
``tft_beam.TransformDataset``), so they are the ones the transform normalises with.
"""

import logging
from typing import List, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from imagerecords import contract

_LOG = logging.getLogger('imagerecords')

STAGING_DIR = '.staging-tft'
"""The output directory's subfolder for TFT's temporary files; deleted when the analysis ends."""

# A batch of images decoded at once inside the analysis graph: bounds TFT's memory (its default
# batches reach 1,000 elements; each image is decoded and reduced alone either way).
_DESIRED_BATCH_SIZE = 100


def training_split(splits: List[str]) -> Optional[str]:
  """The split the statistics describe: ``train`` if present, else the first split by name.

  None when there is no split at all.
  """
  if 'train' in splits:
    return 'train'
  return sorted(splits)[0] if splits else None


def _pixel_sums(encoded, channels: int):
  """One encoded image -> (int64 [C] sum of pixel values per channel, int64 [C] sum of their
  squares, int64 [] number of pixels), over the image decoded as stored (``C = channels``: 3
  RGB or 1 grayscale, 0-255)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  # JPEG: libjpeg's accurate integer IDCT, the pixels Pillow, OpenCV and simplejpeg decode.
  # TensorFlow's default decode differs from them by about one level in red and blue.
  image = tf.cond(
      tf.io.is_jpeg(encoded),
      lambda: tf.io.decode_jpeg(encoded, channels=channels, dct_method='INTEGER_ACCURATE'),
      lambda: tf.io.decode_image(encoded, channels=channels, dtype=tf.uint8,
                                 expand_animations=False))
  pixels = tf.cast(tf.reshape(image, [-1, channels]), tf.int64)
  return (tf.reduce_sum(pixels, axis=0), tf.reduce_sum(pixels * pixels, axis=0),
          tf.shape(pixels, out_type=tf.int64)[0])


def make_preprocessing_fn(image_size: int, channels: int = 3):
  """The TFT ``preprocessing_fn`` of a run's ``--image_size`` and ``--channels`` (module doc)."""

  def preprocessing_fn(inputs):
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf
    import tensorflow_transform as tft
    from imagerecords.dataset import preprocess_image

    encoded = inputs[contract.TRANSFORM_INPUT]  # tf.string [B]
    sums, squares, counts = tf.map_fn(
        lambda e: _pixel_sums(e, channels), encoded,
        fn_output_signature=(tf.TensorSpec([channels], tf.int64),
                             tf.TensorSpec([channels], tf.int64), tf.TensorSpec([], tf.int64)))
    # Analyzers: exact totals over the whole split, computed by Beam.
    total = tf.cast(tft.sum(sums, reduce_instance_dims=False), tf.float64)  # [C]
    total_squares = tf.cast(tft.sum(squares, reduce_instance_dims=False), tf.float64)  # [C]
    pixel_count = tft.sum(counts)  # int64 []
    num_pixels = tf.cast(pixel_count, tf.float64)
    mean = total / num_pixels
    std = tf.sqrt(tf.maximum(total_squares / num_pixels - mean * mean, 0.))
    mean, std = tf.cast(mean, tf.float32), tf.cast(std, tf.float32)

    images = tf.map_fn(
        lambda e: preprocess_image(e, image_size, training=False, channels=channels), encoded,
        fn_output_signature=tf.TensorSpec([image_size, image_size, channels], tf.float32))
    batch = tf.shape(encoded)[:1]
    return {
        contract.TRANSFORM_IMAGE: (images * 255. - mean) / std,
        contract.TRANSFORM_PIXEL_MEAN: tf.tile(mean[tf.newaxis], tf.concat([batch, [1]], 0)),
        contract.TRANSFORM_PIXEL_STD: tf.tile(std[tf.newaxis], tf.concat([batch, [1]], 0)),
        'num_pixels': tf.fill(batch, pixel_count),  # int64 [B], for the manifest
    }

  return preprocessing_fn


def _raw_metadata():
  """TFT's DatasetMetadata of the instances: one tf.string feature, the encoded image."""
  # pylint: disable=import-outside-toplevel
  import tensorflow as tf
  from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils
  return dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(
      {contract.TRANSFORM_INPUT: tf.io.FixedLenFeature([], tf.string)}))


def _encoded_image(example) -> dict:
  """ConvertedExample -> TFT instance ``{'image/encoded': bytes}``, from its record."""
  from tensorflow.core.example import example_pb2  # pylint: disable=import-outside-toplevel
  record = example_pb2.Example.FromString(example.serialized)
  value = record.features.feature[contract.IMAGE_ENCODED].bytes_list.value[0]
  return {contract.TRANSFORM_INPUT: value}


def _statistics(unused_published, transformed: List[dict], split: str, num_examples: int,
                staging_dir: str) -> dict:
  """The transformed probe instance (none: an empty split) -> the manifest's ``statistics``
  (see contract); ``pixel_mean`` and ``pixel_std`` are None for an empty training split."""
  try:  # TFT's temporary files: the transform is published, they served their purpose
    # a local folder is removed whole; on object stores a trailing '/' deletes the prefix
    FileSystems.delete([staging_dir + '/' if '://' in staging_dir else staging_dir])
  except OSError as error:  # BeamIOError: already gone, or an object store without the prefix
    _LOG.debug('left %s: %s', staging_dir, error)
  instance = transformed[0] if transformed else None
  return {
      contract.STATS_SPLIT: split,
      contract.STATS_NUM_EXAMPLES: num_examples,
      contract.STATS_NUM_PIXELS: int(instance['num_pixels']) if instance else 0,
      contract.STATS_PIXEL_MEAN: instance and [
          round(float(v), 6) for v in instance['pixel_mean']],
      contract.STATS_PIXEL_STD: instance and [round(float(v), 6) for v in instance['pixel_std']],
      'transform_fn': contract.TRANSFORM_FN_DIR,
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

    split = self._split
    staging_dir = FileSystems.join(self._output_dir, STAGING_DIR)
    # ConvertedExample -> {'image/encoded': bytes}, training split only
    instances = (
        examples
        | 'keep the training split' >> beam.Filter(lambda e: e.split == split)
        | 'to TFT instances' >> beam.Map(_encoded_image))
    metadata = _raw_metadata()
    with tft_beam.Context(temp_dir=staging_dir, desired_batch_size=_DESIRED_BATCH_SIZE,
                          force_tf_compat_v1=False):
      transform_fn = ((instances, metadata)
                      | 'analyze pixels' >> tft_beam.AnalyzeDataset(
                          make_preprocessing_fn(self._image_size, self._channels)))
      published = transform_fn | 'write transform_fn' >> tft_beam.WriteTransformFn(
          self._output_dir)
      # one image through the transform: its pixel_mean / pixel_std outputs are the numbers
      probe = instances | 'one image' >> beam.combiners.Sample.FixedSizeGlobally(1) | (
          'unpack' >> beam.FlatMap(lambda sample: sample))
      transformed, _ = (((probe, metadata), transform_fn)
                        | 'transform one image' >> tft_beam.TransformDataset())
    num_examples = instances | 'count' >> beam.combiners.Count.Globally()
    return published | 'statistics' >> beam.Map(
        _statistics, beam.pvalue.AsList(transformed), split=split,
        num_examples=beam.pvalue.AsSingleton(num_examples), staging_dir=staging_dir)
