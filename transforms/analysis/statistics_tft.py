"""``--stats=tft``: exact pixel statistics of the training split with tensorflow-transform, and
the transform that normalises with them (the default ``--stats`` computes the same numbers with
Beam combiners alone, ``transforms.analysis.statistics``, and writes no transform).

A tensorflow-transform (TFT) analysis over every stored image of the training split (not a
sample) computes the per-channel pixel mean and standard deviation of the images *as stored*
(decoded from the records' ``image/encoded`` as TensorFlow decodes them, after the job's
resize, on the 0-255 scale). TFT writes the resulting transform (a TensorFlow SavedModel with
the statistics baked in) into the output directory, and the same numbers go into
``manifest.json``::

    PCollection[ConvertedExample]          the training split's examples carry their stored
                                           image's exact per-channel sums (Python ints, computed
                                           in the conversion step: transforms.image.pixel_sums)
      | keep the training split            ``train`` if the run has it, else the first split
      | batch, to Arrow RecordBatches      one TFT instance per training image, as TFT reads
      |                                    data (TFXIO): 'pixel_sums' int64 [C],
      |                                    'pixel_squares' int64 [C], 'num_pixels' int64,
      |                                    'image/encoded' b'' (not analysed; see below)
      | analyze (tft_beam.AnalyzeDataset)  tft.sum of each over all instances (TFT's combiners)
      |   -> transform_fn                  -> OUT/transform_fn/, OUT/transformed_metadata/
      |                                       (tft_beam.WriteTransformFn)
      | read the published transform       its pixel_mean, pixel_std, num_pixels outputs
      |                                    (imagerecords.transform.saved_statistics)
      -> one element: the manifest's ``statistics`` (without class frequencies; WriteMetadata
         adds the training split's exact class counts)

Mean and variance come from exact integer sums: ``mean = S / N``, ``std = sqrt(Q / N - mean^2)``
(the population standard deviation, divide by N), with ``S`` and ``Q`` the int64 sums of the
pixel values and of their squares over all ``N`` pixels of the split, exact up to 1.4e14 pixels.
TensorFlow never decodes the images here: their pixels were decoded once, by the conversion
step, from the bytes it had just encoded (decoding every image again inside TFT's analysis graph
costs a second decode per image and grows each worker's memory with the images analysed;
docs/benchmarks.md, "``--stats=tft``"). The analysis runs only what its analyzers need: TFT
traces the ``preprocessing_fn`` into a TensorFlow function that returns the analyzers' inputs, and
TensorFlow prunes everything else -- the decode, crop and resize included -- because that image
path holds no op with a side effect (``imagerecords.preprocessing`` crops without ``Assert`` ops for
this reason; a function runs every such op whatever it returns). So the instances' image is an
empty string that nothing reads, and an instance costs TFT a few int64 columns in a batch.

The transform (``preprocessing_fn``) maps a batch of encoded images (tf.string ``[B]``) to
model input: decode, crop the central square and resize to the run's ``--image_size`` ``S``
exactly as :func:`imagerecords.preprocessing.preprocess_image` does in evaluation, convert to float
on the 0-255 scale, subtract the mean and divide by the standard deviation. Its outputs:

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

The manifest's numbers are read back from the published transform itself (its outputs for a
1-pixel probe image, the reader's :func:`imagerecords.transform.saved_statistics`: TFT has no
reader for the constants it bakes in), so they are the ones the transform normalises with.
"""

import logging
from typing import Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from imagerecords import contract
from imagerecords import manifest_schema

from transforms.files.folders import delete_tree
from transforms.files.working_folders import TFT_FOLDER
from transforms.image.pixel_sums import PixelSums

_LOG = logging.getLogger('imagerecords')


PIXEL_SUMS, PIXEL_SQUARES, NUM_PIXELS = 'pixel_sums', 'pixel_squares', 'num_pixels'
"""The analysis inputs: an image's per-channel sums of pixel values and of their squares, and
its pixel count (``transforms.image.pixel_sums.PixelSums``)."""

MAX_BATCH = 4096
"""The most instances in one RecordBatch (``beam.BatchElements`` sizes them up to this by
itself): one run of TFT's analysis function each, about 100 bytes an instance."""


def make_preprocessing_fn(image_size: int, channels: int = 3):
  """The TFT ``preprocessing_fn`` of a run's ``--image_size`` and ``--channels`` (module doc)."""

  def preprocessing_fn(inputs):
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf
    import tensorflow_transform as tft
    from imagerecords.transform import normalized_batch

    encoded = inputs[contract.TRANSFORM_INPUT]  # tf.string [B]
    # Analyzers: exact totals over the whole split of the per-image sums.
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
        contract.TRANSFORM_NUM_PIXELS: tf.fill(batch, pixel_count),  # int64 [B], the manifest's
    }

  return preprocessing_fn


def _tensor_adapter_config(channels: int):
  """TFT's input description of the instances (a ``tfxio.TensorAdapterConfig``): the encoded
  image (tf.string) and the analysis inputs (int64 ``[C]``, ``[C]``, ``[]``), as the Arrow
  columns TFT's own in-memory TFXIO reads (``large_list`` of one value or of ``C``)."""
  # pylint: disable=import-outside-toplevel
  import tensorflow as tf
  from tensorflow_transform.tf_metadata import schema_utils
  from tfx_bsl.public import tfxio
  schema = schema_utils.schema_from_feature_spec({
      contract.TRANSFORM_INPUT: tf.io.FixedLenFeature([], tf.string),
      PIXEL_SUMS: tf.io.FixedLenFeature([channels], tf.int64),
      PIXEL_SQUARES: tf.io.FixedLenFeature([channels], tf.int64),
      NUM_PIXELS: tf.io.FixedLenFeature([], tf.int64),
  })
  return tfxio.TFExampleBeamRecord(physical_format='inmem', schema=schema,
                                   telemetry_descriptors=['imagerecords']).TensorAdapterConfig()


def _record_batch(sums: Sequence[PixelSums], arrow_schema):
  """Instances, one per image's :class:`PixelSums` -> a ``pyarrow.RecordBatch`` of
  ``arrow_schema`` (:func:`_tensor_adapter_config`): each row's ``pixel_sums`` and
  ``pixel_squares`` (int64 ``[C]``), ``num_pixels`` (int64) and an empty ``image/encoded``,
  which the analysis never reads (module doc)."""
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  rows = len(sums)

  def column(values: np.ndarray, field) -> pa.Array:
    """``values`` ``[rows, width]`` -> rows of ``width`` values each."""
    width = values.shape[1]
    return pa.LargeListArray.from_arrays(
        pa.array(np.arange(0, rows * width + 1, width, dtype=np.int64)),
        pa.array(values.ravel(), field.type.value_type))

  columns = {
      contract.TRANSFORM_INPUT: np.full((rows, 1), b'', dtype=object),
      PIXEL_SUMS: np.array([s.sums for s in sums], np.int64).reshape(rows, -1),
      PIXEL_SQUARES: np.array([s.squares for s in sums], np.int64).reshape(rows, -1),
      NUM_PIXELS: np.array([s.num_pixels for s in sums], np.int64).reshape(rows, 1),
  }
  return pa.RecordBatch.from_arrays(
      [column(columns[field.name], field) for field in arrow_schema], schema=arrow_schema)


def _statistics(unused_published, output_dir: str, split: str, num_examples: int,
                channels: int) -> manifest_schema.StatisticsSection:
  """The published transform's numbers -> the manifest's ``statistics``, without the class
  frequencies that ``transforms.outputs.metadata.WriteMetadata`` adds; ``pixel_mean`` and
  ``pixel_std`` are None for an empty training split."""
  # pylint: disable=import-outside-toplevel
  import tensorflow as tf
  from imagerecords.transform import saved_statistics
  staging_dir = FileSystems.join(output_dir, TFT_FOLDER)
  try:  # TFT's temporary files: the transform is published, they served their purpose
    delete_tree(staging_dir)
  except OSError as error:  # BeamIOError: a file went away meanwhile; the run has succeeded
    _LOG.debug('left %s: %s', staging_dir, error)
  transform = tf.saved_model.load(FileSystems.join(output_dir, contract.TRANSFORM_FN_DIR))
  mean, std, num_pixels = (t.numpy() for t in saved_statistics(transform, channels))
  empty = not num_examples  # the transform's are NaN (0 / 0)
  return manifest_schema.StatisticsSection(
      split=split, num_examples=num_examples, num_pixels=int(num_pixels),
      pixel_mean=None if empty else [round(float(v), 6) for v in mean],
      pixel_std=None if empty else [round(float(v), 6) for v in std],
      transform_fn=contract.TRANSFORM_FN_DIR)


class AnalyzeTrainingSplit(beam.PTransform):
  """PCollection[List[ConvertedExample]] (``transforms.batches.ExampleBatches``) -> a
  one-element PCollection: the manifest's ``statistics``.

  Writes ``OUT/transform_fn/`` and ``OUT/transformed_metadata/`` (TFT's layout, readable with
  ``tft.TFTransformOutput(OUT)`` or ``tf.saved_model.load(OUT/transform_fn)``) before the element
  is emitted, so a step that takes the element as a side input runs after both are published.
  The element: ``{'split', 'num_examples', 'num_pixels', 'pixel_mean': [3 floats],
  'pixel_std': [3 floats], 'transform_fn': 'transform_fn'}``; 0-255 scale. When the training
  split has no example, ``pixel_mean`` and ``pixel_std`` are None (the transform's are NaN).

  Args:
    output_dir: the run's output directory (TFT's temporary files go to ``TFT_FOLDER`` in it).
    split: the training split's name (see
      :func:`transforms.analysis.statistics.training_split`).
    image_size: the run's ``--image_size``: the side of the transform's ``image`` output.
    channels: the run's ``--channels`` (3: RGB, 1: grayscale): of the images and statistics.
  """

  def __init__(self, output_dir: str, split: str, image_size: int, channels: int = 3):
    super().__init__()
    self._output_dir = output_dir
    self._split = split
    self._image_size = image_size
    self._channels = channels

  def expand(self, batches):
    # pylint: disable=import-outside-toplevel
    import tensorflow_transform.beam as tft_beam

    split = self._split
    config = _tensor_adapter_config(self._channels)
    training = batches | 'keep the training split' >> beam.FlatMap(
        lambda batch: [example for example in batch if example.split == split])
    # one instance per training image: its sums, in RecordBatches as TFT reads data
    instances = (
        training
        | 'pixel sums' >> beam.Map(lambda example: example.pixel_sums)
        | 'batch' >> beam.BatchElements(max_batch_size=MAX_BATCH)
        | 'to record batches' >> beam.Map(_record_batch, config.arrow_schema))
    with tft_beam.Context(temp_dir=FileSystems.join(self._output_dir, TFT_FOLDER),
                          force_tf_compat_v1=False):
      transform_fn = ((instances, config)
                      | 'analyze pixels' >> tft_beam.AnalyzeDataset(
                          make_preprocessing_fn(self._image_size, self._channels)))
      published = transform_fn | 'write transform_fn' >> tft_beam.WriteTransformFn(
          self._output_dir)
    num_examples = training | 'count' >> beam.combiners.Count.Globally()
    return published | 'statistics' >> beam.Map(
        _statistics, output_dir=self._output_dir, split=split,
        num_examples=beam.pvalue.AsSingleton(num_examples), channels=self._channels)
