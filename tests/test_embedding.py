"""--embedding_model: a real model (EfficientNetB0, untrained weights, saved here: no download)
on real photos; the stored embedding is the model applied to the stored image."""

import json

import numpy as np
import pytest

from tests.helpers import SAMPLES, convert, copy_photos, manifest_of, read_records

# EfficientNetB0 at a 96 px input (3x3x1280 feature map): the real architecture, small inputs
INPUT = 96


@pytest.fixture(scope='module')
def model_files(tmp_path_factory):
  """(a .keras file, a .weights.h5 file) of one EfficientNetB0 without its top, weights=None
  (Keras' random initialisation, seeded), input 96x96x3."""
  import keras  # pylint: disable=import-outside-toplevel
  keras.utils.set_random_seed(0)
  folder = tmp_path_factory.mktemp('model')
  model = keras.applications.EfficientNetB0(include_top=False, weights=None,
                                            input_shape=(INPUT, INPUT, 3))
  model.save(folder / 'b0.keras')
  model.save_weights(folder / 'b0.weights.h5')
  return folder / 'b0.keras', folder / 'b0.weights.h5'


def _tiny_model(seed: int):
  """A small convolutional network (two 3x3 convolutions, 32x32x3 -> 28x28x16), seeded: for
  the tests of the job's wiring, where EfficientNetB0's load and trace would only cost time."""
  import keras  # pylint: disable=import-outside-toplevel
  keras.utils.set_random_seed(seed)
  return keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255.),
                           keras.layers.Conv2D(8, 3, activation='relu'),
                           keras.layers.Conv2D(16, 3)])


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
  """Ten of the bundled hymenoptera photos, ants/ and bees/."""
  return copy_photos(tmp_path_factory.mktemp('photos'), 5)


@pytest.fixture(scope='module')
def pooled(model_files, photos, tmp_path_factory):
  """Photos converted at a 128 px shorter side (resized to the model's 96 by the central
  square), the .keras model, average pooling; the output dir."""
  out = tmp_path_factory.mktemp('pooled') / 'out'
  assert convert(photos, out, f'--embedding_model={model_files[0]}', '--image_size=128',
                 '--num_shards=1', '--splits=train=0.5,validation=0.5',
                 '--embedding_batch_size=4') == 0
  return out


def _assert_close(stored, expected):
  """Equal within float32 tolerance, relative to the output's scale (an untrained
  EfficientNet's outputs are about 1e-6: batch normalisation with its initial statistics), and
  different from image to image (not one constant output)."""
  scale = np.abs(expected).max()
  assert scale > 0
  np.testing.assert_allclose(stored, expected, rtol=1e-4, atol=1e-4 * scale)
  if len(expected) > 1:
    assert np.abs(expected[1:] - expected[:1]).max() > 1e-2 * scale


def _model(path):
  import keras  # pylint: disable=import-outside-toplevel
  return keras.models.load_model(path, compile=False)


@pytest.mark.slow
def test_the_stored_embedding_is_the_model_applied_to_the_image_the_reader_yields(
    pooled, model_files):
  import imagerecords  # pylint: disable=import-outside-toplevel
  manifest = manifest_of(pooled)
  section = manifest['embedding']
  assert section['model'] == str(model_files[0]) and section['pooling'] == 'avg'
  assert section['shape'] == [1280] and section['input_size'] == INPUT
  assert len(section['fingerprint']) == 64
  model = _model(model_files[0])
  seen = 0
  for split in manifest['splits']:
    for (images, stored), labels, names in imagerecords.load(
        str(pooled), split, batch_size=4, image_size=INPUT, return_embeddings=True,
        return_filenames=True):
      expected = np.mean(model(images.numpy() * 255., training=False).numpy(), axis=(1, 2))
      assert stored.shape == (len(names), 1280)
      _assert_close(stored.numpy(), expected)
      seen += len(names)
  assert seen == manifest['num_examples'] == 10


def test_load_embeddings_returns_them_with_labels_and_file_names(pooled):
  import imagerecords  # pylint: disable=import-outside-toplevel
  for split in manifest_of(pooled)['splits']:
    stored = {record['image/filename']: record for records in read_records(pooled, split).values()
              for record in records}
    for embeddings, labels, names in imagerecords.load_embeddings(
        str(pooled), split, batch_size=3, return_filenames=True):
      assert embeddings.dtype.name == 'float32' and embeddings.shape[1:] == (1280,)
      for embedding, label, name in zip(embeddings.numpy(), labels.numpy(), names.numpy()):
        assert stored[name]['image/class/label'] == label
        assert stored[name]['image/embedding'] == embedding[0]  # helpers keep the first value
        assert 'image/embedding/shape' not in stored[name]


def test_tfds_reads_the_embedding_feature(pooled):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  import imagerecords  # pylint: disable=import-outside-toplevel
  builder = tfds.builder_from_directory(str(pooled))
  assert builder.info.features['image/embedding'].shape == (1280,)
  by_name = {name: embedding for embeddings, _, names in imagerecords.load_embeddings(
      str(pooled), 'train', batch_size=8, return_filenames=True)
             for embedding, name in zip(embeddings.numpy(), names.numpy())}
  examples = list(tfds.as_numpy(builder.as_dataset(split='train')))
  assert len(examples) == len(by_name)
  for example in examples:
    np.testing.assert_array_equal(example['image/embedding'],
                                  by_name[example['image/filename']])


@pytest.mark.slow
def test_an_application_by_name_with_offline_weights_stores_the_whole_map(
    model_files, photos, pooled, tmp_path):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  out = tmp_path / 'out'
  # stored at the model's input size: the model sees the stored pixels as they are
  assert convert(photos, out, '--embedding_model=keras.applications:EfficientNetB0',
                 f'--embedding_weights={model_files[1]}', f'--embedding_image_size={INPUT}',
                 '--embedding_pooling=none', f'--image_size={INPUT}',
                 '--resize_mode=center_crop', '--num_shards=1') == 0
  section = manifest_of(out)['embedding']
  assert section['shape'] == [3, 3, 1280] and section['pooling'] == 'none'
  # the same weights as the .keras file: the same fingerprint
  assert section['fingerprint'] == manifest_of(pooled)['embedding']['fingerprint']
  model = _model(model_files[0])  # EfficientNet's preprocess_input passes pixels through
  count = 0
  for split in manifest_of(out)['splits']:
    for path in (out / info['file'] for info in manifest_of(out)['splits'][split]['shards']):
      for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        feature = tf.train.Example.FromString(raw).features.feature
        shape = list(feature['image/embedding/shape'].int64_list.value)
        assert shape == [3, 3, 1280]
        stored = np.array(feature['image/embedding'].float_list.value, np.float32)
        image = tf.io.decode_jpeg(feature['image/encoded'].bytes_list.value[0],
                                  dct_method='INTEGER_ACCURATE')
        expected = model(tf.cast(image, tf.float32)[None], training=False).numpy()[0]
        _assert_close(stored.reshape(shape)[None], expected[None])
        count += 1
  assert count == 10


@pytest.mark.parametrize('model, reason, in_memory', [
    ('missing.keras', 'no such file or folder', True),
    ('not_a_model.keras', 'cannot be loaded', True),
    # multi-process: the launcher loads the model in a child process
    ('not_a_model.keras', 'cannot be loaded', False),
    ('keras.applications:NoSuchNet', 'keras.applications has no NoSuchNet', True),
])
def test_a_missing_or_unloadable_model_is_a_launch_error(photos, tmp_path, caplog, model,
                                                         reason, in_memory):
  (tmp_path / 'not_a_model.keras').write_text('this is not a model')
  spec = model if model.startswith('keras.') else str(tmp_path / model)
  out = tmp_path / 'out'
  assert convert(photos, out, f'--embedding_model={spec}', '--num_shards=1',
                 in_memory=in_memory) == 2
  assert reason in caplog.text and '--embedding_model' in caplog.text
  assert not out.exists() or not any(out.glob('*.tfrecord'))


@pytest.mark.slow
def test_a_launcher_whose_workers_are_other_processes_loads_the_model_in_a_child(tmp_path):
  from transforms.image import embedding  # pylint: disable=import-outside-toplevel
  _tiny_model(1).save(tmp_path / 'tiny.keras')
  spec = embedding.EmbeddingSpec(str(tmp_path / 'tiny.keras'), pooling='none')
  in_child = embedding.probe(spec, 'jpeg', in_process=False)
  assert in_child not in embedding._LOADED  # pylint: disable=protected-access
  assert in_child == embedding.probe(spec, 'jpeg')  # what loading it here gives


def test_a_model_change_rebuilds_the_night_fully(tmp_path):
  from pipeline import nightly  # pylint: disable=import-outside-toplevel
  from transforms.image.embedding import EmbeddingModel, EmbeddingSpec  # pylint: disable=C0415
  (tmp_path / 'images.jsonl').write_text('')
  model = EmbeddingModel(EmbeddingSpec('m.keras'), 224, 3, (1280,), 'a' * 64)
  before = {'image_size': 256, 'embedding': model.settings()}

  def plan(settings):  # the previous night's manifest: what a night reads of it, and its tool
    (tmp_path / 'manifest.json').write_text(json.dumps(
        {'tool': {'name': 'imagerecords', 'version': '0.1.0'},
         'image': {'format': 'jpeg', 'channels': 3, 'image_size': 256,
                   'resize_mode': 'shorter_side'},
         'classes': [], 'splits': {}, 'incremental': {'settings': before}}))
    return nightly.plan_incremental(str(tmp_path), settings, (), False)

  assert plan(dict(before)).reuse
  retrained = model._replace(fingerprint='b' * 64)
  changed = plan({'image_size': 256, 'embedding': retrained.settings()})
  assert not changed.reuse and 'embedding' in changed.reason
  assert not plan({'image_size': 256, 'embedding': None}).reuse  # embeddings turned off


def test_add_features_gives_the_bytes_of_one_serialization():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from imagerecords.records import add_features, serialize_example  # pylint: disable=C0415
  base = {'image/encoded': b'\xff\xd8' * 200, 'image/height': 300, 'image/filename': b'a.jpg'}
  embedding = np.linspace(-1, 1, 7, dtype=np.float32)
  added = {'image/embedding': embedding, 'image/embedding/shape': (7,)}
  record = add_features(serialize_example(base), added)
  assert record == serialize_example({**base, **added})
  feature = tf.train.Example.FromString(record).features.feature
  np.testing.assert_array_equal(feature['image/embedding'].float_list.value, embedding)
  assert list(feature['image/embedding/shape'].int64_list.value) == [7]
  assert feature['image/height'].int64_list.value == [300]
  with pytest.raises(ValueError, match='image/height'):
    add_features(record, {'image/height': 1})


@pytest.mark.slow
def test_the_linear_head_example_trains_on_the_stored_embeddings(pooled):
  import re  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  from tests.helpers import REPO  # pylint: disable=import-outside-toplevel
  result = subprocess.run(
      [sys.executable, str(REPO / 'examples' / 'train_linear_head.py'), f'--data_dir={pooled}',
       '--epochs=2', '--batch_size=4'], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  assert lines[0].startswith(f'{pooled}: ') and 'embeddings of 1280 floats, 2 classes' in lines[0]
  assert re.fullmatch(r'epoch   2/2: loss \d+\.\d{3} accuracy [01]\.\d{3}  val_loss \d+\.\d{3} '
                      r'val_accuracy [01]\.\d{3}', lines[2]), lines
  final = re.fullmatch(r'final val_accuracy ([01]\.\d{3}) after 2 epochs; [\d.]+ s of training',
                       lines[3])
  assert final and final[1] == lines[2][-5:], lines


def test_a_savedmodel_folder_embeds_raw_pixel_records(tmp_path):
  """A SavedModel (Keras' export: Keras 3 cannot load it with load_model) on records of raw
  pixels (--image_format=raw): the handler's function equals the model on the same pixels."""
  from transforms.image import codec, embedding  # pylint: disable=import-outside-toplevel
  from transforms.image.example import build_example  # pylint: disable=import-outside-toplevel
  model = _tiny_model(1)
  model.export(str(tmp_path / 'saved'), verbose=False)
  spec = embedding.EmbeddingSpec(str(tmp_path / 'saved'), pooling='avg')
  probed = embedding.probe(spec, 'raw')
  assert probed.shape == (16,) and probed.input_size == 32 and probed.raw
  image_spec = codec.ImageSpec(image_size=32, resize_mode='center_crop', image_format='raw')
  records, pixels = [], []
  for path in sorted((SAMPLES / 'bees').glob('*.jpg'))[:3]:
    encoded = codec.convert(path.read_bytes(), image_spec)
    records.append(build_example(encoded, path.name, '0' * 64))
    pixels.append(np.frombuffer(encoded.data, np.uint8).reshape(32, 32, 3))
  handler = embedding.EmbeddingModelHandler(probed)
  embedder = embedding.Embedder(embedding.load(spec), spec, raw=True)
  stored = embedder(records)
  expected = model(np.stack(pixels).astype(np.float32)).numpy().mean(axis=(1, 2))
  _assert_close(stored, expected)
  assert handler.load_model() is embedding._LOADED[probed]  # pylint: disable=protected-access


def test_the_reader_names_an_output_without_embeddings():
  # pylint: disable-next=import-outside-toplevel
  from imagerecords import contract, dataset, manifest_schema
  tool = manifest_schema.ToolInfo(name=manifest_schema.TOOL_NAME, version='0.1.0')
  image = manifest_schema.ImageSection(format='jpeg', channels=3, image_size=32,
                                       resize_mode='center_crop')
  with pytest.raises(ValueError, match='converted without --embedding_model'):
    dataset.embedding_feature(manifest_schema.Manifest(tool=tool, image=image), 'out/x')
  section = manifest_schema.EmbeddingSection(
      model='tiny.keras', weights=None, fingerprint='0' * 64, pooling='none', shape=[3, 3, 8],
      dtype='float32', input_size=32, preprocessing='auto', feature=contract.EMBEDDING,
      shape_feature=contract.EMBEDDING_SHAPE)
  manifest = manifest_schema.Manifest(tool=tool, image=image, embedding=section)
  assert dataset.embedding_feature(manifest, 'out/x') == [3, 3, 8]


@pytest.mark.slow
def test_nights_reuse_embeddings_of_the_same_model_and_rebuild_for_other_weights(
    photos, tmp_path):
  import imagerecords  # pylint: disable=import-outside-toplevel
  _tiny_model(1).save(tmp_path / 'tiny.keras')
  other_weights = tmp_path / 'retrained.weights.h5'  # the same network, other weights
  _tiny_model(2).save_weights(other_weights)
  root = tmp_path / 'nightly'
  flags = (f'--embedding_model={tmp_path / "tiny.keras"}', '--image_size=32',
           '--resize_mode=center_crop', '--num_shards=1')

  def night(date, *more):
    assert convert(photos, root, f'--run_date={date}', *flags, *more) == 0
    run = root / f'dt={date}'
    embeddings = {name: vector for split in manifest_of(run)['splits']
                  for vectors, _, names in imagerecords.load_embeddings(
                      str(run), split, batch_size=16, return_filenames=True)
                  for vector, name in zip(vectors.numpy(), names.numpy())}
    return manifest_of(run), embeddings

  first, first_embeddings = night('2026-11-18')
  second, second_embeddings = night('2026-11-19')
  assert second['incremental']['reused'] == 10 and second['incremental']['converted'] == 0
  assert second['embedding'] == first['embedding']
  assert sorted(second_embeddings) == sorted(first_embeddings)
  for name, vector in second_embeddings.items():
    np.testing.assert_array_equal(vector, first_embeddings[name])
  third, third_embeddings = night('2026-11-20', f'--embedding_weights={other_weights}')
  assert third['incremental']['reused'] == 0 and third['incremental']['converted'] == 10
  assert 'embedding' in third['incremental']['full_rebuild_reason']
  assert third['embedding']['fingerprint'] != first['embedding']['fingerprint']
  assert any(not np.allclose(third_embeddings[name], vector)
             for name, vector in first_embeddings.items())



def test_a_model_on_object_storage_is_copied_through_beams_filesystems(tmp_path, monkeypatch):
  """s3:// (a moto server on loopback, as in tests/test_s3.py): a .keras file and a SavedModel
  folder there load as their local copies do."""
  import signal  # pylint: disable=import-outside-toplevel
  boto3 = pytest.importorskip('boto3')
  from apache_beam.io.filesystems import FileSystems  # pylint: disable=import-outside-toplevel
  from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=C0415
  from tests.servers import free_ports, spawn, stop, wait_for_port  # pylint: disable=C0415
  from transforms.image import embedding  # pylint: disable=import-outside-toplevel
  model = _tiny_model(1)
  model.save(tmp_path / 'tiny.keras')
  model.export(str(tmp_path / 'saved'), verbose=False)
  port, = free_ports(1)
  server = spawn(['moto.server', '-H', '127.0.0.1', '-p', str(port)], tmp_path, None,
                 tmp_path / 'moto.log')
  try:
    wait_for_port(port, server, tmp_path / 'moto.log')
    endpoint = f'http://127.0.0.1:{port}'
    client = boto3.client('s3', endpoint_url=endpoint, aws_access_key_id='testing',
                          aws_secret_access_key='testing', region_name='us-east-1')
    client.create_bucket(Bucket='models')
    client.upload_file(str(tmp_path / 'tiny.keras'), 'models', 'tiny.keras')
    for path in (tmp_path / 'saved').rglob('*'):
      if path.is_file():
        client.upload_file(str(path), 'models', f'saved/{path.relative_to(tmp_path / "saved")}')
    for name, value in (('AWS_ENDPOINT_URL_S3', endpoint), ('AWS_ACCESS_KEY_ID', 'testing'),
                        ('AWS_SECRET_ACCESS_KEY', 'testing'),
                        ('AWS_DEFAULT_REGION', 'us-east-1')):
      monkeypatch.setenv(name, value)
    FileSystems.set_options(PipelineOptions([f'--s3_endpoint_url={endpoint}',
                                             '--s3_access_key_id=testing',
                                             '--s3_secret_access_key=testing',
                                             '--s3_region_name=us-east-1']))
    import tempfile  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    copies = tmp_path / 'tmp'
    copies.mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(copies))
    for remote, local in (('s3://models/tiny.keras', tmp_path / 'tiny.keras'),
                          ('s3://models/saved', tmp_path / 'saved')):
      from_s3 = embedding.load(embedding.EmbeddingSpec(remote))
      here = embedding.load(embedding.EmbeddingSpec(str(local)))
      assert from_s3.fingerprint == here.fingerprint
      assert from_s3.output_shape == here.output_shape == (None, 28, 28, 16)
      assert not list(copies.iterdir())  # the local copy is removed once loaded ...
      images = tf.zeros((1, from_s3.input_size, from_s3.input_size, from_s3.channels))
      assert np.array_equal(from_s3.call(images), here.call(images))  # ... and not needed
  finally:
    FileSystems.set_options(PipelineOptions([]))
    stop(server, signal.SIGTERM)
