"""The contract between the imagerecords writer (the Beam job) and its readers.

Defined once, here, in the reader distribution; the Beam job imports it. Changing anything in
this module changes the on-disk format, so ``FORMAT_VERSION`` goes up with it.

An output directory looks like this::

    OUT/
      train-00000-of-00008.tfrecord     one file set per split, a fixed number of shards each
      ...
      validation-00000-of-00002.tfrecord
      labels.txt                        class names, line i = class id i (0-based)
      manifest.json                     options, counts per split/class/shard, failures, timings
      failures.jsonl                    one JSON object per input that did not become an example
      _SUCCESS                          written last; nothing is trusted without it

Record keys follow the TF-slim / TF Model Garden convention
(``research/slim/datasets/build_imagenet_data.py``,
``official/vision/data/tfrecord_lib.py``), so existing readers work unchanged.
"""

import dataclasses
import re
from typing import Any, Dict, List, NamedTuple, Optional

FORMAT_VERSION = 1

# --- tf.train.Example feature keys ------------------------------------------------------------
IMAGE_ENCODED = 'image/encoded'  # bytes: the encoded image (JPEG or PNG)
IMAGE_FORMAT = 'image/format'  # bytes: 'jpeg', 'png', 'raw', ('gif', 'bmp': original)
RAW_FORMAT = 'raw'  # image/format of uint8 pixels, row-major [height, width, channels]
IMAGE_HEIGHT = 'image/height'  # int64: height of the encoded image, pixels
IMAGE_WIDTH = 'image/width'  # int64: width of the encoded image, pixels
IMAGE_CHANNELS = 'image/channels'  # int64: 3 (RGB) or 1 (grayscale); 1-4 for 'original'
CLASS_LABEL = 'image/class/label'  # int64: 0-based class id, index into labels.txt
CLASS_TEXT = 'image/class/text'  # bytes: class name
FILENAME = 'image/filename'  # bytes: path relative to the input root, '/'-separated
SOURCE_SHA256 = 'image/key/sha256'  # bytes: hex SHA-256 digest of the source file's bytes
MASK_ENCODED = 'image/segmentation/class/encoded'  # bytes: PNG of class indices
MASK_FORMAT = 'image/segmentation/class/format'  # bytes: 'png'
EMBEDDING = 'image/embedding'  # float list: the image's embedding (--embedding_model), row-major
EMBEDDING_SHAPE = 'image/embedding/shape'  # int64 list: its shape, when stored whole
# (--embedding_pooling=none, e.g. [7, 7, 1280]); a pooled embedding is one vector, e.g. [1280]

# --- files of an output directory -------------------------------------------------------------
LABELS_FILE = 'labels.txt'
MANIFEST_FILE = 'manifest.json'
FAILURES_FILE = 'failures.jsonl'
SUCCESS_FILE = '_SUCCESS'

SHARD_NAME_TEMPLATE = '-SSSSS-of-NNNNN'  # Beam's shard_name_template syntax
SHARD_SUFFIX = '.tfrecord'
GZIP_SUFFIX = '.gz'
DALI_INDEX_SUFFIX = '.idx'  # --dali_index: '<shard file name>.idx' beside each shard, one
# '<offset> <size>' line per record (NVIDIA DALI's tools/tfrecord2idx format)

_SHARD_RE = re.compile(
    r'^(?P<split>[A-Za-z0-9_]+)-(?P<index>\d{5})-of-(?P<count>\d{5})'
    r'\.tfrecord(?P<gz>\.gz)?$')


class ShardName(NamedTuple):
  """A parsed shard file name: ``<split>-<index>-of-<count>.tfrecord[.gz]``."""
  split: str
  index: int
  count: int
  compressed: bool


def shard_file_name(split: str, index: int, count: int, compressed: bool = False) -> str:
  """The file name of shard ``index`` (0-based) of ``count`` for ``split``.

  >>> shard_file_name('train', 3, 8)
  'train-00003-of-00008.tfrecord'
  """
  suffix = SHARD_SUFFIX + (GZIP_SUFFIX if compressed else '')
  return f'{split}-{index:05d}-of-{count:05d}{suffix}'


def parse_shard_file_name(name: str) -> Optional[ShardName]:
  """Parses a base name written by :func:`shard_file_name`; None for any other name."""
  match = _SHARD_RE.match(name)
  if not match:
    return None
  return ShardName(
      match['split'], int(match['index']), int(match['count']), match['gz'] is not None)


def shard_glob(split: str, compressed: bool = False) -> str:
  """A glob matching the shard files of ``split`` (``.tfrecord``, or ``.tfrecord.gz`` when
  ``compressed``), and not the ``.idx`` files ``--dali_index`` writes beside them."""
  return f'{split}-?????-of-?????{SHARD_SUFFIX}' + (GZIP_SUFFIX if compressed else '')


SPLIT_NAME_RE = re.compile(r'^[A-Za-z0-9_]+$')
"""What a split name may be: it becomes part of file names, so no '-', '/', '.' or spaces."""

# --- manifest.json ----------------------------------------------------------------------------
# Its schema is the Manifest dataclass below: each key is a field's name, named there once; the
# writer builds one (transforms/outputs/metadata.py) and readers parse one (Manifest.from_json).
#
#   {"format_version": 1,
#    "tool": {"name": "imagerecords", "version": "0.1.0"},
#    "classes": ["ants", "bees"],                       # same as labels.txt; [] when unlabeled
#    "image": {"format": "jpeg", "channels": 3, "image_size": 256, "resize_mode": "center_crop"},
#    "splits": {"train": {"num_examples": 244, "num_shards": 4, "compressed": false,
#                         "class_counts": {"ants": 124, "bees": 120},
#                         "fingerprint": "<64 hex digits>",
#                         "shards": [{"file": "train-00000-of-00004.tfrecord",
#                                     "num_examples": 61, "bytes": 1234567,
#                                     "sha256": "<64 hex digits>"}, ...]},
#               ...}, ...}
#
# "task": what the records hold. 'segmentation' (--masks): MASK_ENCODED/MASK_FORMAT beside the
# image, no class label; "classes" then names the mask's class ids and "image" has a "mask"
# entry ({"format": "png", "void": 255, "layout": ...}). Absent in older manifests: classification.
TASK_CLASSIFICATION = 'classification'
TASK_SEGMENTATION = 'segmentation'
MASK_VOID = 255  # the void / ignore class id of masks (VOC's convention), kept as it is


def mask_class_name(class_id: int, class_names) -> str:
  """The name of a mask's class id in ``class_counts`` and reports: ``class_names[class_id]``
  (``labels.txt``: line i names class id i), else ``'class <id>'`` (a run without class
  names, or an id beyond them)."""
  return class_names[class_id] if 0 <= class_id < len(class_names) else f'class {class_id}'

# --- embeddings (--embedding_model; absent otherwise) --------------------------------------------
#   "embedding": {"model": "keras.applications:EfficientNetB0", "weights": "/path/or/null",
#                 "fingerprint": "<64 hex digits: SHA-256 of the weights as loaded>",
#                 "pooling": "avg", "shape": [1280], "dtype": "float32",
#                 "input_size": 224, "preprocessing": "auto"}
EMBEDDING_SPEC = 'model'
EMBEDDING_SHAPE_KEY = 'shape'

# --- dataset statistics (--stats, on by default) and their transform (--stats=tft) --------------
#   "statistics": {"split": "train", "num_examples": 244, "num_pixels": 16711680,
#                  "pixel_mean": [r, g, b], "pixel_std": [r, g, b],   # 0-255 scale, stored pixels
#                  "class_frequencies": {"ants": 124, "bees": 120},
#                  "transform_fn": "transform_fn"}   # --stats=tft; null with --stats (none written)
STATS_SPLIT = 'split'
STATS_NUM_EXAMPLES = 'num_examples'
STATS_NUM_PIXELS = 'num_pixels'
STATS_PIXEL_MEAN = 'pixel_mean'
STATS_PIXEL_STD = 'pixel_std'
STATS_CLASS_FREQUENCIES = 'class_frequencies'
STATS_TRANSFORM_FN = 'transform_fn'  # the transform's folder (TRANSFORM_FN_DIR), or null
TRANSFORM_FN_DIR = 'transform_fn'  # tf.SavedModel written by tft_beam.WriteTransformFn
TRANSFORMED_METADATA_DIR = 'transformed_metadata'
# The transform's input (a batch of encoded images, tf.string [B]) and outputs:
TRANSFORM_INPUT = IMAGE_ENCODED
TRANSFORM_IMAGE = 'image'  # float32 [B, S, S, 3], normalised: (pixel - mean) / std
TRANSFORM_PIXEL_MEAN = 'pixel_mean'  # float32 [B, 3], the same row for every example
TRANSFORM_PIXEL_STD = 'pixel_std'  # float32 [B, 3]
TRANSFORM_NUM_PIXELS = 'num_pixels'  # int64 [B]: the pixels the statistics cover
JPEG_DCT_METHOD = 'INTEGER_ACCURATE'
"""The ``dct_method`` of every TensorFlow decode of a record's JPEG (``tf.io.decode_jpeg``,
``tf.io.decode_and_crop_jpeg``): libjpeg-turbo's accurate integer IDCT, the pixels simplejpeg,
Pillow and OpenCV give and the statistics above were computed from
(``transforms/image/pixel_sums.py`` in the writer). TensorFlow's default (``''``, its fast IDCT)
gives red and blue about 1.1-1.3 levels lower on the job's JPEGs, so a mean normalised with the
statistics would be biased."""

# --- TensorFlow Datasets metadata (tfds.builder_from_directory(OUT)) ----------------------------
TFDS_DATASET_INFO_FILE = 'dataset_info.json'
TFDS_FEATURES_FILE = 'features.json'
TFDS_CLASS_NAMES_FILE = 'image.class.label.labels.txt'  # ClassLabel names of 'image/class/label'
TFDS_FILEPATH_TEMPLATE = '{SPLIT}-{SHARD_X_OF_Y}.{FILEFORMAT}'  # = shard_file_name's names

# --- nightly runs (--run_date) ----------------------------------------------------------------
# A scheduled job writes one complete output directory per run date under one root:
#
#   ROOT/
#     dt=2026-11-19/ ... _SUCCESS        each a complete output directory as above
#     dt=2026-11-20/ ... _SUCCESS
#     _staging/dt=2026-11-21/            the run in progress (never read; no _SUCCESS)
#     LATEST                             one line: the newest published run's directory name
RUN_DIR_PREFIX = 'dt='
STAGING_DIR = '_staging'
LATEST_FILE = 'LATEST'
IMAGES_INDEX_FILE = 'images.jsonl'  # one JSON object per example: file, sha256, record_sha256,
# split, label (transforms/outputs/image_index.py)
DUPLICATES_FILE = 'duplicates.jsonl'  # one JSON object per group of exact or near duplicates
QUALITY_FILE = 'quality.jsonl'  # one JSON object per image a quality check flags
RUN_DATE_RE = re.compile(r'^\d{4}-\d{2}-\d{2}$')


def run_dir_name(run_date: str) -> str:
  """The directory name of the run of ``run_date`` (``YYYY-MM-DD``): ``dt=YYYY-MM-DD``, the
  Hive partition convention that Spark, BigQuery external tables and Airflow users expect."""
  return f'{RUN_DIR_PREFIX}{run_date}'


# --- manifest.json, the schema -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ShardEntry:
  """One shard of a split, as ``manifest.json`` lists it.

  file: the shard's base name (:func:`shard_file_name`). num_examples: its records, counted
  from the written file's framing. bytes: its size on disk (None where the store gave none).
  sha256: the hex SHA-256 digest of the file's bytes as stored (of the compressed bytes for
  ``.tfrecord.gz``; ``sha256sum`` gives the same), read back once it is written, in the same
  read that counts its records; None in manifests of jobs older than this key (an optional key
  a reader may lack: the record format, and ``FORMAT_VERSION``, are unchanged). The reader
  checks ``bytes`` before it reads a shard, and ``sha256`` on request
  (``imagerecords.load(..., verify_shards=...)``).
  """
  file: str
  num_examples: int
  bytes: Optional[int] = None
  sha256: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class SplitEntry:
  """One split of ``manifest.json``'s ``splits``.

  num_examples: records in the split. num_shards: its fixed shard count. compressed: GZIP
  shards (``.tfrecord.gz``). class_counts: class name -> examples (segmentation: examples whose
  mask holds the class). fingerprint: 64 hex digits, an order-independent hash of the split's
  records (equal records, equal fingerprint). bytes: the shards' total size. shards: in shard
  order.
  """
  num_examples: int
  num_shards: int
  compressed: bool = False
  class_counts: Dict[str, int] = dataclasses.field(default_factory=dict)
  fingerprint: Optional[str] = None
  bytes: int = 0
  shards: List[ShardEntry] = dataclasses.field(default_factory=list)

  @classmethod
  def from_json(cls, data: Dict[str, Any]) -> 'SplitEntry':
    fields = _known(cls, data)
    fields['shards'] = [ShardEntry(**_known(ShardEntry, shard)) for shard in data.get('shards', [])]
    return cls(**fields)


@dataclasses.dataclass(frozen=True)
class Manifest:
  """``manifest.json``: what an output directory holds and how the run that wrote it went.

  Each field is one top-level key (its name), in the file's order; the sections owned by one
  step of the job stay JSON objects, their keys defined beside their owner: ``duplicates``
  (``transforms/analysis/dedup.py``), ``quality`` (``transforms/analysis/quality.py``), ``diff``
  (``transforms/outputs/image_index.py``), ``incremental`` (``pipeline/nightly.py``), ``statistics``
  (the ``STATS_*`` keys above), ``embedding`` (``EMBEDDING_*`` above), ``metrics`` (the
  runner's counters) and ``step_msecs`` (milliseconds each top-level step of the graph spent
  in its own code: DoFns, combiners, writes; not the runner's moving of elements between
  steps), both added by the launcher after the job from what the runner reports.
  ``embedding``, ``metrics`` and ``step_msecs`` are left out of the file when None; every
  other key is always written (null when empty).

  Counts: ``num_inputs`` = ``num_examples`` + ``num_failures`` (image inputs);
  ``num_skipped``: files that were not image inputs (links, odd files). ``status`` is
  ``'complete'`` or ``'failed'`` (then ``error`` is the one-line reason and there is no
  ``_SUCCESS``).
  """
  format_version: int = FORMAT_VERSION
  tool: Dict[str, str] = dataclasses.field(default_factory=dict)
  status: str = 'complete'
  error: Optional[str] = None
  created_utc: Optional[str] = None  # ISO 8601, seconds
  input_dir: Optional[str] = None
  output_dir: Optional[str] = None  # where readers find it (a dated run: its published folder)
  options: Dict[str, Any] = dataclasses.field(default_factory=dict)  # the flags, as run
  image: Dict[str, Any] = dataclasses.field(default_factory=dict)  # format, channels, size, ...
  embedding: Optional[Dict[str, Any]] = None
  split_source: Optional[str] = None  # 'folders', 'hash', 'label_file' or 'split_lists'
  task: str = TASK_CLASSIFICATION
  classes: List[str] = dataclasses.field(default_factory=list)  # labels.txt's lines
  splits: Dict[str, SplitEntry] = dataclasses.field(default_factory=dict)
  num_inputs: int = 0
  num_examples: int = 0
  num_failures: int = 0
  num_skipped: int = 0
  failures_by_stage: Dict[str, int] = dataclasses.field(default_factory=dict)
  duplicates: Optional[Dict[str, Any]] = None
  quality: Optional[Dict[str, Any]] = None
  run_date: Optional[str] = None  # --run_date, YYYY-MM-DD
  diff: Optional[Dict[str, Any]] = None
  incremental: Optional[Dict[str, Any]] = None
  statistics: Optional[Dict[str, Any]] = None
  timings: Dict[str, float] = dataclasses.field(default_factory=dict)  # wall_time_s
  metrics: Optional[Dict[str, Any]] = None
  step_msecs: Optional[Dict[str, int]] = None

  _OMITTED_WHEN_NONE = ('embedding', 'metrics', 'step_msecs')

  def to_json(self) -> Dict[str, Any]:
    """The JSON object written as ``manifest.json``, keys in field order."""
    return {name: value for name, value in dataclasses.asdict(self).items()
            if not (value is None and name in self._OMITTED_WHEN_NONE)}

  @classmethod
  def from_json(cls, data: Dict[str, Any]) -> 'Manifest':
    """Parses a ``manifest.json`` object; keys this version does not know are ignored and
    missing ones take their defaults (older manifests have no ``task``: classification).

    Raises:
      ValueError: ``data`` is not a JSON object, its ``splits`` or one of them is not an
        object (a null, an array), a split's ``shards`` are not objects, or a split entry
        lacks its counts; the message names the split.
    """
    if not isinstance(data, dict):
      raise ValueError(f'{MANIFEST_FILE} holds a {type(data).__name__}, not a JSON object')
    fields = _known(cls, data)
    splits = data.get('splits') or {}
    if not isinstance(splits, dict):
      raise ValueError(f'{MANIFEST_FILE}: "splits" is {_json_type(splits)}, not an object')
    fields['splits'] = {}
    for name, entry in splits.items():
      shards = entry.get('shards', []) if isinstance(entry, dict) else None
      if not isinstance(shards, list) or not all(isinstance(shard, dict) for shard in shards):
        what = (f'is {_json_type(entry)}' if not isinstance(entry, dict)
                else 'has "shards" that are not a list of objects')
        raise ValueError(f'{MANIFEST_FILE}: split {name!r} {what}, not an object of counts')
      try:
        fields['splits'][name] = SplitEntry.from_json(entry)
      except TypeError as error:  # a split entry without num_examples or num_shards
        raise ValueError(f'{MANIFEST_FILE}: split {name!r} is incomplete ({error})') from None
    return cls(**fields)


def _json_type(value) -> str:
  """What a JSON value is, in JSON's words: 'null', 'an array', 'a string'..."""
  if value is None:
    return 'null'
  names = {list: 'an array', str: 'a string', bool: 'a boolean', int: 'a number',
           float: 'a number', dict: 'an object'}
  return names.get(type(value), type(value).__name__)


def _known(cls, data: Dict[str, Any]) -> Dict[str, Any]:
  """The entries of ``data`` that are fields of the dataclass ``cls``."""
  names = {field.name for field in dataclasses.fields(cls)}
  return {key: value for key, value in data.items() if key in names}
