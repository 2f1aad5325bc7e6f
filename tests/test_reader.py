"""Tests of the reader distribution, ``imagerecords``, against a real output directory.

``sample_dataset`` (tests/conftest.py) is the path of an output directory written by the Beam
job from the bundled photos in samples/hymenoptera: splits train and validation, 64 x 64 JPEGs.
The expected contents come from reading the shards directly (a glob, not the manifest), so the
reader is checked against the records themselves.
"""

import gzip
import hashlib
import json
import os
import pathlib
import re
import shutil
import uuid

import numpy as np
import pytest
import tensorflow as tf

import imagerecords
from imagerecords import contract
from imagerecords import manifest_schema
from imagerecords import metadata
from imagerecords import preprocessing
from tests.helpers import convert, manifest_of, shared_data

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


@pytest.mark.slow
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
@pytest.mark.slow
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


# --- the shards are the manifest's (issue 22, item 5) ---------------------------------------------
# Three outputs of the same layout (splits train: 2 shards of 6 records, validation: 1 shard of 6),
# written by the job from real photos: hymenoptera's ants and bees; the same photos with the two
# class folders swapped (every record the same size, its label the other class); and cats and
# dogs of catdog_filenames, another data set with the same record counts.

PHOTOS = {'train': 6, 'validation': 3}  # per class and split


def _photo_input(root, classes):
  """Copies photos into ``root/<split>/<class>/``; ``classes``: class folder -> its photos."""
  for name, photos in classes.items():
    start = 0
    for split, count in PHOTOS.items():
      folder = root / split / name
      folder.mkdir(parents=True)
      for photo in photos[start:start + count]:
        shutil.copyfile(photo, folder / photo.name)
      start += count
  return root


@pytest.fixture(scope='module')
def three_outputs(tmp_path_factory):
  """{'ours', 'relabelled', 'theirs'} -> output dir, each converted by the job at 64 px."""
  hymenoptera = shared_data('hymenoptera') / 'train'
  catdog = shared_data('catdog_filenames') / 'train'
  wanted = sum(PHOTOS.values())
  ants = sorted((hymenoptera / 'ants').glob('*.jpg'))[:wanted]
  bees = sorted((hymenoptera / 'bees').glob('*.jpg'))[:wanted]
  by_number = lambda path: int(path.name.split('.')[1])
  inputs = {'ours': {'ants': ants, 'bees': bees},
            'relabelled': {'ants': bees, 'bees': ants},
            'theirs': {'cat': sorted(catdog.glob('cat.*.jpg'), key=by_number)[:wanted],
                       'dog': sorted(catdog.glob('dog.*.jpg'), key=by_number)[:wanted]}}
  outputs = {}
  for name, classes in inputs.items():
    root = tmp_path_factory.mktemp(name)
    out = root / 'out'
    assert convert(_photo_input(root / 'in', classes), out, '--image_size=64',
                   '--resize_mode=center_crop', '--num_shards=train=2,validation=1') == 0
    outputs[name] = out
  return outputs


def _entry(data_dir, split, index):
  """The manifest's entry of shard ``index`` of ``split``."""
  return manifest_of(data_dir)['splits'][split]['shards'][index]


def _swap_in(data_dir, other_dir, split, index):
  """Replaces shard ``index`` of ``split`` in ``data_dir`` by ``other_dir``'s file of the same
  name; returns its path."""
  name = _entry(data_dir, split, index)['file']
  shutil.copyfile(other_dir / name, data_dir / name)
  return data_dir / name


@pytest.mark.slow
def test_the_manifest_records_each_shards_size_and_sha256(three_outputs):
  for split, info in manifest_of(three_outputs['ours'])['splits'].items():
    assert len(info['shards']) == {'train': 2, 'validation': 1}[split]
    for entry in info['shards']:
      stored = (three_outputs['ours'] / entry['file']).read_bytes()
      assert entry['bytes'] == len(stored)
      assert entry['sha256'] == hashlib.sha256(stored).hexdigest()


def test_a_gzip_shard_is_counted_and_digested_as_stored(three_outputs, tmp_path):
  from transforms.outputs.write import summarize_shard  # pylint: disable=C0415
  entry = _entry(three_outputs['ours'], 'train', 0)
  compressed = gzip.compress((three_outputs['ours'] / entry['file']).read_bytes())
  path = tmp_path / (entry['file'] + contract.GZIP_SUFFIX)
  path.write_bytes(compressed)
  assert summarize_shard(str(path)) == (str(path), entry['num_examples'],
                                        hashlib.sha256(compressed).hexdigest(), len(compressed))


def test_a_shard_of_another_data_set_is_refused_naming_it(three_outputs, tmp_path):
  data_dir = pathlib.Path(_copy(three_outputs['ours'], tmp_path / 'out'))
  expected = _entry(data_dir, 'train', 1)
  # the case: the same number of records, so no count tells them apart
  assert _entry(three_outputs['theirs'], 'train', 1)['num_examples'] == expected['num_examples']
  shard = _swap_in(data_dir, three_outputs['theirs'], 'train', 1)
  found = shard.stat().st_size
  assert found != expected['bytes']

  for read in (lambda: imagerecords.load(str(data_dir), 'train', 4),
               lambda: imagerecords.load(str(data_dir), 'train', 4, training=True, seed=0),
               lambda: imagerecords.load(str(data_dir), 'train', 4, verify_shards='sha256'),
               lambda: metadata.shard_files(str(data_dir), 'train')):
    with pytest.raises(imagerecords.ShardMismatchError) as error:
      read()
    assert isinstance(error.value, ValueError)
    assert (error.value.path, error.value.field) == (str(shard), 'bytes')
    assert (error.value.expected, error.value.found) == (expected['bytes'], found)
    message = str(error.value)
    assert str(shard) in message and 'verify_shards=False' in message
    assert f'holds {found} bytes, the manifest says {expected["bytes"]}' in message
  # sharded by file under tf.distribute, a pipeline checks the files it reads: shard 0 is sound
  contexts = [tf.distribute.InputContext(2, pipeline, 2) for pipeline in (0, 1)]
  assert len(imagerecords.load(str(data_dir), 'train', 4, input_context=contexts[0])) == 3
  with pytest.raises(imagerecords.ShardMismatchError, match='train-00001-of-00002'):
    imagerecords.load(str(data_dir), 'train', 4, input_context=contexts[1])
  # the other split is untouched and still reads
  assert len(_filenames(imagerecords.load(str(data_dir), 'validation', 4,
                                          return_filenames=True))) == 6
  first = _swap_in(data_dir, three_outputs['theirs'], 'train', 0)
  with pytest.raises(imagerecords.ShardMismatchError) as error:
    imagerecords.load(str(data_dir), 'train', 4)
  assert error.value.path == str(first)
  assert f'; 1 more shard differs too: {shard.name}' in str(error.value)


def test_the_off_switch_reads_the_replaced_shard_as_it_is(three_outputs, tmp_path):
  data_dir = pathlib.Path(_copy(three_outputs['ours'], tmp_path / 'out'))
  _swap_in(data_dir, three_outputs['theirs'], 'train', 1)
  names = _filenames(imagerecords.load(str(data_dir), 'train', 4, return_filenames=True,
                                       verify_shards=False))
  assert len(names) == 12
  assert sum(name.startswith(b'train/cat/') or name.startswith(b'train/dog/')
             for name in names) == 6  # the cats and dogs, read as ants and bees
  assert metadata.shard_files(str(data_dir), 'train', verify_shards=False) == [
      str(data_dir / entry['file']) for entry in manifest_of(data_dir)['splits']['train']['shards']]


def test_an_untouched_output_passes_every_check(three_outputs):
  data_dir = str(three_outputs['ours'])
  for verify in (True, 'sha256'):
    for split, count in (('train', 12), ('validation', 6)):
      ds = imagerecords.load(data_dir, split, 4, return_filenames=True, verify_shards=verify)
      assert len(_filenames(ds)) == imagerecords.num_examples(data_dir, split) == count
  with pytest.raises(ValueError, match='verify_shards must be one of'):
    imagerecords.load(data_dir, 'train', 4, verify_shards='size')


def _labels_by_photo(data_dir):
  """Photo file name -> class id, over the validation split as ``load`` yields it."""
  return {os.path.basename(name.decode()): int(label) for _, label, name in imagerecords.load(
      str(data_dir), 'validation', 6, return_filenames=True).unbatch().as_numpy_iterator()}


def test_the_same_photos_with_other_labels_are_refused_by_their_sha256(three_outputs, tmp_path):
  data_dir = pathlib.Path(_copy(three_outputs['ours'], tmp_path / 'out'))
  expected = _entry(data_dir, 'validation', 0)
  shard = _swap_in(data_dir, three_outputs['relabelled'], 'validation', 0)
  # Same photos, names and class texts of the same length: the size cannot tell them apart.
  assert shard.stat().st_size == expected['bytes']
  # so the default check reads it: every photo comes with the other class
  assert {photo: 1 - label for photo, label in _labels_by_photo(data_dir).items()} == (
      _labels_by_photo(three_outputs['ours']))

  with pytest.raises(imagerecords.ShardMismatchError) as error:
    imagerecords.load(str(data_dir), 'validation', 4, verify_shards='sha256')
  found = hashlib.sha256(shard.read_bytes()).hexdigest()
  assert (error.value.path, error.value.field) == (str(shard), 'sha256')
  assert (error.value.expected, error.value.found) == (expected['sha256'], found)
  assert f'its SHA-256 is {found}, the manifest says {expected["sha256"]}' in str(error.value)


def test_a_manifest_without_digests_cannot_be_checked_by_sha256(three_outputs, tmp_path):
  data_dir = pathlib.Path(_copy(three_outputs['ours'], tmp_path / 'out'))
  manifest = manifest_of(data_dir)
  for info in manifest['splits'].values():
    for entry in info['shards']:
      del entry['sha256']  # as an older job wrote it
  (data_dir / contract.MANIFEST_FILE).write_text(json.dumps(manifest))
  assert len(_filenames(imagerecords.load(str(data_dir), 'train', 4, return_filenames=True))) == 12
  with pytest.raises(ValueError, match='records no SHA-256 for .*train-00000-of-00002'):
    imagerecords.load(str(data_dir), 'train', 4, verify_shards='sha256')


def test_shards_on_a_tensorflow_file_system_url_are_checked(three_outputs):
  """``ram://``, TensorFlow's in-memory file system: a URL read through ``tf.io.gfile`` as
  ``gs://`` is, with no server."""
  data_dir = f'ram://readercheck-{uuid.uuid4().hex}/out'
  tf.io.gfile.makedirs(data_dir)
  for path in three_outputs['ours'].iterdir():
    if path.is_file():
      tf.io.gfile.copy(str(path), f'{data_dir}/{path.name}')
  for verify in (True, 'sha256'):
    assert len(_filenames(imagerecords.load(data_dir, 'train', 4, return_filenames=True,
                                            verify_shards=verify))) == 12
  name = _entry(three_outputs['ours'], 'train', 1)['file']
  tf.io.gfile.copy(str(three_outputs['theirs'] / name), f'{data_dir}/{name}', overwrite=True)
  with pytest.raises(imagerecords.ShardMismatchError, match=f'{data_dir}/{name} is not the'):
    imagerecords.load(data_dir, 'train', 4)
  tf.io.gfile.remove(f'{data_dir}/{name}')
  with pytest.raises(imagerecords.IncompleteDatasetError, match=f'{data_dir}/{name} is missing'):
    imagerecords.load(data_dir, 'train', 4)
  assert len(imagerecords.load(data_dir, 'train', 4, verify_shards=False)) == 3  # as listed


def test_inspect_names_a_sound_shard_that_is_not_the_manifests(three_outputs, tmp_path, capsys):
  from imagerecords import inspect as inspect_lib  # pylint: disable=import-outside-toplevel
  data_dir = pathlib.Path(_copy(three_outputs['ours'], tmp_path / 'out'))
  shard = _swap_in(data_dir, three_outputs['relabelled'], 'validation', 0)
  found = hashlib.sha256(shard.read_bytes()).hexdigest()
  status = inspect_lib.main([str(data_dir), '--out', str(tmp_path / 'pictures')])
  lines = capsys.readouterr().out.splitlines()
  assert status == 1
  assert [line for line in lines if line.startswith(shard.name)] == [
      f'{shard.name}: not the shard manifest.json lists: its SHA-256 is {found}, the manifest '
      f'says {_entry(data_dir, "validation", 0)["sha256"]} (replaced, edited or damaged since '
      'the job wrote it)']


@pytest.mark.parametrize('splits, message', [
    ({'train': None}, "splits['train'] is null, not an object"),
    ({'train': [1, 2]}, "splits['train'] is an array, not an object"),
    ({'train': {'num_examples': 1, 'num_shards': 1, 'shards': None}},
     "splits['train'].shards is null, not an array"),
    ({'train': {'num_examples': 1, 'num_shards': 1, 'shards': ['a']}},
     "splits['train'].shards[0] is a string (\"a\"), not an object"),
    ({'train': {'num_shards': 1}}, "splits['train'] has no \"num_examples\""),
    ({'train': {'num_examples': '1', 'num_shards': 1}},
     "splits['train'].num_examples is a string (\"1\"), not an integer"),
    ({'train': {'num_examples': True, 'num_shards': 1}},
     "splits['train'].num_examples is a boolean (true), not an integer"),
    ([['train', 1]], 'splits is an array, not an object'),
])
def test_a_malformed_split_entry_is_a_value_error_naming_the_split(splits, message):
  """Manifest.from_json keeps its promise: a null, an array, a split without its counts or a
  count of another type is a ValueError that says which split and key (not an AttributeError
  from deep inside)."""
  with pytest.raises(ValueError, match=re.escape(message)):
    manifest_schema.Manifest.from_json({'format_version': 1, 'tool': {'name': 'imagerecords',
                                                               'version': '0.1.0'},
                                 'image': {'format': 'jpeg', 'channels': 3, 'image_size': 32,
                                           'resize_mode': 'shorter_side'},
                                 'splits': splits})
