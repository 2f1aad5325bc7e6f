"""The contract between the imagerecords writer (the Beam job) and its readers.

Defined once, here, in the reader distribution; the Beam job imports it. Changing anything in
this module changes the on-disk format: ``FORMAT_VERSION`` goes up with it, unless the change
is additive (``ADDITIVE_CHANGES``).

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

import re
from typing import Dict, NamedTuple, Optional, Tuple

FORMAT_VERSION = 2
"""The version of the output format (records, file names, ``manifest.json``) this package
writes and reads; each manifest says which version wrote it (``format_version``). A reader reads
every version from 1 up to its own (an older manifest's missing keys take their defaults) and
refuses a newer one (:class:`FormatVersionError`).

It goes up with any change that a reader of the previous version would misread: a manifest key
renamed, removed or given another type, default or meaning, a record feature decoded another
way. A change such a reader can ignore, a new manifest key with a default (an older reader
skips it; a newer reader of an older manifest takes the default), is additive: the version
stays and the change is listed in ``ADDITIVE_CHANGES``. ``tests/test_manifest_schema.py`` holds
the manifest's schema as of the last version and fails on any other change. The versions and
what changed: ``docs/output.md``, "Format versions"."""

ADDITIVE_CHANGES: Dict[int, Tuple[str, ...]] = {2: ()}
"""Format version -> the manifest fields added to it after it was fixed, as ``'Class.field'``
(a dataclass of this module), each with a default: readers of that version without them ignore
them. Oldest first; a new version starts with none (its schema snapshot holds them all)."""

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
# Its schema is the Manifest dataclass at the end of this module, one dataclass per section.
#
# "task": what the records hold. 'segmentation' (--masks): MASK_ENCODED/MASK_FORMAT beside the
# image, no class label; "classes" then names the mask's class ids and "image" has a "mask"
# entry (ImageMask). Absent in older manifests: classification.
TASK_CLASSIFICATION = 'classification'
TASK_SEGMENTATION = 'segmentation'
MASK_VOID = 255  # the void / ignore class id of masks (VOC's convention), kept as it is


def mask_class_name(class_id: int, class_names) -> str:
  """The name of a mask's class id in ``class_counts`` and reports: ``class_names[class_id]``
  (``labels.txt``: line i names class id i), else ``'class <id>'`` (a run without class
  names, or an id beyond them)."""
  return class_names[class_id] if 0 <= class_id < len(class_names) else f'class {class_id}'

# --- dataset statistics (--stats, on by default) and their transform (--stats=tft) --------------
# The numbers are the manifest's "statistics" (StatisticsSection); --stats=tft also writes:
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
