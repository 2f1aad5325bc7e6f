"""The job's command-line options, as Beam ``PipelineOptions``, and the parsers of their values.

Every flag is snake_case with help text; Beam's own flags (``--runner``, ``--project``,
``--temp_location``, ``--job_endpoint``, ...) pass through to Beam unchanged. Their checks are
``pipeline.validation``'s; what they become for the graph, ``pipeline.config``'s; what a local
run sets for its processes, ``pipeline.local_runner``'s.
"""

import argparse
import os
from typing import Dict, List, Sequence, Tuple

from apache_beam.options.pipeline_options import PipelineOptions
from imagerecords import contract

import pipeline
from transforms import private_apis
from transforms.analysis import near_duplicates
from transforms.analysis.dedup import DEDUP_MODES, DEFAULT_DEDUP
from transforms.image import codec, embedding, resizing
from transforms.inputs.listing import DEFAULT_MAX_FILE_BYTES, IMAGE_EXTENSIONS
from transforms.inputs.splits import SPLIT_FOLDER_NAMES
from transforms.outputs import claim

DEFAULT_SPLITS = 'train=0.8,validation=0.2'


class ConvertOptions(PipelineOptions):
  """Options of ``python -m pipeline.run``."""

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument(
        '--input_dir',
        help='Root folder of the images: a local path, gs://bucket/dir or s3://bucket/dir.')
    parser.add_argument(
        '--output_dir',
        help='Folder to write the TFRecord shards and metadata files into (local, gs://, s3://).')
    parser.add_argument(
        '--label_source', default='directory',
        help="Where labels come from. 'directory' (default): the image's parent folder name. "
        "'filename:REGEX': the regex's group 'label' (or first group) in the file name, e.g. "
        r"'filename:^([a-z]+)\.\d+\.jpg$'. 'file:PATH': a CSV label file with a header "
        "(filename,label) or 'FILENAME LABEL' lines (ImageNet val.txt, Tiny ImageNet "
        "val_annotations.txt). 'none': unlabeled images, records carry no class keys.")
    parser.add_argument(
        '--allow_single_class', action='store_true', default=False,
        help='Let a classification run end with a single class (a one-class set, e.g. '
        'positives only, to be merged with others later). By default such a run fails (exit '
        '1, nothing published) with the most common label failures and the --label_source to '
        'try: one class usually means the labels came from the wrong place (every image in one '
        'folder, a regex that captures one value, a label file that names one class). A run '
        'whose inputs all fail (e.g. at stage label) fails whatever this says.')
    parser.add_argument(
        '--label_map', default=None,
        help='labels.txt of an earlier run: its class ids are kept, new classes are appended '
        'after them, so nightly runs never renumber a class.')
    parser.add_argument(
        '--strict_labels', action='store_true', default=False,
        help='With --label_map: images of a class the map lacks fail instead of adding a class.')
    parser.add_argument(
        '--splits', default='auto',
        help="'auto' (default): the input's split folders (train/, val/, validation/, test/) "
        f"when it has them, else {DEFAULT_SPLITS}. 'folders': require split folders. "
        "'NAME=FRACTION,...' (fractions summing to 1): assign each image by a stable hash of its "
        'path relative to the input root.')
    parser.add_argument(
        '--num_shards', default='4',
        help="Shards per split: one number for every split ('4'), or per split "
        "('train=8,validation=2'). Fixed, so the file set is the same whatever the data size.")
    parser.add_argument(
        '--image_size', type=int, default=256,
        help='Target size in pixels (see --resize_mode). Default 256.')
    parser.add_argument(
        '--resize_mode', default='shorter_side', choices=resizing.RESIZE_MODES,
        help="'shorter_side' (default): keep the aspect ratio, shorter side = image_size. "
        "'center_crop': image_size x image_size central square. 'pad': fit inside image_size x "
        "image_size keeping the aspect ratio, pad to the square with --background. 'stretch': "
        "scale to image_size x image_size ignoring the aspect ratio. 'none': keep the source "
        'size.')
    parser.add_argument(
        '--image_format', default='jpeg', choices=codec.IMAGE_FORMATS,
        help="Format of the stored images: 'jpeg' (default, re-encoded); 'png' (lossless, "
        "larger); 'raw' (uint8 pixels, row-major HxWxC: 196,608 bytes for 256x256x3, about 10x "
        "a JPEG); 'original' (the source file's bytes untouched, shape read from the header "
        'without decoding: the fastest mode; only JPEG, PNG, GIF and BMP sources, others fail; '
        'EXIF orientation, resizing, --channels and colour conversion are NOT applied).')
    parser.add_argument(
        '--jpeg_quality', type=int, default=90, help='JPEG quality, 1-100. Default 90.')
    parser.add_argument(
        '--max_pixels', type=int, default=codec.DEFAULT_MAX_PIXELS,
        help='Refuse images whose header claims more pixels than this (decompression bombs). '
        f'Default {codec.DEFAULT_MAX_PIXELS:,}, as Pillow; at most twice that (Pillow\'s own '
        'hard limit).')
    parser.add_argument(
        '--max_jpeg_scans', type=int, default=codec.DEFAULT_MAX_JPEG_SCANS,
        help='Refuse JPEGs of more scans than this (counted from the markers, before decoding): '
        'each scan is a pass over the whole image, so a progressive JPEG of thousands of '
        'scans holds a worker for minutes. Default %(default)s; real photos have 1 '
        '(baseline) or about 10 (progressive).')
    parser.add_argument(
        '--extensions', default=','.join(IMAGE_EXTENSIONS),
        help='Comma-separated file extensions taken for images, matched case-insensitively. '
        'Other files are reported in failures.jsonl as skipped. Default: %(default)s.')
    parser.add_argument(
        '--follow_external_symlinks', action='store_true', default=False,
        help='Follow symlinks (to files and folders) whose target lies outside --input_dir. '
        'By default links are followed only while their target stays inside the input root; '
        'one that leaves it, dangles or loops is reported in failures.jsonl (stage list).')
    parser.add_argument(
        '--max_file_bytes', type=int, default=DEFAULT_MAX_FILE_BYTES,
        help='Refuse (stage list, never read) input files larger than this many bytes. '
        f'Default {DEFAULT_MAX_FILE_BYTES:,} (512 MiB), far above any real photo.')
    parser.add_argument(
        '--max_failure_fraction', type=float, default=0.05,
        help='Fail the run (no _SUCCESS) when more than this fraction of the image inputs '
        'cannot be converted. Default 0.05.')
    parser.add_argument(
        '--compression', default='none', choices=('none', 'gzip'),
        help="'gzip' writes .tfrecord.gz shards (JPEG data barely compresses). Default 'none'.")
    parser.add_argument(
        '--shuffle_seed', type=int, default=0,
        help='Seed of the record order (the split assignment does not use it). Each split\'s '
        'records are ordered on a hash of the seed and the image\'s path relative to the input '
        'root, and cut into --num_shards stretches in that order: each shard is a random sample '
        'of its split, in random order. The same input, options and seed write byte-identical '
        'shard files on any runner (a nightly run writes what a full rebuild writes); another '
        'seed writes the same records per split in other shards. Default 0.')
    parser.add_argument(
        '--overwrite', action='store_true', default=False,
        help='Replace the files of an earlier, published run in --output_dir instead of '
        'refusing to run. What a run that failed or was interrupted left (no _SUCCESS) is '
        'replaced without it.')
    parser.add_argument(
        '--claim_lease_seconds', type=float, default=claim.DEFAULT_LEASE_S,
        help='A run claims its --output_dir (with --run_date: its date) and renews the claim '
        'every quarter of this; another run finding a claim not renewed for this long takes it '
        'over (a run that died). A claim of a process that is gone from this host is taken '
        f'over at once. Default {claim.DEFAULT_LEASE_S:g} s.')
    parser.add_argument(
        '--flink_rest_address', default=None, metavar='HOST:PORT',
        help='HOST:PORT of the Flink cluster\'s REST API as this launcher reaches it (with '
        '--runner=PortableRunner; FlinkRunner uses its --flink_master). The launcher then '
        'cancels its job on the cluster when it is stopped (SIGINT, SIGTERM; Beam\'s job '
        'server does not pass a cancel on) and as soon as the job fails on the run\'s own '
        'verdict (e.g. over --max_failure_fraction), which Flink\'s restart strategy would '
        'otherwise run again. Default: none.')
    parser.add_argument(
        '--verbose', action='store_true', default=False,
        help='Show every log line on the console, tracebacks included (by default they go to '
        'the log file a failed run names in its last line).')
    parser.add_argument(
        '--run_date', default=None,
        help="Nightly mode: the run's date, YYYY-MM-DD (a scheduler's logical date). The run is "
        'staged in OUTPUT/_staging/dt=DATE/ and published to OUTPUT/dt=DATE/ only when it '
        'succeeded (_SUCCESS last, then OUTPUT/LATEST names it). The previous published run '
        "pins class ids (its labels.txt, unless --label_map is given) and the manifest holds "
        'the diff against it. A published date is refused without --overwrite.')
    parser.add_argument(
        '--full_rebuild', action='store_true', default=False,
        help='With --run_date: convert every image again instead of reusing the previous '
        "run's records of unchanged files (same path, size and modification time; see "
        'docs/nightly.md). A change of any conversion setting rebuilds fully by itself.')
    parser.add_argument(
        '--dali_index', action='store_true', default=False,
        help="Write an NVIDIA DALI index file '<shard>.idx' beside each shard (one "
        "'offset size' line per record, as DALI's tfrecord2idx), computed while writing. "
        'Needs uncompressed shards (not with --compression=gzip).')
    parser.add_argument(
        '--dedup', default=DEFAULT_DEDUP, choices=DEDUP_MODES,
        help="Byte-identical source files (same SHA-256): 'keep_all' (default) writes every "
        "file; 'keep_first' hashes the files before converting and writes only the first of "
        "each group by sorted path, the others reported at stage 'duplicate'; "
        "'keep_first_near' does that, and also writes only the first file by sorted path of "
        'each group of near-identical pictures (see --near_duplicate_distance). Every way the '
        'exact and near groups, with leakage across splits and label conflicts, are listed in '
        'duplicates.jsonl and counted in manifest.json.')
    _add_switch(
        parser, '--image_checks', _boolean, True,
        "'true' (default): measure every converted image's stored pixels (no second "
        'decode): a perceptual hash, grouped into near duplicates (duplicates.jsonl), and '
        'quality flags (quality.jsonl: low information, dark, bright, grayscale, small, odd '
        "aspect; docs/images.md). 'false': skip them; exact duplicates are still reported. "
        'Not measured: --image_format=original, --masks (a night reuses the measures of the '
        'records it reuses, kept in images.jsonl).')
    parser.add_argument(
        '--near_duplicate_distance', type=int, default=near_duplicates.DEFAULT_DISTANCE,
        help='Two images whose 64-bit perceptual hashes (OpenCV pHash of the stored pixels) '
        'differ in at most this many bits are compared on their pixels (a 96-byte thumbnail), '
        f'and near duplicates when its similarity is {near_duplicates.MIN_SIMILARITY} or more '
        '(re-encoded, resized, cropped by a few percent, brightened; not flipped). '
        f'0-{near_duplicates.MAX_DISTANCE}; default {near_duplicates.DEFAULT_DISTANCE}, from '
        'the precision/recall table in docs/benchmarks.md.')
    parser.add_argument(
        '--masks', default='none',
        help="Segmentation: pair each image with a mask of class indices, stored as "
        "image/segmentation/class/encoded (PNG, same size as the image; no class label). "
        "'none' (default): classification. 'voc': JPEGImages/*.jpg + SegmentationClass/*.png "
        'under the input root, with ImageSets/Segmentation/NAME.txt as the split lists when '
        "present. 'folders': [SPLIT/]image/X.jpg + [SPLIT/]label/X.png. 'pattern:TEMPLATE': "
        "the mask's path relative to the image's folder, with {stem} for the image's name "
        "without extension, e.g. 'pattern:{stem}_mask.png' or 'pattern:../masks/{stem}.png'. "
        "Class names: --label_map (line i = class id i), or class_names.txt at a VOC root.")
    parser.add_argument(
        '--chroma_subsampling', default='420', choices=codec.CHROMA_SUBSAMPLINGS,
        help="JPEG chroma subsampling: '420' (default, smaller files) or '444' (colour at full "
        'resolution: crisp colour edges, about 1.3x larger).')
    parser.add_argument(
        '--channels', type=int, default=3, choices=codec.CHANNELS,
        help='3 (default): RGB, grayscale sources become 3 equal channels. 1: grayscale '
        '(ITU-R 601-2 luma), image/channels = 1, and the reader yields 1-channel images.')
    parser.add_argument(
        '--background', default='255,255,255',
        help="Colour that transparent pixels (alpha, palette or tRNS transparency) are "
        "composited on, and the fill of --resize_mode=pad: 'R,G,B' or '#rrggbb'. Default white.")
    _add_switch(
        parser, '--stats', _stats_mode, STATS_EXACT,
        "'true' (default): the training split's ('train', else the first split by name) "
        'exact per-channel pixel mean and standard deviation and class frequencies, added up by '
        'Beam combiners, go into manifest.json (imagerecords.load(normalize=True), '
        "preprocessing_layer, class_weights). 'tft': the same numbers from a "
        'tensorflow-transform analysis that also writes the normalising transform into '
        'transform_fn/ (a SavedModel for TFX and serving; about 15 s more CPU per run, not for '
        "--image_format=raw or an s3:// output). 'false': no statistics.")
    parser.add_argument(
        '--embedding_model', default=None,
        help='Store an embedding of every image in its record (image/embedding, float list), '
        'computed with Beam\'s RunInference from the converted image: a Keras model file '
        "(.keras, .h5) or a SavedModel folder, local or on any Beam filesystem, or "
        "'keras.applications:NAME' (e.g. keras.applications:EfficientNetB0, built without its "
        'classifier; ImageNet weights, which Keras downloads, unless --embedding_weights). '
        'Loaded once at launch: a missing or unloadable model stops the launch. See '
        'docs/embeddings.md.')
    parser.add_argument(
        '--embedding_weights', default=None,
        help='A weights file for --embedding_model (a Keras application\'s weights= argument, '
        'or loaded into a Keras model file): offline machines use it instead of a download.')
    parser.add_argument(
        '--embedding_pooling', default='avg', choices=embedding.POOLINGS,
        help="'avg' (default): the global average of the model's feature map over its "
        "height and width, one vector per image (EfficientNetB0: 1,280 floats). 'none': the "
        'whole map (EfficientNetB0 at 224: 7x7x1280 = 62,720 floats, 245 KB per record), its '
        'shape in image/embedding/shape.')
    parser.add_argument(
        '--embedding_preprocessing', default='auto', choices=embedding.PREPROCESSINGS,
        help="What the model's input is made of the 0-255 RGB pixels. 'auto' (default): a "
        "Keras application's own preprocess_input; none for a model file. 'none': 0-255. "
        "'unit': 0-1. 'tf', 'torch', 'caffe': keras.applications.imagenet_utils' modes.")
    parser.add_argument(
        '--embedding_image_size', type=int, default=embedding.DEFAULT_IMAGE_SIZE,
        help='The side of the square model input when the model does not fix it (a Keras '
        'application is built at this size). The stored image\'s central square is resized '
        'to it, as imagerecords.load does in evaluation. Default %(default)s.')
    parser.add_argument(
        '--embedding_batch_size', type=int, default=embedding.DEFAULT_BATCH_SIZE,
        help='The most images per model call in the RunInference step. Default %(default)s: '
        'on CPUs larger batches are no faster and hold more memory per worker (EfficientNetB0 '
        'at 224: about 15 MB per image in the batch); on a GPU, raise it (64-256).')


def parse_fractions(text: str) -> List[Tuple[str, float]]:
  """'train=0.8,validation=0.2' -> [('train', 0.8), ('validation', 0.2)].

  Raises:
    ValueError: malformed entries, bad split names, non-positive fractions, or a sum that is
      not 1 (within 1e-6).
  """
  fractions = []
  for item in text.split(','):
    name, sep, value = item.strip().partition('=')
    if not sep:
      raise ValueError(f'--splits: expected NAME=FRACTION, got {item!r}')
    name = _split_name(name.strip(), '--splits')
    try:
      fraction = float(value)
    except ValueError:
      raise ValueError(f'--splits: {value!r} is not a number (in {item!r})') from None
    if not 0 < fraction <= 1:
      raise ValueError(f'--splits: fraction of {name} must be in (0, 1], got {fraction}')
    fractions.append((name, fraction))
  names = [name for name, _ in fractions]
  if len(set(names)) != len(names):
    raise ValueError(f'--splits: a split is named twice in {text!r}')
  total = sum(f for _, f in fractions)
  if abs(total - 1) > 1e-6:
    raise ValueError(f'--splits: fractions must sum to 1, they sum to {total:g}')
  return fractions


def parse_num_shards(text: str, splits: Sequence[str]) -> Dict[str, int]:
  """'4' or 'train=8,validation=2' -> {split: shards} for exactly the given splits.

  Raises:
    ValueError: malformed text, a count below 1, a split named that the data does not have, or
      a split of the data left without a count.
  """
  text = text.strip()
  if '=' not in text:
    return {split: _positive_int(text, '--num_shards') for split in splits}
  counts = {}
  for item in text.split(','):
    name, _, value = item.strip().partition('=')
    counts[name.strip()] = _positive_int(value, f'--num_shards ({name.strip()})')
  unknown = sorted(set(counts) - set(splits))
  missing = sorted(set(splits) - set(counts))
  if unknown or missing:
    raise ValueError(
        f'--num_shards must name exactly the splits {sorted(splits)}: '
        + ', '.join(filter(None, [unknown and f'unknown {unknown}',
                                  missing and f'missing {missing}'])))
  return counts


def resolve_splits(splits_flag: str, found_folders: Sequence[str]
                   ) -> Tuple[Tuple[str, ...], List[Tuple[str, float]]]:
  """(split folders, fractions): which of the two layouts this run uses, from ``--splits``.

  Exactly one of the two is non-empty.

  Raises:
    ValueError: ``--splits=folders`` without split folders, or a malformed ``--splits``.
  """
  if splits_flag == 'auto':
    return (tuple(found_folders), []) if found_folders else ((), parse_fractions(DEFAULT_SPLITS))
  if splits_flag == 'folders':
    if not found_folders:
      raise ValueError('--splits=folders, but the input has none of the split folders '
                       + ', '.join(f + '/' for f in SPLIT_FOLDER_NAMES))
    return tuple(found_folders), []
  return (), parse_fractions(splits_flag)


def image_spec(options: ConvertOptions) -> codec.ImageSpec:
  """The ImageSpec of the options (validated by ImageSpec itself)."""
  return codec.ImageSpec(
      image_size=options.image_size, resize_mode=options.resize_mode,
      image_format=options.image_format, jpeg_quality=options.jpeg_quality,
      max_pixels=options.max_pixels, max_jpeg_scans=options.max_jpeg_scans,
      chroma_subsampling=options.chroma_subsampling,
      channels=options.channels, background=codec.parse_background(options.background))


def embedding_spec(options: ConvertOptions):
  """The ``--embedding_*`` flags as a ``transforms.image.embedding.EmbeddingSpec``; None without
  ``--embedding_model``. Paths are made absolute (the workers load the model too)."""
  if not options.embedding_model:
    return None
  model = options.embedding_model
  if not model.startswith(embedding.APPLICATION_PREFIX):
    model = absolute_dir(model)
  return embedding.EmbeddingSpec(
      model, options.embedding_weights and absolute_dir(options.embedding_weights),
      options.embedding_pooling, options.embedding_preprocessing,
      options.embedding_image_size, options.embedding_batch_size)


def extensions(options: ConvertOptions) -> Tuple[str, ...]:
  """--extensions as a tuple of lower-case '.ext' strings."""
  items = [e.strip().lower() for e in options.extensions.split(',') if e.strip()]
  return tuple(e if e.startswith('.') else '.' + e for e in items)


def absolute_dir(path: str) -> str:
  """A local path made absolute (workers may run elsewhere); URLs are kept as they are."""
  if '://' in path:
    return path.rstrip('/')
  return os.path.abspath(path)


def _split_name(name: str, flag: str) -> str:
  if not contract.SPLIT_NAME_RE.match(name):
    raise ValueError(f'{flag}: split name {name!r} may hold only letters, digits and _')
  return name


def _positive_int(text: str, flag: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise ValueError(f'{flag}: {text!r} is not a whole number') from None
  if value < 1:
    raise ValueError(f'{flag}: must be at least 1, got {value}')
  return value


STATS_EXACT, STATS_TFT, STATS_OFF = 'true', 'tft', 'false'
"""The values of ``--stats``: Beam combiners alone (``transforms.analysis.statistics``), plus a
tensorflow-transform analysis and ``transform_fn/`` (``transforms.analysis.statistics_tft``),
none."""


def _stats_mode(text: str) -> str:
  """--stats' value: 'tft', or a boolean (true/false, 1/0, yes/no, any case) as
  STATS_EXACT / STATS_OFF."""
  if text.strip().lower() == STATS_TFT:
    return STATS_TFT
  try:
    return STATS_EXACT if _boolean(text) else STATS_OFF
  except argparse.ArgumentTypeError:
    raise argparse.ArgumentTypeError(f"expected true, false or tft, got {text!r}") from None


def _add_switch(parser: argparse.ArgumentParser, flag: str, parse, default, help_text: str):
  """A flag that is on by default and may be given bare (``--stats``: its default) or with a
  value (``--stats=false``, ``--stats=tft``), ``parse`` turning the value into the option's."""
  values = 'true|false|tft' if parse is _stats_mode else 'true|false'
  parser.add_argument(flag, type=parse, nargs='?', const=default, default=default,
                      metavar=values, help=help_text)


def _boolean(text: str) -> bool:
  """'true'/'false' (also 1/0, yes/no, any case) -> bool, for flags like --stats=false."""
  value = text.strip().lower()
  if value in ('true', '1', 'yes'):
    return True
  if value in ('false', '0', 'no'):
    return False
  raise argparse.ArgumentTypeError(f'expected true or false, got {text!r}')


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='python -m pipeline.run')
  private_apis.declare_options(ConvertOptions, parser)
  for action in private_apis.parser_actions(parser):
    if action.dest in ('input_dir', 'output_dir'):
      action.required = True
  return parser


def job_actions() -> List[argparse.Action]:
  """The argparse actions of ConvertOptions, in declaration order (no --help).

  The one list of the job's options that generated files are made from:
  ``deploy/dataflow/make_metadata.py`` (metadata.json) and ``docs/make_options.py``
  (docs/options.md).
  """
  return private_apis.parser_actions(private_apis.declare_options(
      ConvertOptions, argparse.ArgumentParser(add_help=False)))


def required_names() -> frozenset:
  """The options ``python -m pipeline.run --help`` marks required."""
  actions = private_apis.parser_actions(_parser())
  return frozenset(action.dest for action in actions if action.required)


def is_switch(action: argparse.Action) -> bool:
  """True for an ``action='store_true'`` option."""
  return action.nargs == 0 and action.const is True


def help_of(action: argparse.Action) -> str:
  """The option's --help text with argparse's %(default)s / %(choices)s expanded."""
  text = action.help or ''
  if '%' not in text:
    return text
  params = dict(vars(action), prog='pipeline.run')
  if action.choices:
    params['choices'] = ', '.join(str(choice) for choice in action.choices)
  return text % params


CONVERSION_OPTIONS = ('image_size', 'resize_mode', 'image_format', 'jpeg_quality', 'max_pixels',
                      'max_jpeg_scans', 'chroma_subsampling', 'channels', 'background',
                      'label_source', 'masks')
"""The options that decide a record's bytes: a night whose values differ from the previous
run's converts every image again (``pipeline.nightly.plan_incremental``)."""


def conversion_settings(options: ConvertOptions, embedding_model=None) -> Dict[str, object]:
  """The values of ``CONVERSION_OPTIONS``, the record format version and this tool's version,
  and the embedding model's settings (``transforms.image.embedding.EmbeddingModel.settings``: its
  spec and weights fingerprint; None without one): what two nights must share for one to
  reuse the other's records."""
  values = job_options(options)
  settings = {name: values[name] for name in CONVERSION_OPTIONS}
  settings['embedding'] = embedding_model.settings() if embedding_model else None
  settings['format_version'] = contract.FORMAT_VERSION
  settings['tool_version'] = pipeline.__version__
  return settings


# Where the job runs, not what it writes (as Beam's runner flags): kept out of the manifest, so
# that the same conversion on Flink and on the local runner writes the same manifest.
RUNNER_OPTIONS = ('flink_rest_address',)


def job_options(options: ConvertOptions) -> Dict[str, object]:
  """This job's own options (not Beam's, nor ``RUNNER_OPTIONS``) and their values, for the
  manifest."""
  values = options.get_all_options()
  return {action.dest: values.get(action.dest)
          for action in private_apis.parser_actions(_parser())
          if action.dest != 'help' and action.dest not in RUNNER_OPTIONS}
