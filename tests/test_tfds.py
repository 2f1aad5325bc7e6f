"""TensorFlow Datasets reads the job's output as an external dataset, through its own API
(``tfds.builder_from_directory``), with the metadata files the job writes."""

import collections
import dataclasses
import json

import pytest
from imagerecords import manifest_schema
from imagerecords import manifest_schema

from tests.helpers import SAMPLES, all_records, convert, manifest_of, shared_data


def _tfds():
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  return tfds


def test_as_dataset_yields_every_record_with_its_image_and_label(sample_dataset):
  builder = _tfds().builder_from_directory(sample_dataset)
  manifest = manifest_of(sample_dataset)
  assert builder.info.features['image/class/label'].names == manifest['classes']
  for split, info in manifest['splits'].items():
    assert builder.info.splits[split].num_examples == info['num_examples']
    expected = collections.Counter(
        (record['image/filename'], record['image/class/label'])
        for record_split, record in all_records(sample_dataset) if record_split == split)
    got = collections.Counter()
    for example in _tfds().as_numpy(builder.as_dataset(split=split)):
      image = example['image/encoded']
      assert image.dtype.name == 'uint8' and image.ndim == 3 and image.shape[2] == 3
      assert image.shape[:2] == (example['image/height'], example['image/width'])
      got[(example['image/filename'], example['image/class/label'])] += 1
    assert got == expected


def test_split_slicing_and_supervised_keys(sample_dataset):
  builder = _tfds().builder_from_directory(sample_dataset)
  num_train = manifest_of(sample_dataset)['splits']['train']['num_examples']
  tenth = list(_tfds().as_numpy(builder.as_dataset(split='train[:10%]')))
  assert abs(len(tenth) - num_train / 10) <= 1
  rest = list(_tfds().as_numpy(builder.as_dataset(split='train[10%:]')))
  assert len(tenth) + len(rest) == num_train
  names = {example['image/filename'] for example in tenth + rest}
  assert len(names) == num_train
  for image, label in _tfds().as_numpy(builder.as_dataset(split='train[:2]', as_supervised=True)):
    assert image.ndim == 3 and 0 <= label < len(builder.info.features['image/class/label'].names)


@pytest.mark.slow
def test_unlabeled_output_is_readable_without_class_features(tmp_path):
  out = tmp_path / 'out'
  assert convert(SAMPLES / 'bees', out, '--label_source=none', '--image_size=32',
                 '--num_shards=2') == 0
  builder = _tfds().builder_from_directory(str(out))
  assert 'image/class/label' not in builder.info.features
  assert builder.info.supervised_keys is None
  manifest = manifest_of(out)
  for split, info in manifest['splits'].items():
    assert len(list(builder.as_dataset(split=split))) == info['num_examples']


@pytest.mark.slow
def test_segmentation_output_yields_images_with_their_masks(tmp_path):
  out = tmp_path / 'out'
  assert convert(shared_data('segmentation/voc_palette'), out, '--masks=voc',
                 '--image_size=64', '--num_shards=1') == 0
  builder = _tfds().builder_from_directory(str(out))
  for split, info in manifest_of(out)['splits'].items():
    examples = list(_tfds().as_numpy(builder.as_dataset(split=split)))
    assert len(examples) == info['num_examples']
    for example in examples:
      mask = example['image/segmentation/class/encoded']
      assert mask.shape == example['image/encoded'].shape[:2] + (1,)


@pytest.mark.slow
def test_raw_pixels_are_read_as_bytes_of_the_stored_shape(tmp_path):
  import numpy as np  # pylint: disable=import-outside-toplevel
  out = tmp_path / 'out'
  assert convert(SAMPLES, out, '--image_format=raw', '--image_size=16',
                 '--resize_mode=center_crop', '--num_shards=1') == 0
  builder = _tfds().builder_from_directory(str(out))
  num_examples = 0
  for example in _tfds().as_numpy(builder.as_dataset(split='train')):
    pixels = np.frombuffer(example['image/encoded'], np.uint8)
    assert pixels.size == example['image/height'] * example['image/width'] * example[
        'image/channels'] == 16 * 16 * 3
    num_examples += 1
  assert num_examples == manifest_of(out)['splits']['train']['num_examples']


def test_gzip_shards_get_no_tfds_metadata():
  from transforms.outputs import tfds_metadata  # pylint: disable=import-outside-toplevel
  manifest = manifest_schema.Manifest(
      tool=manifest_schema.ToolInfo(name=manifest_schema.TOOL_NAME, version='0.1.0'),
      classes=['a'],
      image=manifest_schema.ImageSection(format='jpeg', channels=3, image_size=16,
                                         resize_mode='shorter_side'), input_dir='x',
      splits={'train': manifest_schema.SplitEntry(num_examples=0, num_shards=0, compressed=True)})
  assert tfds_metadata.metadata_files(manifest) == {}
  manifest = dataclasses.replace(manifest, splits={
      'train': manifest_schema.SplitEntry(num_examples=0, num_shards=0, compressed=False)})
  files = tfds_metadata.metadata_files(manifest)
  assert json.loads(files['dataset_info.json'])['splits'][0]['filepathTemplate'] == (
      '{SPLIT}-{SHARD_X_OF_Y}.{FILEFORMAT}')

