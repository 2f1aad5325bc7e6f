"""The statistics steps (--stats: Beam combiners; --stats=tft: tensorflow-transform and its saved
transform) and the reader's use of either.

Real photos: a 60-image subset of ../shared/data/hymenoptera (its train/ and val/ folders,
unbalanced on purpose), converted once per module at 48 px (shorter side) with --stats=tft and
once with the default --stats, and the bundled samples converted by the session fixture (center
crop, multi-process, the default --stats, as the README does).
"""

import io
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.helpers import all_records, convert, manifest_of, shared_data

# images taken per split folder and class: train is unbalanced (25 ants, 15 bees)
_SUBSET = {('train', 'ants'): 25, ('train', 'bees'): 15, ('val', 'ants'): 10, ('val', 'bees'): 10}


@pytest.fixture(scope='module')
def subset(tmp_path_factory) -> pathlib.Path:
  """The first images (by name) of each split/class folder of shared hymenoptera."""
  source = shared_data('hymenoptera')
  root = tmp_path_factory.mktemp('hymenoptera') / 'in'
  for (split, name), count in _SUBSET.items():
    target = root / split / name
    target.mkdir(parents=True)
    for path in sorted((source / split / name).glob('*.jpg'))[:count]:
      shutil.copy(path, target / path.name)
  return root


@pytest.fixture(scope='module')
def converted(subset, tmp_path_factory) -> pathlib.Path:
  """The subset converted with --stats=tft: statistics and transform_fn/."""
  out = tmp_path_factory.mktemp('hymenoptera') / 'out'
  assert convert(subset, out, '--image_size=48', '--num_shards=2', '--stats=tft') == 0
  return out


@pytest.fixture(scope='module')
def converted_exact(subset, tmp_path_factory) -> pathlib.Path:
  """The subset converted with the default --stats: statistics, no transform_fn/."""
  out = tmp_path_factory.mktemp('hymenoptera') / 'out_exact'
  assert convert(subset, out, '--image_size=48', '--num_shards=2', '--stats') == 0
  return out


def _stored_pixels(output_dir, split: str) -> np.ndarray:
  """Every pixel of every stored image of ``split``, decoded with Pillow: float64 [N, 3]."""
  pixels = [np.asarray(Image.open(io.BytesIO(record['image/encoded'])).convert('RGB'),
                       np.float64).reshape(-1, 3)
            for record_split, record in all_records(output_dir) if record_split == split]
  return np.concatenate(pixels)


@pytest.mark.slow
@pytest.mark.parametrize('output', ['converted', 'converted_exact'])
def test_statistics_equal_numpy_over_the_stored_training_images(output, request):
  converted = request.getfixturevalue(output)
  statistics = manifest_of(converted)['statistics']
  pixels = _stored_pixels(converted, 'train')
  assert statistics['split'] == 'train'
  assert statistics['num_examples'] == sum(n for (s, _), n in _SUBSET.items() if s == 'train')
  assert statistics['num_pixels'] == len(pixels)
  np.testing.assert_allclose(statistics['pixel_mean'], pixels.mean(axis=0), rtol=1e-3)
  np.testing.assert_allclose(statistics['pixel_std'], pixels.std(axis=0), rtol=1e-3)


def test_default_stats_equal_tft_and_write_no_transform(converted, converted_exact):
  """--stats (Beam combiners) and --stats=tft give the same numbers (the TFT ones pass through
  float32) and the same model input; only --stats=tft writes transform_fn/."""
  # pylint: disable=import-outside-toplevel
  import tensorflow as tf

  import imagerecords
  from imagerecords import transform
  exact, tft = manifest_of(converted_exact)['statistics'], manifest_of(converted)['statistics']
  assert exact['transform_fn'] is None and tft['transform_fn'] == 'transform_fn'
  assert not (converted_exact / 'transform_fn').exists()
  assert not (converted_exact / 'transformed_metadata').exists()
  for key in ('split', 'num_examples', 'num_pixels', 'class_frequencies'):
    assert exact[key] == tft[key], key
  np.testing.assert_allclose(exact['pixel_mean'], tft['pixel_mean'], rtol=1e-6)
  np.testing.assert_allclose(exact['pixel_std'], tft['pixel_std'], rtol=1e-6)
  with pytest.raises(FileNotFoundError, match='--stats=tft'):
    transform.transform_dir(str(converted_exact))
  encoded = tf.constant([record['image/encoded'] for split, record in all_records(converted)
                         if split == 'val'][:4])
  np.testing.assert_allclose(imagerecords.preprocessing_layer(str(converted_exact))(encoded),
                             imagerecords.preprocessing_layer(str(converted))(encoded),
                             atol=1e-4)


def test_class_frequencies_and_class_weights_follow_the_training_split(converted):
  import imagerecords  # pylint: disable=import-outside-toplevel
  manifest = manifest_of(converted)
  frequencies = manifest['statistics']['class_frequencies']
  assert frequencies == {name: n for (split, name), n in _SUBSET.items() if split == 'train'}
  assert frequencies == manifest['splits']['train']['class_counts']
  total = sum(frequencies.values())
  expected = {class_id: total / (len(frequencies) * frequencies[name])
              for class_id, name in enumerate(manifest['classes'])}
  weights = imagerecords.class_weights(str(converted))
  assert weights.keys() == expected.keys()
  for class_id, weight in expected.items():
    assert weights[class_id] == pytest.approx(weight)
  assert weights[manifest['classes'].index('bees')] > 1 > weights[
      manifest['classes'].index('ants')]


def test_transform_is_written_in_tft_layout_and_readable_by_tft(converted):
  # pylint: disable=import-outside-toplevel
  import tensorflow as tf
  import tensorflow_transform as tft

  import imagerecords
  assert (converted / 'transform_fn' / 'saved_model.pb').is_file()
  assert (converted / 'transformed_metadata').is_dir()
  assert not (converted / '.staging-tft').exists()
  output = tft.TFTransformOutput(str(converted))
  assert {'image', 'pixel_mean', 'pixel_std'} <= set(output.transformed_feature_spec())
  # TFT's own API needs the encoded image alone (the analysis inputs feed no output), and gives
  # what the reader's layer gives
  encoded = tf.constant([record['image/encoded'] for split, record in all_records(converted)
                         if split == 'val'][:4])
  by_tft = output.transform_raw_features({'image/encoded': encoded})['image']
  by_layer = imagerecords.preprocessing_layer(str(converted))(encoded)
  assert by_tft.shape == (4, 48, 48, 3)
  np.testing.assert_allclose(by_tft.numpy(), by_layer.numpy(), atol=1e-5)


@pytest.mark.parametrize('image_format,channels', [
    ('jpeg', 3), ('jpeg', 1), ('png', 3), ('raw', 3), ('original', 3), ('original', 1)])
def test_pixel_sums_are_exact_over_the_pixels_tensorflow_decodes(image_format, channels):
  # pylint: disable=import-outside-toplevel
  import tensorflow as tf

  from transforms.image import codec
  from transforms.image.pixel_sums import pixel_sums, stored_pixels
  spec = codec.ImageSpec(image_size=64, image_format=image_format, channels=channels)
  for path in sorted((shared_data('hymenoptera') / 'val' / 'bees').glob('*.jpg'))[:6]:
    encoded = codec.convert(path.read_bytes(), spec)
    sums = pixel_sums(stored_pixels(encoded, channels, original=image_format == 'original'))
    if image_format == 'raw':
      expected = np.frombuffer(encoded.data, np.uint8).reshape(-1, channels)
    else:  # what the reader decodes (JPEG: TensorFlow's accurate integer IDCT)
      expected = tf.io.decode_jpeg(encoded.data, channels=channels,
                                   dct_method='INTEGER_ACCURATE') if encoded.format == 'jpeg' \
          else tf.io.decode_png(encoded.data, channels=channels)
      expected = expected.numpy().reshape(-1, channels)
    expected = expected.astype(np.int64)
    assert sums.num_pixels == len(expected), path.name
    assert list(sums.sums) == expected.sum(axis=0).tolist(), path.name
    assert list(sums.squares) == (expected * expected).sum(axis=0).tolist(), path.name


def test_pixel_sums_of_large_and_saturated_images_are_exact_in_bands():
  # pylint: disable=import-outside-toplevel
  from transforms.image import pixel_sums as sums_module
  photo = np.asarray(Image.open(next((shared_data('hymenoptera') / 'val' / 'bees').glob(
      '*.jpg'))).convert('RGB'))
  tiled = np.tile(photo, (6, 8, 1))  # over _BAND_PIXELS: summed band by band
  white = np.full((1500, 1200, 1), 255, np.uint8)  # every square the largest: 255^2
  assert tiled.shape[0] * tiled.shape[1] > sums_module._BAND_PIXELS  # pylint: disable=W0212
  for pixels in (photo, tiled, white, photo[::3, 1::2], photo[:1, :1, 1:2]):
    flat = pixels.reshape(-1, pixels.shape[2]).astype(np.int64)
    got = sums_module.pixel_sums(pixels)
    assert got.sums == tuple(flat.sum(axis=0).tolist())
    assert got.squares == tuple((flat * flat).sum(axis=0).tolist())
    assert got.num_pixels == len(flat)
    assert all(type(value) is int for value in got.sums + got.squares)
  with pytest.raises(ValueError, match='uint8'):
    sums_module.pixel_sums(photo.astype(np.uint16))


def test_add_pixel_sums_adds_exactly_and_gives_zeros_for_nothing():
  from transforms.image.pixel_sums import PixelSums  # pylint: disable=import-outside-toplevel
  from transforms.analysis.statistics import AddPixelSums  # pylint: disable=import-outside-toplevel
  combine = AddPixelSums(channels=3)
  big = PixelSums((2**40, 1, 2), (2**60, 3, 4), 2**35)
  small = PixelSums((5, 6, 7), (8, 9, 10), 11)
  one = combine.add_input(combine.create_accumulator(), big)
  other = combine.add_input(combine.create_accumulator(), small)
  assert combine.extract_output(combine.merge_accumulators([one, other])) == PixelSums(
      (2**40 + 5, 7, 9), (2**60 + 8, 12, 14), 2**35 + 11)
  assert combine.extract_output(combine.create_accumulator()) == PixelSums((0,) * 3, (0,) * 3, 0)


def _compare_layer_with_load(output_dir, split: str, image_size: int):
  """Largest |difference| between load(normalize=True) in evaluation and the Keras layer fed
  the same records' encoded images, and the number of images compared."""
  # pylint: disable=import-outside-toplevel
  import tensorflow as tf

  import imagerecords
  encoded = {record['image/filename']: record['image/encoded']
             for record_split, record in all_records(output_dir) if record_split == split}
  encoded_images = tf.keras.Input(shape=(), dtype=tf.string)
  layer = imagerecords.preprocessing_layer(str(output_dir))
  serving = tf.keras.Model(encoded_images, layer(encoded_images))
  largest, count = 0., 0
  for images, _, names in imagerecords.load(str(output_dir), split, batch_size=8,
                                            image_size=image_size, normalize=True,
                                            return_filenames=True):
    served = serving(tf.constant([encoded[name] for name in names.numpy()]))
    largest = max(largest, float(tf.reduce_max(tf.abs(served - images))))
    count += len(names)
  return largest, count


@pytest.mark.parametrize('output', ['converted', 'converted_exact'])
def test_preprocessing_layer_equals_load_normalize_in_evaluation(output, request):
  converted = request.getfixturevalue(output)
  largest, count = _compare_layer_with_load(converted, 'val', image_size=48)
  assert count == manifest_of(converted)['splits']['val']['num_examples']
  assert largest <= 1e-5


def test_preprocessing_layer_equals_load_normalize_on_the_samples(sample_dataset):
  largest, count = _compare_layer_with_load(sample_dataset, 'validation', image_size=64)
  assert count == manifest_of(sample_dataset)['splits']['validation']['num_examples']
  assert largest <= 1e-5


def test_a_serving_model_with_the_layer_exports_with_the_transform_inside(converted, tmp_path):
  # pylint: disable=import-outside-toplevel
  import tensorflow as tf

  import imagerecords
  encoded_images = tf.keras.Input(shape=(), dtype=tf.string)
  features = imagerecords.preprocessing_layer(str(converted))(encoded_images)
  model = tf.keras.Model(encoded_images, tf.keras.layers.GlobalAveragePooling2D()(features))
  model.export(str(tmp_path / 'serving'))
  stored = [record['image/encoded'] for _, record in all_records(converted)][:3]
  served = tf.saved_model.load(str(tmp_path / 'serving')).serve(tf.constant(stored))
  np.testing.assert_allclose(served.numpy(), model(tf.constant(stored)).numpy(), atol=1e-6)
  # What the export must compute, worked out without TensorFlow: Pillow's pixels (the accurate
  # IDCT, as the reader decodes), the evaluation's centred square (already the 48 px size),
  # normalised with the manifest's statistics, then pooled.
  statistics = manifest_of(converted)['statistics']
  mean, std = (np.array(statistics[key]) for key in ('pixel_mean', 'pixel_std'))
  expected = []
  for data in stored:
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert('RGB'), np.float64)
    height, width, _ = pixels.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = pixels[top:top + side, left:left + side]
    assert side == 48
    expected.append(((square - mean) / std).mean(axis=(0, 1)))
  # decode_and_crop_jpeg decodes only the window: its chroma upsampling at the window's edges
  # differs from a full decode's by a level here and there (up to 0.0008 seen here); without
  # the normalisation the numbers would be off by about 100, without the mean by about 2.
  np.testing.assert_allclose(served.numpy(), np.array(expected), atol=2e-3)


@pytest.mark.slow
def test_load_normalize_centres_the_training_split_on_real_photos(subset, tmp_path):
  """The statistics describe the pixels the reader yields: every pixel of the training split
  as ``load(training=False, normalize=True)`` gives it has mean 0 and std 1 per channel.

  With center_crop at the reader's size every image passes through undecimated, so the only
  difference left is the decoder's: TensorFlow's default fast IDCT leaves the mean about 0.02
  off (red and blue 1.1-1.3 levels low, std about 60), four times the tolerance.
  """
  # pylint: disable=import-outside-toplevel
  import imagerecords
  out = tmp_path / 'out'
  assert convert(subset, out, '--resize_mode=center_crop', '--image_size=96', '--num_shards=2',
                 '--stats=true') == 0
  pixels = np.concatenate([
      images.numpy().astype(np.float64).reshape(-1, 3)
      for images, _ in imagerecords.load(str(out), 'train', batch_size=16, image_size=96,
                                         training=False, normalize=True)])
  train_images = sum(n for (split, _), n in _SUBSET.items() if split == 'train')
  assert len(pixels) == train_images * 96 * 96 == manifest_of(out)['statistics']['num_pixels']
  np.testing.assert_allclose(pixels.mean(axis=0), 0., atol=0.005)
  np.testing.assert_allclose(pixels.std(axis=0), 1., atol=0.005)


def test_normalize_uses_the_manifest_statistics(converted):
  # pylint: disable=import-outside-toplevel
  import tensorflow as tf

  import imagerecords
  statistics = manifest_of(converted)['statistics']
  plain = imagerecords.load(str(converted), 'val', batch_size=64, image_size=48)
  normalized = imagerecords.load(str(converted), 'val', batch_size=64, image_size=48,
                                 normalize=True, dtype=tf.float16)
  (images, _), (normalized_images, _) = next(iter(plain)), next(iter(normalized))
  assert normalized_images.dtype == tf.float16
  expected = (images.numpy() * 255. - statistics['pixel_mean']) / statistics['pixel_std']
  np.testing.assert_allclose(normalized_images.numpy().astype(np.float32), expected,
                             atol=2e-2, rtol=1e-2)


@pytest.mark.slow
def test_stats_false_writes_no_transform_and_normalize_says_what_is_missing(subset, tmp_path):
  import imagerecords  # pylint: disable=import-outside-toplevel
  out = tmp_path / 'out'
  assert convert(subset / 'val', out, '--image_size=32', '--num_shards=1', '--stats=false') == 0
  assert not (out / 'transform_fn').exists()
  assert manifest_of(out)['statistics'] is None
  with pytest.raises(imagerecords.MissingTransformError, match='--stats=false'):
    imagerecords.load(str(out), 'train', batch_size=4, normalize=True)
  with pytest.raises(imagerecords.MissingTransformError, match='--stats=false'):
    imagerecords.preprocessing_layer(str(out))
  with pytest.raises(ValueError, match='--stats=false'):
    imagerecords.class_weights(str(out))


def test_training_split_is_train_else_the_first_by_name():
  from transforms.analysis.statistics import (  # pylint: disable=import-outside-toplevel
      training_split)
  assert training_split(['validation', 'train']) == 'train'
  assert training_split(['val', 'test']) == 'test'
  assert training_split([]) is None


def test_docs_reader_statistics_example_runs(sample_dataset):
  import re  # pylint: disable=import-outside-toplevel

  from tests.helpers import REPO  # pylint: disable=import-outside-toplevel
  blocks = re.findall(r'```py\n(.*?)```', (REPO / 'docs' / 'reader.md').read_text(), re.S)
  assert len(blocks) == 1 and "data = 'out'" in blocks[0]
  namespace = {}
  code = blocks[0].replace("data = 'out'", f'data = {sample_dataset!r}')
  exec(compile(code, 'docs/reader.md', 'exec'), namespace)  # pylint: disable=exec-used
  images, _ = next(iter(namespace['train']))
  assert images.shape[1:] == (224, 224, 3)
  assert set(namespace['weights']) == {0, 1}
  served = namespace['serving'](namespace['tf'].constant(
      [record['image/encoded'] for _, record in all_records(sample_dataset)][:2]))
  assert served.shape == (2, 3)
  assert len(list(namespace['tenth'])) >= 1


def test_stats_flag_values_and_the_s3_refusal():
  # pylint: disable=import-outside-toplevel
  from apache_beam.options.pipeline_options import PipelineOptions

  from pipeline.options import ConvertOptions
  from pipeline.validation import validate
  for flags, expected in (([], 'true'), (['--stats'], 'true'), (['--stats=false'], 'false'),
                          (['--stats=True'], 'true'), (['--stats=0'], 'false'),
                          (['--stats=TFT'], 'tft')):
    assert PipelineOptions(flags).view_as(ConvertOptions).stats == expected
  # TensorFlow has no s3:// filesystem: its transform is refused before anything runs; the
  # default statistics need no TensorFlow and are fine
  s3 = ['--input_dir=s3://bucket/in', '--output_dir=s3://bucket/out']
  with pytest.raises(ValueError, match='--stats=tft'):
    validate(PipelineOptions(s3 + ['--stats=tft']).view_as(ConvertOptions))
  validate(PipelineOptions(s3).view_as(ConvertOptions))
  validate(PipelineOptions(s3 + ['--stats=false']).view_as(ConvertOptions))


def test_tft_instances_are_one_row_per_image_as_tft_reads_them():
  """The analysis's RecordBatches hold one instance per image: its exact sums, as TFT's own
  TensorAdapter turns them into the preprocessing_fn's int64 inputs."""
  # pylint: disable=import-outside-toplevel
  from tfx_bsl.public import tfxio

  from transforms.image import codec
  from transforms.analysis import statistics_tft
  from transforms.image.pixel_sums import pixel_sums, stored_pixels
  # pylint: disable=protected-access
  for channels in (3, 1):
    spec = codec.ImageSpec(image_size=64, image_format='jpeg', channels=channels)
    sums = [pixel_sums(stored_pixels(codec.convert(path.read_bytes(), spec), channels))
            for path in sorted((shared_data('hymenoptera') / 'val' / 'ants').glob('*.jpg'))[:5]]
    config = statistics_tft._tensor_adapter_config(channels)
    batch = statistics_tft._record_batch(sums, config.arrow_schema)
    tensors = tfxio.TensorAdapter(config).ToBatchTensors(batch)
    assert batch.num_rows == 5
    assert tensors['pixel_sums'].numpy().tolist() == [list(s.sums) for s in sums]
    assert tensors['pixel_squares'].numpy().tolist() == [list(s.squares) for s in sums]
    assert tensors['num_pixels'].numpy().tolist() == [s.num_pixels for s in sums]
    assert tensors['image/encoded'].numpy().tolist() == [b''] * 5


def test_the_transforms_image_path_has_no_side_effect_so_the_analysis_skips_it():
  """TFT's analysis runs a function that returns the analyzers' inputs; TensorFlow runs every
  op with a side effect in a function whatever it returns, and prunes the rest. The image path
  (decode, crop, resize, normalise) holds none, so the analysis never decodes the instances'
  empty images (the --stats=tft runs of this module would fail on them otherwise)."""
  # pylint: disable=import-outside-toplevel
  import tensorflow as tf
  from tensorflow.python.framework import op_def_registry

  from imagerecords.transform import normalized_batch
  for channels in (3, 1):
    traced = tf.function(
        lambda encoded, c=channels: normalized_batch(encoded, 48, c, tf.zeros([c]),
                                                     tf.ones([c])),
        input_signature=[tf.TensorSpec([None], tf.string)]).get_concrete_function()
    graph = traced.graph.as_graph_def()
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    assert {node.op for node in nodes} >= {'StatelessWhile', 'DecodeAndCropJpeg'}
    stateful = [node.name for node in nodes
                if op_def_registry.get(node.op) and op_def_registry.get(node.op).is_stateful]
    assert not stateful
