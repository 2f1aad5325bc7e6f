"""Reads one split of an imagerecords output directory into a batched ``tf.data.Dataset``.

The input pipeline follows TensorFlow's tf.data performance guide
(https://www.tensorflow.org/guide/data_performance): read shards in parallel, shuffle, parse and
decode in parallel, batch, prefetch; every degree of parallelism and the prefetch depth are
``tf.data.AUTOTUNE``, so the runtime sizes them to the machine::

    shard files              sorted file names from manifest.json
      | shard(pipelines, id)        (tf.distribute, when there are enough files)
      | shuffle files               (training)
    serialized tf.train.Example     interleave(TFRecordDataset), parallel, AUTOTUNE
      | shard(pipelines, id)        (tf.distribute, when there are fewer files than pipelines)
      | shuffle records             (training; a new order every epoch)
      | repeat                      (optional)
    (image [S, S, 3] float, label int32 [])      map(parse + decode + crop + resize), AUTOTUNE
    (images [B, S, S, 3] float, labels int32 [B])   batch
      | prefetch(AUTOTUNE)

Preprocessing, per example (``S`` = ``image_size``):

* training: an Inception-style random crop -- a window covering 8% to 100% of the image's
  area with aspect ratio 3/4 to 4/3, drawn by ``tf.image.sample_distorted_bounding_box`` (the
  parameters of Szegedy et al., *Going deeper with convolutions*, 2015, as in TF-slim's
  ``inception_preprocessing.py`` and Model Garden's ``official/vision/ops/preprocess_ops.py``),
  resized to ``S x S``, flipped left-right with probability 1/2. JPEG records decode only the
  crop window (``tf.io.decode_and_crop_jpeg``) after reading the size from the header
  (``tf.io.extract_jpeg_shape``); other formats (PNG) are decoded whole, then cropped.
* evaluation: the central square of side ``min(height, width)`` (decoded alone, for JPEG),
  resized to ``S x S`` -- the same as resizing the shorter side to ``S`` and cropping the
  centre. Images already ``S x S`` (the Beam job's ``center_crop`` output at that size) are
  decoded and passed through unchanged.

Every image is decoded to the manifest's ``image.channels`` (3, RGB: grayscale records become
RGB; 1 for a ``--channels=1`` output: grayscale), JPEGs with libjpeg-turbo's accurate integer
IDCT (``contract.JPEG_DCT_METHOD``: the pixels the writer's ``--stats`` describe, so that
``normalize=True`` centres them; TensorFlow's default fast IDCT would not), ``raw`` records
(``--image_format=raw``) are reshaped from their bytes with their shape keys, and pixels are
scaled to [0, 1], or, with ``dtype=tf.uint8``, kept as 0-255 pixel values for the accelerator to
scale.
"""

import re
from typing import Optional, Union

import tensorflow as tf

from imagerecords import contract
from imagerecords import manifest_schema
from imagerecords import metadata
from imagerecords import segmentation
from imagerecords import transform
from imagerecords.preprocessing import image_feature_spec, parse_raw_shape, preprocess_image

# Inception-style crop parameters (TF-slim inception_preprocessing.distorted_bounding_box_crop).
def load(data_dir: str,
         split: str,
         batch_size: int,
         image_size: int = 224,
         training: bool = False,
         *,
         shuffle_buffer: int = 10_000,
         seed: Optional[int] = None,
         input_context: Optional[tf.distribute.InputContext] = None,
         drop_remainder: Optional[bool] = None,
         dtype: tf.dtypes.DType = tf.float32,
         repeat: bool = False,
         return_filenames: bool = False,
         normalize: bool = False,
         return_embeddings: bool = False,
         verify_shards: Union[bool, str] = True) -> tf.data.Dataset:
  """A ``tf.data.Dataset`` of batches of ``split`` of the imagerecords directory ``data_dir``.

  Each element is ``(images, labels)``:

  * ``images``: ``dtype`` (float32 by default), shape ``[B, image_size, image_size, C]``, C = 3
    (RGB) or 1 for an output written with ``--channels=1`` (the manifest's ``image.channels``),
    values in [0, 1] (pixel value / 255); with ``dtype=tf.uint8``, the pixel values 0-255
    themselves (normalise on the accelerator: a quarter of float32's bytes to copy).
  * ``labels``: int32, shape ``[B]``, class ids indexing :func:`imagerecords.class_names`.

  ``B`` is the (per-pipeline) batch size; the last batch of an evaluation epoch may be smaller.
  A dataset whose manifest lists no classes (unlabeled data) yields ``images`` alone, not a
  tuple. The result goes straight into ``model.fit``/``model.evaluate``/``model.predict``.

  A segmentation output (manifest ``"task": "segmentation"``, the job's ``--masks``) yields
  ``(images, masks)`` instead: ``masks`` int32 ``[B, image_size, image_size]``, class indices
  (255 = void), cut with the same window and flipped together with their images (see
  :mod:`imagerecords.segmentation`).

  Training (``training=True``) shuffles shard files and records, with a new order every epoch
  (every new iterator, e.g. every ``model.fit`` epoch), applies the Inception-style random crop
  and random left-right flip described in the module docstring, and reads files in whatever
  order is ready first. Evaluation (``training=False``) is deterministic: no shuffling, no
  randomness, records interleaved from the sorted files in a fixed order, each example exactly
  once per epoch.

  Args:
    data_dir: the output directory of the Beam job (local path or ``gs://`` URL).
    split: a split name from the manifest, e.g. ``'train'``.
    batch_size: the *global* batch size. Without ``input_context`` it is the batch size of the
      dataset; with one, each input pipeline batches
      ``input_context.get_per_replica_batch_size(batch_size)`` examples (the convention of
      ``tf.distribute.Strategy.distribute_datasets_from_function``), which raises ValueError
      unless ``batch_size`` is divisible by the number of replicas.
    image_size: ``S``, the side of the square output images, in pixels.
    training: training (shuffled, augmented) or evaluation (deterministic) preprocessing.
    shuffle_buffer: records held in the training shuffle buffer. Records are shuffled still
      serialized, so memory is about ``shuffle_buffer`` times the mean record size (the
      manifest's shard ``bytes / num_examples``). Ignored in evaluation.
    seed: seed for the file shuffle, the record shuffle and the augmentation; the order still
      changes every epoch, reproducibly. None: a fresh random seed. Ignored in evaluation.
    input_context: a ``tf.distribute.InputContext`` to read only this input pipeline's part of
      the split. Shards by file (``Dataset.shard`` on the file list, the tf.distribute
      recommendation) when there are at least as many files as input pipelines; otherwise by
      record, after a deterministic read, which still gives every example to exactly one
      pipeline but reads every file in every pipeline.
    drop_remainder: drop the last, smaller batch. None: True in training (static batch shape,
      as ``tf.distribute`` and XLA prefer), False in evaluation (every example is seen).
    dtype: floating dtype of the images, e.g. ``tf.bfloat16`` or ``tf.float16`` for mixed
      precision; or ``tf.uint8`` for pixel values 0-255 (resized, then rounded), to be scaled
      on the accelerator (e.g. a ``tf.keras.layers.Rescaling(1 / 255)`` first layer).
    repeat: repeat the split indefinitely (then pass ``steps_per_epoch`` to ``model.fit``;
      see :func:`imagerecords.num_examples`). Each pass is shuffled anew in training.
    return_filenames: also yield the records' ``image/filename`` (the path relative to the
      input root) as a third element, tf.string ``[B]``: ``(images, labels, filenames)``, or
      ``(images, filenames)`` when unlabeled. For matching predictions to files; not for
      ``model.fit``, which would take the third element for sample weights.
    normalize: yield ``(pixel - mean) / std`` per channel (pixel on the 0-255 scale) instead of
      [0, 1] values, with the training split's exact pixel mean and standard deviation that
      the job's ``--stats`` wrote (the manifest's ``statistics``, or ``OUT/transform_fn/``
      with ``--stats=tft``; see :mod:`imagerecords.transform`), applied after the crop and
      resize. In evaluation the
      numbers equal :func:`imagerecords.preprocessing_layer`'s for the same images. Needs a
      floating ``dtype``.
    return_embeddings: yield ``((images, embeddings), labels)``: beside each image, its
      stored embedding (``image/embedding``, written with the job's ``--embedding_model``),
      float32 ``[B, *shape]`` of the manifest's embedding shape (e.g. ``[B, 1280]``): the two
      inputs of a Keras model with two inputs. Not for segmentation outputs.
      :func:`imagerecords.load_embeddings` reads the embeddings without the images.
    verify_shards: how the shard files this input pipeline reads are checked against the
      manifest before the dataset is built (:func:`imagerecords.metadata.check_shards`):
      True (the default), each one's size in bytes, one ``stat`` per shard; ``'sha256'``,
      also the SHA-256 of each, one full read of the shards first (bound by SHA-256, about
      1.4 GB/s a core, or by the storage; ``docs/reader.md``); False, nothing: for shards
      edited on purpose.

  Returns:
    A batched, prefetched ``tf.data.Dataset`` as described above. Its cardinality (``len``)
    is known from the manifest's per-shard counts unless ``repeat`` is set (then infinite).
    Pipelines sharded by file may get different numbers of batches; for multi-worker training
    use ``repeat=True`` and ``steps_per_epoch``.

  Raises:
    IncompleteDatasetError: ``data_dir`` has no ``_SUCCESS`` marker (checked before anything
      else is read).
    ValueError: ``split`` is unknown (the message lists the available splits), or an argument
      is out of range.
    IncompleteDatasetError: (``verify_shards``) a shard file the manifest lists is missing.
    imagerecords.ShardMismatchError: (``verify_shards``) a shard's size, or with ``'sha256'``
      its SHA-256, is not the manifest's: the shard was replaced or edited since the job wrote
      it. The message names the shard, the manifest's value and the file's.
    tf.errors.FailedPreconditionError: while iterating, if the shards hold a different number
      of records than the manifest says.
    imagerecords.transform.MissingTransformError: ``normalize=True`` for a directory converted
      with ``--stats=false`` (no statistics; the message says so).
    ValueError: ``return_embeddings=True`` for an output without embeddings.
  """
  manifest = metadata.read_manifest(data_dir)  # IncompleteDatasetError without _SUCCESS
  if batch_size < 1:
    raise ValueError(f'batch_size must be at least 1, got {batch_size}.')
  if image_size < 1:
    raise ValueError(f'image_size must be at least 1, got {image_size}.')
  if training and shuffle_buffer < 1:
    raise ValueError(f'shuffle_buffer must be at least 1, got {shuffle_buffer}.')
  dtype = tf.as_dtype(dtype)
  if not (dtype.is_floating or dtype == tf.uint8):
    raise ValueError(f'dtype must be a floating dtype or uint8, got {dtype.name}.')
  decode_dtype = dtype
  if normalize:
    if not dtype.is_floating:
      raise ValueError(f'normalize=True needs a floating dtype, got {dtype.name}.')
    mean, std = transform.normalization(data_dir)  # MissingTransformError: --stats=false
    decode_dtype = tf.float32  # normalised in float32, then cast to dtype

  dataset = _serialized_records(data_dir, manifest, split, training, shuffle_buffer, seed,
                                input_context, repeat, verify_shards)
  labeled = bool(manifest.classes)
  channels = manifest.image.channels
  raw = manifest.image.format == contract.RAW_FORMAT
  if drop_remainder is None:
    drop_remainder = training
  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(batch_size)
  embedding = embedding_feature(manifest, data_dir) if return_embeddings else None

  # --- serialized records -> (image [S, S, 3], label []) --------------------------------------
  decode = _make_decode_fn(image_size, training, labeled, decode_dtype, return_filenames,
                           channels=channels, raw=raw, embedding_shape=embedding)
  if manifest.task == contract.TASK_SEGMENTATION:
    if return_embeddings:
      raise ValueError('return_embeddings=True is for classification outputs, not masks.')
    # (image [S, S, C], mask int32 [S, S]): one crop and flip for both (imagerecords.segmentation)
    decode = segmentation.make_decode_fn(image_size, training, decode_dtype, return_filenames,
                                         channels=channels, raw=raw)
  if training:
    # One stateless-op seed per example, new every epoch: tf.data's recommended way to
    # randomize inside a parallel map
    # (https://www.tensorflow.org/tutorials/images/data_augmentation, stateless random ops).
    seeds = tf.data.Dataset.random(seed=_sub_seed(seed, 2), rerandomize_each_iteration=True)
    dataset = tf.data.Dataset.zip(dataset, seeds.batch(2))
  dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)

  # --- batches ---------------------------------------------------------------------------------
  dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
  if normalize:  # on whole batches: (pixel * 255 - mean) / std, then the requested dtype
    dataset = dataset.map(_normalize_fn(mean, std, dtype), num_parallel_calls=tf.data.AUTOTUNE)
  return dataset.prefetch(tf.data.AUTOTUNE)


def load_embeddings(data_dir: str,
                    split: str,
                    batch_size: int,
                    training: bool = False,
                    *,
                    shuffle_buffer: int = 10_000,
                    seed: Optional[int] = None,
                    input_context: Optional[tf.distribute.InputContext] = None,
                    drop_remainder: Optional[bool] = None,
                    repeat: bool = False,
                    return_filenames: bool = False,
                    verify_shards: Union[bool, str] = True) -> tf.data.Dataset:
  """A ``tf.data.Dataset`` of the stored embeddings of ``split``, without decoding an image.

  Each element is ``(embeddings, labels)``: ``embeddings`` float32 ``[B, *shape]``, the
  manifest's ``embedding.shape`` (e.g. ``[B, 1280]`` pooled, ``[B, 7, 7, 1280]`` stored whole),
  the job's ``--embedding_model`` applied to the stored image (``docs/embeddings.md``);
  ``labels`` int32 ``[B]``. Unlabeled: ``embeddings`` alone. ``return_filenames`` adds the
  ``image/filename`` tf.string ``[B]`` last. For training a head on precomputed features::

      train = imagerecords.load_embeddings(OUT, 'train', 64, training=True)
      head = keras.Sequential([keras.layers.Dense(num_classes)])

  The files, shuffling, sharding (``input_context``), ``repeat``, ``drop_remainder`` and the
  check of the shards (``verify_shards``) behave as in :func:`load`; there is no augmentation
  (the embedding is of the stored image).

  Raises:
    IncompleteDatasetError: no ``_SUCCESS`` marker, or a shard file is missing.
    ValueError: ``split`` is unknown, ``batch_size`` is below 1, or the output holds no
      embeddings (converted without ``--embedding_model``).
    imagerecords.ShardMismatchError: a shard is not the manifest's (as in :func:`load`).
  """
  manifest = metadata.read_manifest(data_dir)
  if batch_size < 1:
    raise ValueError(f'batch_size must be at least 1, got {batch_size}.')
  shape = embedding_feature(manifest, data_dir)
  dataset = _serialized_records(data_dir, manifest, split, training, shuffle_buffer, seed,
                                input_context, repeat, verify_shards)
  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(batch_size)
  labeled = bool(manifest.classes)
  spec = {contract.EMBEDDING: tf.io.FixedLenFeature(shape, tf.float32)}
  if labeled:
    spec[contract.CLASS_LABEL] = tf.io.FixedLenFeature([], tf.int64)
  if return_filenames:
    spec[contract.FILENAME] = tf.io.FixedLenFeature([], tf.string, default_value='')

  def parse(serialized):  # a whole batch of records at once: one parse op per batch
    features = tf.io.parse_example(serialized, spec)
    outputs = [features[contract.EMBEDDING]]
    if labeled:
      outputs.append(tf.cast(features[contract.CLASS_LABEL], tf.int32))
    if return_filenames:
      outputs.append(features[contract.FILENAME])
    return outputs[0] if len(outputs) == 1 else tuple(outputs)

  dataset = dataset.batch(batch_size,
                          drop_remainder=training if drop_remainder is None else drop_remainder)
  dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
  return dataset.prefetch(tf.data.AUTOTUNE)


def embedding_feature(manifest: manifest_schema.Manifest, data_dir: str) -> list:
  """The shape of one stored embedding (list of ints), from the manifest's ``embedding``.

  Raises:
    ValueError: the output holds no embeddings.
  """
  if manifest.embedding is None:
    raise ValueError(f'{data_dir} holds no embeddings: it was converted without '
                     '--embedding_model.')
  return list(manifest.embedding.shape)


def _serialized_records(data_dir: str, manifest: manifest_schema.Manifest, split: str,
                        training: bool, shuffle_buffer: int, seed: Optional[int],
                        input_context: Optional[tf.distribute.InputContext],
                        repeat: bool, verify_shards: Union[bool, str]) -> tf.data.Dataset:
  """The serialized records of ``split``, read, sharded, shuffled and repeated as :func:`load`
  describes (its module docstring's first steps), once the shard files this pipeline reads
  are checked as ``verify_shards`` says; :func:`load` and
  :func:`imagerecords.load_embeddings` both read through here."""
  shards = metadata.split_shards(manifest, data_dir, split)
  files = [shard.path for shard in shards]
  num_pipelines, pipeline_id = 1, 0
  if input_context is not None:
    num_pipelines = input_context.num_input_pipelines
    pipeline_id = input_context.input_pipeline_id
  shard_by_record = num_pipelines > 1 and len(files) < num_pipelines
  # Sharded by file, this pipeline reads every num_pipelines-th file (Dataset.shard below).
  metadata.check_shards(shards if num_pipelines == 1 or shard_by_record
                        else shards[pipeline_id::num_pipelines], verify_shards)

  # shard files -> serialized records ------------------------------------------------------
  dataset = tf.data.Dataset.from_tensor_slices(tf.constant(files, tf.string))
  if num_pipelines > 1 and not shard_by_record:
    dataset = dataset.shard(num_pipelines, pipeline_id)
  if training and not shard_by_record:
    dataset = dataset.shuffle(max(len(files), 1), seed=_sub_seed(seed, 0),
                              reshuffle_each_iteration=True)
  dataset = dataset.interleave(
      _read_records,
      # Sharding by record needs the same record order in every pipeline, on any machine:
      # a fixed cycle over all (fewer than num_pipelines) files, deterministic.
      cycle_length=max(len(files), 1) if shard_by_record else None,
      num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=shard_by_record or not training)
  if shard_by_record:
    dataset = dataset.shard(num_pipelines, pipeline_id)
  if training:
    dataset = dataset.shuffle(shuffle_buffer, seed=_sub_seed(seed, 1),
                              reshuffle_each_iteration=True)
  num_records = _pipeline_num_examples(shards, num_pipelines, pipeline_id, shard_by_record)
  if num_records is not None:
    # Known size: len(dataset) and Keras progress bars work, and a shard holding a different
    # number of records than the manifest says fails loudly instead of skewing an epoch.
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(num_records))
  if repeat:
    dataset = dataset.repeat()
  return dataset


def _normalize_fn(mean: tf.Tensor, std: tf.Tensor, dtype: tf.dtypes.DType):
  """Batch map function: normalises the images (the element, or its first part)."""

  def normalize(images, *rest):
    embeddings = None
    if isinstance(images, tuple):  # return_embeddings: (images, embeddings)
      images, embeddings = images
    images = tf.cast(transform.normalize_images(images, mean, std), dtype)
    if embeddings is not None:
      images = (images, embeddings)
    return (images, *rest) if rest else images

  return normalize


def _read_records(path: tf.Tensor) -> tf.data.Dataset:
  """The serialized records of one shard file; GZIP when the name ends in ``.tfrecord.gz``."""
  gzip_name = '.*' + re.escape(contract.SHARD_SUFFIX + contract.GZIP_SUFFIX)
  compression = tf.where(tf.strings.regex_full_match(path, gzip_name), 'GZIP', '')
  return tf.data.TFRecordDataset(path, compression_type=compression)


def _pipeline_num_examples(shards, num_pipelines, pipeline_id, shard_by_record):
  """The number of records one input pipeline reads per epoch; None if the manifest can't say.

  Mirrors the sharding in :func:`load`: ``Dataset.shard`` keeps elements ``pipeline_id``,
  ``pipeline_id + num_pipelines``, ... of the sorted files, or of the records.
  """
  counts = [shard.num_examples for shard in shards]
  if any(count is None for count in counts):
    return None
  if num_pipelines == 1:
    return sum(counts)
  if shard_by_record:
    return len(range(pipeline_id, sum(counts), num_pipelines))
  return sum(counts[pipeline_id::num_pipelines])


def _sub_seed(seed: Optional[int], index: int) -> Optional[int]:
  """A distinct seed for each random op of the pipeline, all derived from ``seed``."""
  return None if seed is None else seed * 3 + index


def _make_decode_fn(image_size, training, labeled, dtype, return_filenames, channels=3,
                    raw=False, embedding_shape=None):
  """The per-example map function: serialized record (+ seed) -> (image[, label][, filename]).

  ``channels``: of the output images (the manifest's). ``raw``: the records hold raw pixels,
  reshaped with their ``image/height``, ``image/width``, ``image/channels``.
  ``embedding_shape``: also parse ``image/embedding`` of this shape; the image is then
  ``(image, embedding)``.
  """
  spec = image_feature_spec(raw, return_filenames)
  if embedding_shape is not None:
    spec[contract.EMBEDDING] = tf.io.FixedLenFeature(embedding_shape, tf.float32)
  if labeled:
    spec[contract.CLASS_LABEL] = tf.io.FixedLenFeature([], tf.int64)

  def decode(serialized, seed=None):
    features = tf.io.parse_single_example(serialized, spec)
    image = preprocess_image(
        features[contract.IMAGE_ENCODED], image_size, training, seed=seed, dtype=dtype,
        channels=channels, raw_shape=parse_raw_shape(features) if raw else None)
    if embedding_shape is not None:
      image = (image, features[contract.EMBEDDING])
    outputs = [image]
    if labeled:
      outputs.append(tf.cast(features[contract.CLASS_LABEL], tf.int32))
    if return_filenames:
      outputs.append(features[contract.FILENAME])
    return outputs[0] if len(outputs) == 1 else tuple(outputs)

  return decode
