"""Image embeddings in the records (``--embedding_model``), computed with Beam's RunInference.

Each converted example goes through a Keras model (a ``.keras`` file, a SavedModel folder, or a
Keras application by name), and its output is stored beside the image as ``image/embedding``::

    ConvertedExample(serialized record, ...)
      | RunInference(EmbeddingModelHandler)      batched (--embedding_batch_size); the model is
      |                                          loaded once per worker process (Beam's Shared)
    PredictionResult(example=ConvertedExample, inference=float32 [*shape])
      | add the embedding to the record          the record bytes re-written with image/embedding
    ConvertedExample(serialized record with its embedding, ...)

The record rides through RunInference as the ``example`` of its ``PredictionResult``: no
GroupByKey or CoGroupByKey joins the embedding back, so on the local runner no step holds more
records than one batch (docs/benchmarks.md measures the memory). The model sees the image as it
is stored, decoded and resized exactly as ``imagerecords.load(..., image_size=S)`` does in
evaluation (``imagerecords.preprocessing.preprocess_image``: the central square, resized to the
model's input size ``S``), scaled to 0-255, then preprocessed (``--embedding_preprocessing``).
So the stored embedding equals the model applied to what the reader yields.

TensorFlow and Keras are imported only when a model is loaded: once at launch, to check it and
fingerprint its weights (a missing or unloadable model is a launch error, exit 2), in a
short-lived child process unless the workers run in the launcher's own process; and in the
worker processes that run the RunInference step. A job without ``--embedding_model`` never
imports them for this.

Why not Beam's ``TFModelHandlerNumpy``: its module imports ``tensorflow_hub`` (not a dependency
of this job, and it pins ``tf_keras``), its loader calls ``tf.keras.models.load_model`` on the
path, which under Keras 3 (TensorFlow 2.16 and later) refuses SavedModel folders ("Keras 3 only
supports V3 .keras files"), cannot build an application by name, and reads no ``s3://`` path;
and it takes numpy arrays, so the record would have to be decoded before the step and joined
back after it. The handler here loads the three kinds of model, copies a remote model through
Beam's ``FileSystems`` first, and decodes the images inside its batch.
"""

import hashlib
import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference
from imagerecords import contract
from imagerecords import manifest_schema
from imagerecords.records import add_features, serialize_example

from transforms.elements import METRICS_NAMESPACE, ConvertedExample
from transforms.files.folders import is_local

_LOG = logging.getLogger(__name__)

APPLICATION_PREFIX = 'keras.applications:'
"""``--embedding_model=keras.applications:NAME``: ``keras.applications.NAME`` built without its
classifier (``include_top=False``), its feature map as the output."""
POOLINGS = ('avg', 'none')
PREPROCESSINGS = ('auto', 'none', 'unit', 'tf', 'torch', 'caffe')
DEFAULT_IMAGE_SIZE = 224
DEFAULT_BATCH_SIZE = 8
SAVED_MODEL_FILE = 'saved_model.pb'


class ModelError(ValueError):
  """The model given cannot serve: its message names the flag and the reason."""


class EmbeddingSpec(NamedTuple):
  """The ``--embedding_*`` flags: which model, and how its output is stored.

  model: a ``.keras`` (or legacy ``.h5``) file, a SavedModel folder (any Beam filesystem), or
    ``keras.applications:NAME``.
  weights: a weights file loaded into the model (``model.load_weights``; for an application,
    its ``weights=`` argument), or None: the model's own (an application's: ImageNet's, which
    Keras downloads).
  pooling: 'avg': the global average over the spatial axes of a feature map ``[h, w, c]`` ->
    ``[c]``; 'none': stored whole. A model whose output is a vector is stored as it is.
  preprocessing: of the 0-255 float32 RGB pixels. 'auto': an application's own
    ``preprocess_input``, none for a saved model; 'none'; 'unit': divided by 255; 'tf', 'torch',
    'caffe': ``keras.applications.imagenet_utils.preprocess_input``'s modes.
  image_size: the side of the model's input, used when the model does not fix it (pixels).
  batch_size: the most images per model call.
  """
  model: str
  weights: Optional[str] = None
  pooling: str = 'avg'
  preprocessing: str = 'auto'
  image_size: int = DEFAULT_IMAGE_SIZE
  batch_size: int = DEFAULT_BATCH_SIZE


class EmbeddingModel(NamedTuple):
  """A model checked at launch: the spec and what loading it told.

  input_size: the side ``S`` of the square images it is given, pixels.
  channels: the channels of its input (the stored image is decoded to these).
  shape: the stored embedding's shape, e.g. ``(1280,)`` or ``(7, 7, 1280)``.
  fingerprint: hex SHA-256 of its weights as loaded (:func:`weights_fingerprint`).
  raw: the records hold raw pixels (``--image_format=raw``), decoded with their shape keys.
  """
  spec: EmbeddingSpec
  input_size: int
  channels: int
  shape: Tuple[int, ...]
  fingerprint: str
  raw: bool = False

  def manifest_section(self) -> manifest_schema.EmbeddingSection:
    """The manifest's ``embedding`` section
    (``imagerecords.manifest_schema.Manifest.embedding``)."""
    return manifest_schema.EmbeddingSection(
        model=self.spec.model, weights=self.spec.weights, fingerprint=self.fingerprint,
        pooling=self.spec.pooling, shape=list(self.shape), dtype='float32',
        input_size=self.input_size, preprocessing=self.spec.preprocessing,
        feature=contract.EMBEDDING,
        shape_feature=contract.EMBEDDING_SHAPE if self.stores_shape else None)

  def settings(self) -> Dict[str, Any]:
    """What decides the stored embeddings, for the nightly mode's comparison: the model and
    its weights' fingerprint, pooling, input size and preprocessing (not the batch size)."""
    return {'model': self.spec.model, 'fingerprint': self.fingerprint,
            'pooling': self.spec.pooling, 'input_size': self.input_size,
            'preprocessing': self.spec.preprocessing}

  @property
  def stores_shape(self) -> bool:
    """Whether records carry ``image/embedding/shape`` (``--embedding_pooling=none``)."""
    return self.spec.pooling == 'none'


def check_spec(spec: EmbeddingSpec) -> None:
  """Checks the flags without loading anything; raises ValueError naming the flag."""
  if spec.pooling not in POOLINGS:
    raise ValueError(f'--embedding_pooling must be one of {", ".join(POOLINGS)}')
  if spec.preprocessing not in PREPROCESSINGS:
    raise ValueError(f'--embedding_preprocessing must be one of {", ".join(PREPROCESSINGS)}')
  if spec.image_size < 1:
    raise ValueError('--embedding_image_size must be positive')
  if spec.batch_size < 1:
    raise ValueError('--embedding_batch_size must be positive')
  if spec.model.startswith(APPLICATION_PREFIX):
    if not spec.model[len(APPLICATION_PREFIX):].isidentifier():
      raise ValueError(f'--embedding_model={spec.model}: expected {APPLICATION_PREFIX}NAME, '
                       'e.g. keras.applications:EfficientNetB0')


def probe(spec: EmbeddingSpec, image_format: str, in_process: bool = True) -> EmbeddingModel:
  """Loads the model once at launch: checks that it loads, and returns what the workers and
  the manifest need (input size, output shape, weights fingerprint).

  ``in_process``: load it in this process and keep it for a worker that runs here too (the
  local runner's ``--direct_running_mode=in_memory``); else in a short-lived child process
  (a fresh interpreter), so that a launcher whose workers are other processes (multi-process
  local runner, Dataflow, Flink) never imports TensorFlow nor holds the model.

  An application by name without ``weights`` makes Keras download ImageNet's weights (needs
  internet; cached in ``~/.keras/models``).

  Raises:
    ValueError: a flag is wrong, the model or weights file does not exist, or the model
      cannot be loaded (the message names the spec and the error).
  """
  check_spec(spec)
  for flag, path in (('--embedding_model', spec.model), ('--embedding_weights', spec.weights)):
    if path and not path.startswith(APPLICATION_PREFIX) and not FileSystems.exists(path):
      raise ValueError(f'{flag}={path}: no such file or folder')
  if in_process:
    return _probe_here(spec, image_format, keep=True)
  # a fresh interpreter (not multiprocessing's spawn, which re-imports the caller's __main__)
  # with this one's import path; it prints one JSON line: the model, or the error
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
  result = subprocess.run(
      [sys.executable, '-m', 'transforms.image.embedding', json.dumps([spec, image_format])],
      capture_output=True, text=True, env=env, check=False)
  lines = result.stdout.strip().splitlines()
  answer = json.loads(lines[-1]) if result.returncode == 0 and lines else {
      'error': f'--embedding_model={spec.model}: cannot be loaded: the process loading it '
               f'failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}'}
  if 'error' in answer:
    raise ValueError(answer['error'])
  fields = answer['model']
  return EmbeddingModel(EmbeddingSpec(*fields['spec']), fields['input_size'],
                        fields['channels'], tuple(fields['shape']), fields['fingerprint'],
                        fields['raw'])


def _probe_main(argv: Sequence[str]) -> None:
  """``python -m transforms.image.embedding '[SPEC, IMAGE_FORMAT]'``: :func:`probe`'s child."""
  spec, image_format = json.loads(argv[0])
  try:
    model = _probe_here(EmbeddingSpec(*spec), image_format, keep=False)
  except ValueError as error:
    print(json.dumps({'error': str(error)}))
    return
  print(json.dumps({'model': model._asdict()}))


def _probe_here(spec: EmbeddingSpec, image_format: str, keep: bool) -> EmbeddingModel:
  """:func:`probe`'s loading, in this process; ``keep``: in :data:`_LOADED`."""
  raw = image_format == contract.RAW_FORMAT
  try:
    loaded = load(spec)
    embedder = Embedder(loaded, spec, raw=raw)
    shape = embedder.output_shape()
  except ModelError:
    raise
  except Exception as error:  # pylint: disable=broad-except
    # The launch's boundary around the user's model: whatever Keras or TensorFlow raise on a
    # file that is no model, a truncated one, or one of another input shape is reported as
    # a bad flag (exit 2), before any image is read.
    hint = ''
    if (spec.model.startswith(APPLICATION_PREFIX) and not spec.weights
        and ('URL fetch failure' in str(error) or isinstance(error, OSError))):
      # Keras downloads an application's ImageNet weights on first use (keras.utils.get_file)
      hint = ('; Keras could not download its ImageNet weights: without internet, pass '
              '--embedding_weights=FILE, the weights file (.h5, without the top) fetched once '
              'where there is internet (it lands in ~/.keras/models/)')
    raise ValueError(f'--embedding_model={spec.model}: cannot be loaded or run: '
                     f'{type(error).__name__}: {error}{hint}') from None
  model = EmbeddingModel(spec, loaded.input_size, loaded.channels, shape, loaded.fingerprint,
                         raw=raw)
  if keep:
    _LOADED[model] = embedder
  return model


_LOADED: Dict['EmbeddingModel', 'Embedder'] = {}
"""The models :func:`probe` loaded in this process: a worker running in the launcher's own
process (the local runner's ``--direct_running_mode=in_memory``) takes the launcher's instead of
loading and tracing it a second time."""


class LoadedModel(NamedTuple):
  """A loaded model, whatever its kind.

  call: float32 ``[B, S, S, channels]`` (preprocessed) -> float32 ``[B, ...]``, a tf function.
  preprocess: float32 0-255 RGB ``[B, S, S, channels]`` -> the model's input.
  output_shape: of ``call``'s output, batch axis first, None where the model does not say.
  """
  call: Any
  preprocess: Any
  input_size: int
  channels: int
  fingerprint: str
  output_shape: Tuple[Optional[int], ...]


def load(spec: EmbeddingSpec) -> LoadedModel:
  """Loads the model of ``spec`` (TensorFlow and Keras imported here).

  A remote file or folder is first copied to a local temporary folder through Beam's
  ``FileSystems`` (Keras reads local files, TensorFlow has no ``s3://``).

  Raises:
    ModelError: an application that Keras does not have, ``--embedding_weights`` for a
      SavedModel, a non-square or channel-less input, or an output of rank 1.
    Exception: whatever Keras or TensorFlow raise on a file they cannot load.
  """
  copies: List[str] = []  # the temporary folders of remote files, removed once loaded
  try:
    return _load(spec, copies)
  finally:
    for folder in copies:
      shutil.rmtree(folder, ignore_errors=True)


def _load(spec: EmbeddingSpec, copies: List[str]) -> LoadedModel:
  """:func:`load`, the temporary folders of its local copies added to ``copies``."""
  import keras  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  weights = spec.weights and _local_copy(spec.weights, copies)
  preprocess = None
  if spec.model.startswith(APPLICATION_PREFIX):
    name = spec.model[len(APPLICATION_PREFIX):]
    application = getattr(keras.applications, name, None)
    if not callable(application):
      raise ModelError(f'--embedding_model={spec.model}: keras.applications has no {name}')
    model = application(include_top=False, weights=weights or 'imagenet',
                        input_shape=(spec.image_size, spec.image_size, 3))
    if spec.preprocessing == 'auto':  # the application's own, from its module
      preprocess = importlib.import_module(application.__module__).preprocess_input
    call, variables, input_shape = model, model.weights, model.input_shape
    output_shape = model.output_shape
  else:
    path = _local_copy(spec.model, copies)
    if os.path.isdir(path):
      if spec.weights:
        raise ModelError('--embedding_weights is for Keras models, not a SavedModel folder')
      saved = tf.saved_model.load(path)
      signature = saved.signatures['serving_default']
      inputs = signature.structured_input_signature[1]
      if len(inputs) != 1 or len(signature.structured_outputs) != 1:
        raise ModelError(f'--embedding_model={spec.model}: its serving_default signature '
                         'must take one input and give one output')
      (input_name, input_spec), = inputs.items()
      output_name, = signature.structured_outputs
      if input_spec.dtype != tf.float32:
        raise ModelError(f'--embedding_model={spec.model}: its input is {input_spec.dtype.name}'
                         ', not float32 images')

      def call(images, saved=saved):  # holds the loaded object: its variables live with it
        return saved.signatures['serving_default'](**{input_name: images})[output_name]

      variables = sorted(signature.variables, key=lambda v: v.name)
      input_shape = tuple(input_spec.shape)
      output_shape = tuple(signature.structured_outputs[output_name].shape)
    else:
      model = keras.models.load_model(path, compile=False)
      if weights:
        model.load_weights(weights)
      call, variables, input_shape = model, model.weights, model.input_shape
      output_shape = model.output_shape
  if spec.preprocessing in ('tf', 'torch', 'caffe'):
    mode = spec.preprocessing
    preprocess = lambda x: keras.applications.imagenet_utils.preprocess_input(  # noqa: E731
        x, data_format='channels_last', mode=mode)
  elif spec.preprocessing == 'unit':
    preprocess = lambda x: x / 255.  # noqa: E731
  elif preprocess is None:  # 'none', or 'auto' for a saved model
    preprocess = lambda x: x  # noqa: E731
  if len(input_shape) != 4 or input_shape[3] not in (1, 3):
    raise ModelError(f'--embedding_model={spec.model}: expected an input of images '
                     f'[batch, height, width, 1 or 3], got {input_shape}')
  height, width = input_shape[1], input_shape[2]
  if height != width:
    raise ModelError(f'--embedding_model={spec.model}: its input is {height}x{width}; '
                     'only square inputs are supported')
  if not isinstance(output_shape, tuple) or not all(
      d is None or isinstance(d, int) for d in output_shape):
    raise ModelError(f'--embedding_model={spec.model}: expected one output tensor, got '
                     f'{output_shape}')
  return LoadedModel(call, preprocess, height or spec.image_size, input_shape[3],
                     weights_fingerprint(variables), output_shape)


def weights_fingerprint(variables: Iterable) -> str:
  """Hex SHA-256 over the model's variables in order: each one's dtype, shape and value bytes
  (the same weights give the same fingerprint whatever file they came from)."""
  digest = hashlib.sha256()
  for variable in variables:
    value = variable.numpy()
    digest.update(f'{value.dtype.str}{value.shape}'.encode('ascii'))
    digest.update(value.tobytes())
  return digest.hexdigest()


def _local_copy(path: str, copies: List[str]) -> str:
  """``path`` itself when local, else a copy of the file (or folder tree) in a new local
  temporary folder, made through Beam's FileSystems (gs://, s3://, ...) and added to
  ``copies`` (for the caller to remove)."""
  if is_local(path):
    return path
  target = tempfile.mkdtemp(prefix='imagerecords-model-')
  copies.append(target)
  root = path.rstrip('/')
  name = root.rsplit('/', 1)[-1]
  if FileSystems.exists(FileSystems.join(root, SAVED_MODEL_FILE)):  # a SavedModel folder
    files = [m.path for result in FileSystems.match([root + '/**'])
             for m in result.metadata_list]
    for file in files:
      local = os.path.join(target, name, *file[len(root) + 1:].split('/'))
      os.makedirs(os.path.dirname(local), exist_ok=True)
      _copy(file, local)
    return os.path.join(target, name)
  local = os.path.join(target, name)
  _copy(root, local)
  return local


def _copy(source: str, local: str) -> None:
  with FileSystems.open(source) as src, open(local, 'wb') as dst:
    shutil.copyfileobj(src, dst, 1 << 20)


class Embedder:
  """Serialized records -> their embeddings, in one TensorFlow function per batch: parse the
  image, decode, crop and resize it as the reader does, preprocess, run the model, pool."""

  def __init__(self, loaded: LoadedModel, spec: EmbeddingSpec, raw: bool = False):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from imagerecords import preprocessing  # pylint: disable=import-outside-toplevel
    self.loaded = loaded
    self._raw = raw
    self._pooling = spec.pooling
    size, channels = loaded.input_size, loaded.channels
    feature_spec = preprocessing.image_feature_spec(raw, return_filenames=False)

    @tf.autograph.experimental.do_not_convert  # plain TensorFlow ops, no Python control flow
    def image(features):
      pixels = preprocessing.preprocess_image(
          features[contract.IMAGE_ENCODED], size, training=False, channels=channels,
          raw_shape=preprocessing.parse_raw_shape(features) if raw else None)
      return pixels * 255.  # the reader's [0, 1] values, back on the 0-255 scale

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def embed(serialized):
      features = tf.io.parse_example(serialized, feature_spec)
      images = tf.map_fn(image, features, fn_output_signature=tf.TensorSpec(
          [size, size, channels], tf.float32))
      outputs = tf.cast(loaded.call(loaded.preprocess(images)), tf.float32)
      if spec.pooling == 'avg' and outputs.shape.rank > 2:  # global average over h, w
        outputs = tf.reduce_mean(outputs, axis=list(range(1, outputs.shape.rank - 1)))
      return outputs

    self._embed = embed

  def __call__(self, serialized: Sequence[bytes]):
    """float32 numpy ``[len(serialized), *shape]``: the embeddings of these records."""
    return self._embed(list(serialized)).numpy()

  def output_shape(self) -> Tuple[int, ...]:
    """The shape of one stored embedding: from the model's output shape, or, where that has
    unknown axes, from a blank image run through the model.

    Raises:
      ModelError: the model's output is not ``[batch, ...]`` with at least one more axis.
    """
    shape = self.loaded.output_shape[1:]
    if shape and all(d is not None for d in shape):
      if self._pooling == 'avg' and len(shape) > 1:
        shape = shape[-1:]
      return tuple(int(d) for d in shape)
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    size = self.loaded.input_size
    blank = tf.io.encode_png(tf.zeros([size, size, 3], tf.uint8)).numpy()
    features = {contract.IMAGE_ENCODED: blank, contract.IMAGE_HEIGHT: size,
                contract.IMAGE_WIDTH: size, contract.IMAGE_CHANNELS: 3}
    if self._raw:
      features[contract.IMAGE_ENCODED] = bytes(size * size * 3)
    record = serialize_example(features)
    shape = self([record]).shape[1:]
    if not shape:
      raise ModelError('the model gives one number per image, not an embedding')
    return tuple(int(d) for d in shape)


class EmbeddingModelHandler(ModelHandler[ConvertedExample, PredictionResult, Embedder]):
  """RunInference's model handler: ConvertedExample -> PredictionResult(example, embedding
  float32 numpy ``[*model.shape]``), batches of up to ``--embedding_batch_size``.

  ``load_model`` runs once per worker process (RunInference shares the model through Beam's
  ``Shared``); it raises ValueError when the weights it loads are not those the launcher
  fingerprinted (the model file changed during the run).
  """

  def __init__(self, model: EmbeddingModel):
    super().__init__(min_batch_size=1, max_batch_size=model.spec.batch_size)
    self._model = model

  def load_model(self) -> Embedder:
    if self._model in _LOADED:  # this process launched the job: its model is loaded
      return _LOADED[self._model]
    loaded = load(self._model.spec)
    if loaded.fingerprint != self._model.fingerprint:
      raise ValueError(f'--embedding_model={self._model.spec.model}: its weights changed since '
                       f'the launch (fingerprint {loaded.fingerprint}, launched with '
                       f'{self._model.fingerprint})')
    _LOG.info('embedding model %s loaded in process %d', self._model.spec.model, os.getpid())
    return Embedder(loaded, self._model.spec, raw=self._model.raw)

  def run_inference(self, batch: Sequence[ConvertedExample], model: Embedder,
                    inference_args: Optional[Dict[str, Any]] = None
                    ) -> Iterable[PredictionResult]:
    embeddings = model([example.serialized for example in batch])
    return [PredictionResult(example, embedding)
            for example, embedding in zip(batch, embeddings)]

  def get_num_bytes(self, batch: Sequence[ConvertedExample]) -> int:
    return sum(len(example.serialized) for example in batch)

  def get_metrics_namespace(self) -> str:
    return 'imagerecords_embedding'


class _JoinEmbeddingFn(beam.DoFn):
  """PredictionResult(ConvertedExample, embedding) -> the ConvertedExample whose record holds
  ``image/embedding`` (and ``image/embedding/shape`` when stored whole)."""

  def __init__(self, model: EmbeddingModel):
    self._model = model
    self._embedded = beam.metrics.Metrics.counter(METRICS_NAMESPACE, 'images_embedded')

  def process(self, result: PredictionResult) -> Iterable[ConvertedExample]:
    import numpy as np  # pylint: disable=import-outside-toplevel
    example, embedding = result.example, np.asarray(result.inference, np.float32)
    if embedding.shape != self._model.shape:
      raise ValueError(f'{example.relpath}: an embedding of shape {embedding.shape}, not '
                       f'{self._model.shape} as at the launch')
    features = {contract.EMBEDDING: embedding.reshape(-1)}
    if self._model.stores_shape:
      features[contract.EMBEDDING_SHAPE] = self._model.shape
    serialized = add_features(example.serialized, features)
    self._embedded.inc()
    yield example._replace(serialized=serialized,
                           record_sha256=hashlib.sha256(serialized).digest())


class AddEmbeddings(beam.PTransform):
  """PCollection[ConvertedExample] -> PCollection[ConvertedExample] whose records hold the
  image's embedding (``image/embedding``, float32, ``model.shape`` flattened row-major).

  An image TensorFlow cannot decode or a model error fails the run (the conversion decoded it
  already, so neither is a property of one input).
  """

  def __init__(self, model: EmbeddingModel):
    super().__init__()
    self._model = model

  def expand(self, examples):
    return (examples
            | 'run the model (RunInference)' >> RunInference(EmbeddingModelHandler(self._model))
            | 'add the embedding to the record' >> beam.ParDo(_JoinEmbeddingFn(self._model)))


if __name__ == '__main__':
  _probe_main(sys.argv[1:])
