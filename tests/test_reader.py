"""Tests of the reader distribution, ``imagerecords``, against a real output directory.

``sample_dataset`` (tests/conftest.py) is the path of an output directory written by the Beam
job from the bundled photos in samples/hymenoptera: splits train and validation, 64 x 64 JPEGs.
The expected contents come from reading the shards directly (a glob, not the manifest), so the
reader is checked against the records themselves.
"""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import imagerecords
from imagerecords import contract
from imagerecords import metadata
from imagerecords import preprocessing

SPLITS = ('train', 'validation')


def _records(data_dir, split):
  """Every record of ``split``, parsed straight from the shard files found by glob."""
  files = sorted(tf.io.gfile.glob(os.path.join(data_dir, contract.shard_glob(split))))
  assert files, f'no shards of {split} in {data_dir}'
  spec = {
      contract.IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
      contract.FILENAME: tf.io.FixedLenFeature([], tf.string),
      contract.CLASS_LABEL: tf.io.FixedLenFeature([], tf.int64),
      contract.IMAGE_HEIGHT: tf.io.FixedLenFeature([], tf.int64),
      contract.IMAGE_WIDTH: tf.io.FixedLenFeature([], tf.int64),
  }
  records = []
  for path in files:
    compressed = contract.parse_shard_file_name(os.path.basename(path)).compressed
    compression = 'GZIP' if compressed else ''
    for serialized in tf.data.TFRecordDataset(path, compression_type=compression):
      features = tf.io.parse_single_example(serialized, spec)
      records.append({key: value.numpy() for key, value in features.items()})
  return records


def _filenames(dataset):
  """The filenames of one epoch of a ``return_filenames=True`` dataset, in order."""
  return [name for *_, names in dataset for name in names.numpy().tolist()]


def _copy(src, dst):
  shutil.copytree(src, dst)
  return str(dst)


@pytest.mark.parametrize('training', [False, True])
@pytest.mark.parametrize('image_size', [64, 40])
def test_batches_have_documented_shapes_dtypes_and_range(sample_dataset, training, image_size):
  batch_size = 4
  ds = imagerecords.load(sample_dataset, 'train', batch_size, image_size, training=training, seed=1)
  num_classes = len(imagerecords.class_names(sample_dataset))
  batches = list(ds)
  assert batches
  for images, labels in batches:
    assert images.dtype == tf.float32 and labels.dtype == tf.int32
    assert images.shape[1:] == (image_size, image_size, 3)
    assert images.shape[0] == labels.shape[0] <= batch_size
    if training:  # drop_remainder defaults to True in training
      assert images.shape[0] == batch_size
    assert float(tf.reduce_min(images)) >= 0.0 and float(tf.reduce_max(images)) <= 1.0
    assert float(tf.reduce_max(images)) > 0.2  # scaled to [0, 1], not [0, 1/255]
    assert ((labels.numpy() >= 0) & (labels.numpy() < num_classes)).all()
  # Static shapes, as Keras and tf.distribute want them.
  assert ds.element_spec[0].shape.as_list() == [batch_size if training else None,
                                                image_size, image_size, 3]


def test_dtype_option(sample_dataset):
  images, _ = next(iter(imagerecords.load(sample_dataset, 'validation', 2, 64,
                                          dtype=tf.bfloat16)))
  assert images.dtype == tf.bfloat16


@pytest.mark.parametrize('image_size', [64, 40])
def test_uint8_option_yields_the_pixel_values_of_the_float_output(sample_dataset, image_size):
  as_float, labels = next(iter(imagerecords.load(sample_dataset, 'validation', 4, image_size)))
  as_uint8, labels8 = next(iter(imagerecords.load(sample_dataset, 'validation', 4, image_size,
                                                  dtype=tf.uint8)))
  assert as_uint8.dtype == tf.uint8 and as_uint8.shape == as_float.shape
  np.testing.assert_array_equal(labels8, labels)
  np.testing.assert_allclose(as_uint8.numpy(), as_float.numpy() * 255, atol=0.5 + 1e-3)


@pytest.mark.parametrize('split', SPLITS)
def test_eval_epoch_yields_each_example_exactly_once(sample_dataset, split):
  records = _records(sample_dataset, split)
  expected = sorted(r[contract.FILENAME] for r in records)
  assert len(expected) == len(set(expected)) == imagerecords.num_examples(sample_dataset, split)

  ds = imagerecords.load(sample_dataset, split, batch_size=5, image_size=64, return_filenames=True)
  first = _filenames(ds)
  assert sorted(first) == expected
  assert _filenames(ds) == first  # evaluation is deterministic: same order every epoch


def test_eval_labels_and_pixels_match_records(sample_dataset):
  records = {r[contract.FILENAME]: r for r in _records(sample_dataset, 'validation')}
  shorter = {name: int(min(r[contract.IMAGE_HEIGHT], r[contract.IMAGE_WIDTH]))
             for name, r in records.items()}
  size = max(set(shorter.values()), key=list(shorter.values()).count)  # the writer's image_size
  ds = imagerecords.load(sample_dataset, 'validation', 3, image_size=size, return_filenames=True)
  checked = 0
  for images, labels, names in ds:
    for image, label, name in zip(images.numpy(), labels.numpy(), names.numpy()):
      record = records[name]
      assert label == record[contract.CLASS_LABEL]
      if shorter[name] == size:
        # Shorter side already `size`: the central square, decoded and passed through unchanged.
        decoded = tf.io.decode_jpeg(record[contract.IMAGE_ENCODED], channels=3,
                                    dct_method=contract.JPEG_DCT_METHOD).numpy()
        top, left = (decoded.shape[0] - size) // 2, (decoded.shape[1] - size) // 2
        expected = decoded[top:top + size, left:left + size] / 255.0
        np.testing.assert_allclose(image, expected, atol=1e-6)
        checked += 1
  assert checked >= len(records) // 2


def test_training_order_differs_between_epochs(sample_dataset):
  batch_size = 4
  n = imagerecords.num_examples(sample_dataset, 'train')
  ds = imagerecords.load(sample_dataset, 'train', batch_size, 64, training=True, seed=7,
                         return_filenames=True)
  epoch1, epoch2 = _filenames(ds), _filenames(ds)
  for epoch in (epoch1, epoch2):
    assert len(epoch) == len(set(epoch)) == n // batch_size * batch_size
  assert epoch1 != epoch2


def test_training_augmentation_is_random(sample_dataset):
  ds = imagerecords.load(sample_dataset, 'validation', 64, 64, training=True, seed=3,
                         drop_remainder=False, return_filenames=True)
  def by_name():
    images, _, names = next(iter(ds))
    return dict(zip(names.numpy().tolist(), images.numpy()))
  first, second = by_name(), by_name()
  assert first.keys() == second.keys()
  assert any(not np.array_equal(first[k], second[k]) for k in first)


def test_cardinality_comes_from_the_manifest(sample_dataset):
  n = imagerecords.num_examples(sample_dataset, 'train')
  assert len(imagerecords.load(sample_dataset, 'train', 4, 32)) == -(-n // 4)
  assert len(imagerecords.load(sample_dataset, 'train', 4, 32, training=True)) == n // 4


def test_manifest_count_disagreeing_with_shards_fails_loudly(sample_dataset, tmp_path):
  data_dir = _copy(sample_dataset, tmp_path / 'out')
  path = os.path.join(data_dir, contract.MANIFEST_FILE)
  with open(path) as f:
    manifest = json.load(f)
  manifest['splits']['validation']['shards'][0]['num_examples'] += 1
  with open(path, 'w') as f:
    json.dump(manifest, f)
  with pytest.raises(tf.errors.FailedPreconditionError):
    list(imagerecords.load(data_dir, 'validation', 4, 32))


def test_repeat_yields_more_than_one_epoch(sample_dataset):
  n = imagerecords.num_examples(sample_dataset, 'validation')
  ds = imagerecords.load(sample_dataset, 'validation', 4, 32, repeat=True)
  assert sum(int(images.shape[0]) for images, _ in ds.take(n)) >= 3 * n


def test_num_examples_and_class_names_match_manifest_and_labels(sample_dataset):
  with open(os.path.join(sample_dataset, contract.MANIFEST_FILE)) as f:
    manifest = json.load(f)
  with open(os.path.join(sample_dataset, contract.LABELS_FILE)) as f:
    labels = f.read().splitlines()
  assert imagerecords.class_names(sample_dataset) == labels == manifest['classes']
  assert labels == ['ants', 'bees']
  for split in SPLITS:
    info = manifest['splits'][split]
    assert imagerecords.num_examples(sample_dataset, split) == info['num_examples']
    assert info['num_examples'] == len(_records(sample_dataset, split))
    files = metadata.shard_files(sample_dataset, split)
    assert files == sorted(files) and len(files) == info['num_shards']
  total = sum(imagerecords.num_examples(sample_dataset, s) for s in SPLITS)
  assert total == 48  # every bundled photo became an example of one split


def test_directory_without_success_marker_is_refused(sample_dataset, tmp_path):
  data_dir = _copy(sample_dataset, tmp_path / 'out')
  os.remove(os.path.join(data_dir, contract.SUCCESS_FILE))
  for read in (lambda: imagerecords.load(data_dir, 'train', 4),
               lambda: imagerecords.num_examples(data_dir, 'train'),
               lambda: imagerecords.class_names(data_dir)):
    with pytest.raises(imagerecords.IncompleteDatasetError) as error:
      read()
    assert data_dir in str(error.value) and contract.SUCCESS_FILE in str(error.value)
  assert issubclass(imagerecords.IncompleteDatasetError, FileNotFoundError)


def test_unknown_split_names_the_available_splits(sample_dataset):
  with pytest.raises(ValueError, match='test') as error:
    imagerecords.load(sample_dataset, 'test', 4)
  for split in SPLITS:
    assert split in str(error.value)


def test_unlabeled_dataset_yields_images_only(sample_dataset, tmp_path):
  data_dir = _copy(sample_dataset, tmp_path / 'out')
  path = os.path.join(data_dir, contract.MANIFEST_FILE)
  with open(path) as f:
    manifest = json.load(f)
  manifest['classes'] = []
  with open(path, 'w') as f:
    json.dump(manifest, f)
  ds = imagerecords.load(data_dir, 'validation', 4, 32)
  assert isinstance(ds.element_spec, tf.TensorSpec)
  assert next(iter(ds)).shape[1:] == (32, 32, 3)


@pytest.mark.parametrize('split', SPLITS)
@pytest.mark.parametrize('extra_pipelines', [0, 1])
def test_input_pipelines_together_cover_each_example_once(sample_dataset, split, extra_pipelines):
  # 2 pipelines shard by file; more pipelines than files shard by record.
  num_files = len(metadata.shard_files(sample_dataset, split))
  num_pipelines = 2 if not extra_pipelines else num_files + 1
  expected = sorted(r[contract.FILENAME] for r in _records(sample_dataset, split))
  seen = []
  for pipeline_id in range(num_pipelines):
    context = tf.distribute.InputContext(num_input_pipelines=num_pipelines,
                                         input_pipeline_id=pipeline_id,
                                         num_replicas_in_sync=num_pipelines)
    ds = imagerecords.load(sample_dataset, split, batch_size=2 * num_pipelines, image_size=32,
                           input_context=context, return_filenames=True)
    assert ds.element_spec[0].shape[0] in (None, 2)  # per-replica batch size
    for images, _, names in ds:
      assert images.shape[0] <= 2
      seen.extend(names.numpy().tolist())
  assert sorted(seen) == expected


@pytest.mark.parametrize('encode', [tf.io.encode_png, tf.io.encode_jpeg])
@pytest.mark.parametrize('training', [False, True])
def test_grayscale_and_png_images_become_rgb(encode, training):
  gray = tf.cast(tf.reshape(tf.range(30 * 50) % 256, [30, 50, 1]), tf.uint8)
  image = preprocessing.preprocess_image(encode(gray), 24, training, seed=tf.constant([1, 2]))
  assert image.shape == (24, 24, 3) and image.dtype == tf.float32
  assert float(tf.reduce_min(image)) >= 0.0 and float(tf.reduce_max(image)) <= 1.0
  np.testing.assert_array_equal(image[..., 0], image[..., 2])


def test_keras_model_trains_one_epoch(sample_dataset):
  keras = tf.keras
  num_classes = len(imagerecords.class_names(sample_dataset))
  train = imagerecords.load(sample_dataset, 'train', 8, 32, training=True, seed=0)
  validation = imagerecords.load(sample_dataset, 'validation', 8, 32)
  model = keras.Sequential([
      keras.Input((32, 32, 3)),
      keras.layers.Conv2D(4, 3, strides=2, activation='relu'),
      keras.layers.GlobalAveragePooling2D(),
      keras.layers.Dense(num_classes),
  ])
  model.compile(optimizer='adam',
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=['accuracy'])
  history = model.fit(train, epochs=1, validation_data=validation, verbose=0)
  assert np.isfinite(history.history['loss'][0])
  assert np.isfinite(history.history['val_loss'][0])
