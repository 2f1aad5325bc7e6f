"""``manifest.json``'s schema: one frozen dataclass per JSON object, each key a field named
there and nowhere else; written by the Beam job, parsed (every value's JSON type checked) by its
readers.

The job builds a :class:`Manifest` (``pipeline/config.py`` at launch,
``transforms/outputs/metadata.py`` with the results) and writes ``Manifest.to_json()``; readers
parse one with :meth:`Manifest.from_json`. Fields are in the file's key order. The file names,
record keys and ``FORMAT_VERSION`` are :mod:`imagerecords.contract`'s; a change here is a change
of the format (``FORMAT_VERSION``, ``ADDITIVE_CHANGES``; ``tests/test_manifest_schema.py`` holds
the schema).
"""

import dataclasses
import functools
import json
import typing
from typing import Any, ClassVar, Dict, List, Optional, Tuple, Union

from imagerecords.contract import (DUPLICATES_FILE, FORMAT_VERSION, MANIFEST_FILE, QUALITY_FILE,
                                   TASK_CLASSIFICATION)

FlagValue = Optional[Union[bool, int, float, str]]
"""The value of one option in the manifest's ``options``: the flag's parsed value, a JSON
scalar (null for an option left unset)."""

JsonValue = Any
"""Any JSON value (null, boolean, number, string, array or object), kept as parsed."""


class _Section:
  """What the manifest's dataclasses share: their JSON form, written by ``to_json`` (every field
  in field order; those named in ``_OMITTED_WHEN_NONE`` left out when None) and parsed, with
  every value's type checked, by ``from_json``."""

  _OMITTED_WHEN_NONE: ClassVar[Tuple[str, ...]] = ()

  def to_json(self) -> Dict[str, Any]:
    """This object as JSON values (dicts, lists, scalars), keys in field order."""
    data = {}
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if not (value is None and field.name in self._OMITTED_WHEN_NONE):
        data[field.name] = _to_json(value)
    return data

  @classmethod
  def from_json(cls, data: Any, where: str = '', file: str = MANIFEST_FILE):
    """Parses ``data``, a JSON object, into this dataclass: keys it does not know are ignored,
    missing ones take their field's default.

    Args:
      data: the parsed JSON (``json.load``).
      where: the object's path in ``file``, for error messages (``splits['train']``); ''
        names it by its class.
      file: the file the object comes from, named first in error messages (a line of
        ``duplicates.jsonl`` is a ``DuplicateGroupEntry``).

    Raises:
      ValueError: ``data`` or a value in it is not of its field's JSON type, or a key without a
        default is missing; the message names the key by its path, e.g. ``manifest.json:
        statistics.pixel_mean[2] is a string ("x"), not a number``.
    """
    return _parse(cls, data, where or cls.__name__, file)


def _to_json(value):
  """``value`` as JSON values: dataclasses of this schema as objects, tuples as arrays."""
  if isinstance(value, _Section):
    return value.to_json()
  if isinstance(value, (list, tuple)):
    return [_to_json(item) for item in value]
  if isinstance(value, dict):
    return {key: _to_json(item) for key, item in value.items()}
  return value


@functools.lru_cache(maxsize=None)
def _field_types(cls) -> Tuple[Tuple[dataclasses.Field, Any], ...]:
  """The fields of the dataclass ``cls`` with their resolved types, in order (cached: parsing
  a manifest of many shards asks for them once per entry)."""
  hints = typing.get_type_hints(cls)
  return tuple((field, hints[field.name]) for field in dataclasses.fields(cls))


def _is_a(kind, value) -> bool:
  """Whether ``value``'s JSON type is that of ``kind`` (its outer level: an array for a List
  whatever its items hold). A bool is no number (JSON's true is not 1); an integer is a number."""
  origin = typing.get_origin(kind)
  if kind is Any:
    return True
  if origin is Union:
    return any(_is_a(choice, value) for choice in typing.get_args(kind))
  if kind is type(None):
    return value is None
  if origin is list:
    return isinstance(value, list)
  if origin is dict or dataclasses.is_dataclass(kind):
    return isinstance(value, dict)
  if kind is bool:
    return isinstance(value, bool)
  if kind is int:
    return isinstance(value, int) and not isinstance(value, bool)
  if kind is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if kind is str:
    return isinstance(value, str)
  raise TypeError(f'{kind!r} has no JSON form in this schema')  # a field typed wrongly here


def _expected(kind) -> str:
  """What a value of ``kind`` is, in JSON's words: 'an integer', 'an array or null'..."""
  if typing.get_origin(kind) is Union:  # None last: 'an array or null'
    choices = sorted(typing.get_args(kind), key=lambda choice: choice is type(None))
    names = [_expected(choice) for choice in choices]
    return ', '.join(names[:-1]) + ' or ' + names[-1]
  if typing.get_origin(kind) is list:
    return 'an array'
  if typing.get_origin(kind) is dict or dataclasses.is_dataclass(kind):
    return 'an object'
  return {bool: 'a boolean', int: 'an integer', float: 'a number', str: 'a string',
          type(None): 'null'}.get(kind, 'any JSON value')


def _parse(kind, value, where: str, file: str = MANIFEST_FILE):
  """``value`` (parsed JSON) checked against ``kind`` (a field's type) and, for a dataclass of
  this schema, made one; ``where``: its path in ``file``. Raises ValueError
  (``_Section.from_json``)."""
  if not _is_a(kind, value):
    found = _json_type(value)
    if value is not None and not isinstance(value, (dict, list)):
      found += f' ({json.dumps(value, ensure_ascii=False)[:40]})'
    raise ValueError(f'{file}: {where} is {found}, not {_expected(kind)}')
  origin = typing.get_origin(kind)
  if origin is Union:  # the first choice that fits: None, or the one JSON type of the value
    choice = next(choice for choice in typing.get_args(kind) if _is_a(choice, value))
    return _parse(choice, value, where, file)
  if origin is list:
    (item,) = typing.get_args(kind)
    return [_parse(item, entry, f'{where}[{index}]', file) for index, entry in enumerate(value)]
  if origin is dict:
    _, item = typing.get_args(kind)
    return {key: _parse(item, entry, f'{where}[{key!r}]', file)
            for key, entry in value.items()}
  if dataclasses.is_dataclass(kind):
    fields = {}
    for field, field_kind in _field_types(kind):
      path = f'{where}.{field.name}' if where else field.name
      if field.name in value:
        fields[field.name] = _parse(field_kind, value[field.name], path, file)
      elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
        raise ValueError(f'{file}: {where or "the manifest"} has no "{field.name}"')
    return kind(**fields)
  return value  # a scalar of its type, or any JSON value (JsonValue)


def schema() -> Dict[str, Dict[str, str]]:
  """The manifest's schema: the name of each dataclass a manifest holds (``Manifest`` and those
  of its fields, nested) -> its fields in order -> the field's type, with `` = <default as
  JSON>`` where a missing key takes one and `` (omitted when null)`` where None is not written.

  >>> schema()['ShardEntry']['bytes']
  'Optional[int] = null'

  ``tests/manifest_schema.json`` holds it as of the last ``FORMAT_VERSION``;
  ``tests/test_manifest_schema.py`` compares the two.
  """
  classes: Dict[str, Dict[str, str]] = {}

  def visit(cls):
    if cls.__name__ in classes:
      return
    fields = classes[cls.__name__] = {}
    for field, kind in _field_types(cls):
      text = _type_name(kind)
      if field.default is not dataclasses.MISSING:
        text += ' = ' + json.dumps(_to_json(field.default))
      elif field.default_factory is not dataclasses.MISSING:
        text += ' = ' + json.dumps(_to_json(field.default_factory()))
      if field.name in cls._OMITTED_WHEN_NONE:
        text += ' (omitted when null)'
      fields[field.name] = text
      for inner in _dataclasses_in(kind):
        visit(inner)

  visit(Manifest)
  return classes


def _type_name(kind) -> str:
  """A field's type as its annotation reads: 'Optional[List[float]]', 'Dict[str, int]'..."""
  origin, args = typing.get_origin(kind), typing.get_args(kind)
  if origin is Union:
    choices = [choice for choice in args if choice is not type(None)]
    inner = (_type_name(choices[0]) if len(choices) == 1
             else f'Union[{", ".join(_type_name(choice) for choice in choices)}]')
    return f'Optional[{inner}]' if type(None) in args else inner
  if origin is list:
    return f'List[{_type_name(args[0])}]'
  if origin is dict:
    return f'Dict[{_type_name(args[0])}, {_type_name(args[1])}]'
  return 'Any' if kind is Any else kind.__name__


def _dataclasses_in(kind) -> List[type]:
  """The dataclasses a field's type holds (itself, or in an Optional, List or Dict)."""
  if dataclasses.is_dataclass(kind):
    return [kind]
  return [inner for arg in typing.get_args(kind) for inner in _dataclasses_in(arg)]


TOOL_NAME = 'imagerecords'
"""``tool.name`` of every manifest the job writes: what tells its outputs from others'
(``transforms/outputs/authorship.py``)."""


@dataclasses.dataclass(frozen=True)
class ToolInfo(_Section):
  """``tool``: what wrote the output. name: ``TOOL_NAME``. version: its version (``0.1.0``)."""
  name: str
  version: str


@dataclasses.dataclass(frozen=True)
class ImageMask(_Section):
  """``image.mask`` of a segmentation run (``--masks``): the masks' encoding. format:
  ``'png'`` (8-bit grayscale of class ids). void: the ignore class id (``MASK_VOID``, 255).
  layout: how masks were paired with images (``--masks``: ``'voc'``, ``'folders'`` or
  ``'pattern'``)."""
  format: str
  void: int
  layout: str


@dataclasses.dataclass(frozen=True)
class ImageSection(_Section):
  """``image``: how the stored images were made (the conversion flags of the same names).

  format: ``--image_format`` (``'jpeg'``, ``'png'``, ``RAW_FORMAT``, ``'original'``).
  channels: 3 (RGB) or 1 (grayscale). image_size: ``--image_size``, pixels; its meaning
  depends on resize_mode (``--resize_mode``: ``'shorter_side'``, ``'center_crop'``, ``'pad'``,
  ``'stretch'``, ``'none'``). mask: segmentation runs only (:class:`ImageMask`), else left out.
  """
  format: str
  channels: int
  image_size: int
  resize_mode: str
  mask: Optional[ImageMask] = None

  _OMITTED_WHEN_NONE = ('mask',)


@dataclasses.dataclass(frozen=True)
class EmbeddingSection(_Section):
  """``embedding`` (``--embedding_model``; left out without): the model whose output each
  record carries as ``EMBEDDING``.

  model: its spec (a path, or ``keras.applications:NAME``). weights: ``--embedding_weights``,
  or None. fingerprint: hex SHA-256 of the weights as loaded. pooling: ``'avg'`` or
  ``'none'``. shape: one stored embedding's shape (``[1280]`` pooled, ``[7, 7, 1280]`` not).
  dtype: ``'float32'``. input_size: the model's input side, pixels. preprocessing:
  ``--embedding_preprocessing``. feature: the record key of the values (``EMBEDDING``).
  shape_feature: the record key of their shape (``EMBEDDING_SHAPE``) when stored (unpooled),
  else None.
  """
  model: str
  weights: Optional[str]
  fingerprint: str
  pooling: str
  shape: List[int]
  dtype: str
  input_size: int
  preprocessing: str
  feature: str
  shape_feature: Optional[str]


@dataclasses.dataclass(frozen=True)
class ShardEntry(_Section):
  """One shard of a split, as ``manifest.json`` lists it.

  file: the shard's base name (:func:`shard_file_name`). num_examples: its records. bytes:
  its size as stored (None in manifests whose store gave none). sha256: the hex SHA-256 digest
  of the file's bytes as stored (of the compressed bytes for ``.tfrecord.gz``; ``sha256sum``
  gives the same); None in manifests of format version 1 written before this key. The job
  counts the records and takes the size and digest from the bytes it writes, as it writes them
  (until 2026-12-07 it read each shard back once written). The reader
  checks ``bytes`` before it reads a shard, and ``sha256`` on request
  (``imagerecords.load(..., verify_shards=...)``).
  """
  file: str
  num_examples: int
  bytes: Optional[int] = None
  sha256: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class SplitEntry(_Section):
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


@dataclasses.dataclass(frozen=True)
class DuplicateCounts(_Section):
  """The counts of one kind of duplicates in ``duplicates``: num_groups (groups of 2+ files),
  num_files (files in them), num_dropped (files not written: ``--dedup=keep_first`` or
  ``keep_first_near``), num_leaking_groups (groups whose files lie in 2+ splits),
  num_label_conflicts (groups whose files carry 2+ class names)."""
  num_groups: int = 0
  num_files: int = 0
  num_dropped: int = 0
  num_leaking_groups: int = 0
  num_label_conflicts: int = 0


@dataclasses.dataclass(frozen=True)
class DuplicateFileEntry(_Section):
  """One file of a duplicate group: its relative path, split and class name (None:
  unlabeled)."""
  file: str
  split: str
  label: Optional[str]


@dataclasses.dataclass(frozen=True, kw_only=True)
class DuplicateGroupEntry(_Section):
  """A group of files that hold the same picture: a line of ``DUPLICATES_FILE`` (there with
  its keys sorted), and one of ``duplicates.examples``.

  kind: ``'exact'`` (byte-identical) or ``'near'`` (perceptual hashes and pixels alike).
  files: sorted by path. leaks_across_splits: the files lie in 2+ splits. label_conflict:
  they carry 2+ class names. sha256: hex digest of the content (exact groups). kept: the one
  file written (``--dedup=keep_first``, ``keep_first_near``). similarity: the lowest pixel
  similarity (0-1) of the pairs that joined a near group. hash_distance: their largest
  Hamming distance, bits of 64. The last four are left out when None.
  """
  kind: str
  files: List[DuplicateFileEntry]
  leaks_across_splits: bool
  label_conflict: bool
  sha256: Optional[str] = None
  kept: Optional[str] = None
  similarity: Optional[float] = None
  hash_distance: Optional[int] = None

  _OMITTED_WHEN_NONE = ('sha256', 'kept', 'similarity', 'hash_distance')


@dataclasses.dataclass(frozen=True)
class DuplicatesSection(_Section):
  """``duplicates`` (``transforms/analysis/dedup.py``): the counts of exact and near duplicate
  groups, the file listing every group (``DUPLICATES_FILE``), and up to 5 groups to show,
  label conflicts and leaks first; the manifest stays small whatever the number of groups."""
  exact: DuplicateCounts = dataclasses.field(default_factory=DuplicateCounts)
  near: DuplicateCounts = dataclasses.field(default_factory=DuplicateCounts)
  file: str = DUPLICATES_FILE
  examples: List[DuplicateGroupEntry] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class QualitySection(_Section):
  """``quality`` (``transforms/analysis/quality.py``): num_measured, the examples whose pixels
  were measured (not ``--image_format=original``, segmentation, or records reused from the
  previous night); num_flagged, those a check flagged, each listed in file (``QUALITY_FILE``);
  flags: check name -> images it flagged, every check of the job in its order (a map: the
  checks are the quality module's, and a new one is not a new key here)."""
  num_measured: int = 0
  num_flagged: int = 0
  file: str = QUALITY_FILE
  flags: Dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class DiffSection(_Section):
  """``diff`` (``transforms/outputs/image_index.py``; None on a run with no previous one): what
  changed since ``previous_run`` (its published folder).

  added, removed, changed, unchanged: files by path (changed: the same path, other bytes).
  moved_split, relabeled: images whose split or class differs (the same path, or a renamed
  photo). renamed: removed and added files that are one file moved (the same SHA-256).
  by_class: class name -> verdict (one of the counts' names but ``unchanged``) -> images; the
  verdicts of no image left out.
  """
  previous_run: Optional[str] = None
  added: int = 0
  removed: int = 0
  changed: int = 0
  unchanged: int = 0
  moved_split: int = 0
  relabeled: int = 0
  renamed: int = 0
  by_class: Dict[str, Dict[str, int]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class RejectedRecord(_Section):
  """A previous record a night did not copy, and why (``incremental.rejected``).

  file: the image's relative path, as its record or the reuse entries name it; None where the
    damage hides it (a record that does not parse, the unlocatable rest of a shard).
  shard: the previous shard's path; None for an image found in no shard.
  record: the record's index in the shard (0-based, file order); None where unknown (no shard,
    or a shard that cannot be read).
  offset: the byte offset of its frame (of the decompressed stream for ``.tfrecord.gz``); None
    where unknown (as ``record``, and where a gzip stream stops inflating).
  reason: in words.
  """
  file: Optional[str]
  shard: Optional[str]
  record: Optional[int]
  offset: Optional[int]
  reason: str


@dataclasses.dataclass(frozen=True)
class IncrementalSection(_Section):
  """``incremental`` (``--run_date``; None otherwise): how the night reused the previous run.

  previous_run: the previous published run, or None on the first night. reused_from: the same
  when its records were reused, None on a full rebuild, whose reason is full_rebuild_reason.
  settings: what decides a record's bytes (``pipeline.options.conversion_settings``: the
  conversion flags, the embedding model, the format and tool versions), compared key by key
  with the next night's; a map of whatever the writing version compared, so that a night
  tells a setting it does not know from one that changed (None: a version that recorded none).
  reused: records copied from the previous run, verified. converted: images that went through
  the codec. reconverted: images to reuse that were converted again (no verified record).
  rejected: the first previous records not copied (:class:`RejectedRecord`).
  """
  previous_run: Optional[str] = None
  reused_from: Optional[str] = None
  full_rebuild_reason: Optional[str] = None
  settings: Optional[Dict[str, JsonValue]] = None
  reused: int = 0
  converted: int = 0
  reconverted: int = 0
  rejected: List[RejectedRecord] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StatisticsSection(_Section):
  """``statistics`` (``--stats``, on by default; None with ``--stats=false``): the training
  split's pixel statistics, on the 0-255 scale of the stored pixels as TensorFlow decodes them
  (``JPEG_DCT_METHOD``).

  split: the split they cover. num_examples: its examples. num_pixels: the pixels summed (per
  channel). pixel_mean, pixel_std: per channel (3 or 1 floats, 6 decimals); None for an empty
  split. transform_fn: ``TRANSFORM_FN_DIR`` where ``--stats=tft`` wrote the transform, else
  None. class_frequencies: class name -> examples of the split (its ``class_counts``).
  """
  split: str
  num_examples: int
  num_pixels: int
  pixel_mean: Optional[List[float]]
  pixel_std: Optional[List[float]]
  transform_fn: Optional[str] = None
  class_frequencies: Dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Timings(_Section):
  """``timings``: wall_time_s, seconds from the launch to the manifest (3 decimals)."""
  wall_time_s: float = 0.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Manifest(_Section):
  """``manifest.json``: what an output directory holds and how the run that wrote it went.

  Each field is one top-level key (its name), in the file's order, and each section one
  dataclass above. Every key is written (null when empty) but ``embedding``, ``metrics`` and
  ``step_msecs``, left out when None. ``tool`` and ``image`` have no default: every version
  wrote them, and a manifest without them is not this job's.

  format_version: the ``FORMAT_VERSION`` that wrote it. status: ``'complete'`` or
  ``'failed'`` (then ``error`` is the one-line reason and there is no ``_SUCCESS``).
  created_utc: ISO 8601, seconds. input_dir, output_dir: where the images were read, and where
  readers find the output (a dated run: its published folder). options: option name -> value,
  the job's own flags as run (``pipeline.options.job_options``): a map, as the flags are many
  and change often, and a reader needs none of them (what it needs is in ``image``).
  split_source: ``'folders'``, ``'hash'``, ``'label_file'`` or ``'split_lists'``. task:
  ``TASK_CLASSIFICATION`` or ``TASK_SEGMENTATION``. classes: ``labels.txt``'s lines.
  splits: split name -> :class:`SplitEntry`. Counts: ``num_inputs`` = ``num_examples`` +
  ``num_failures`` (image inputs); ``num_skipped``: files that were not image inputs (links,
  odd files); failures_by_stage: stage -> failed and skipped inputs (``FAILURES_FILE``).
  run_date: ``--run_date``, ``YYYY-MM-DD``. metrics: the runner's counters of the job
  (namespace ``imagerecords``), name -> value, and step_msecs: milliseconds each top-level
  step of the graph spent in its own code (DoFns, combiners, writes; not the runner's moving
  of elements between steps), both added by the launcher after the job from what the runner
  reports (maps: their names are the runner's and the graph's).
  """
  format_version: int = FORMAT_VERSION
  tool: ToolInfo
  status: str = 'complete'
  error: Optional[str] = None
  created_utc: Optional[str] = None
  input_dir: Optional[str] = None
  output_dir: Optional[str] = None
  options: Dict[str, FlagValue] = dataclasses.field(default_factory=dict)
  image: ImageSection
  embedding: Optional[EmbeddingSection] = None
  split_source: Optional[str] = None
  task: str = TASK_CLASSIFICATION
  classes: List[str] = dataclasses.field(default_factory=list)
  splits: Dict[str, SplitEntry] = dataclasses.field(default_factory=dict)
  num_inputs: int = 0
  num_examples: int = 0
  num_failures: int = 0
  num_skipped: int = 0
  failures_by_stage: Dict[str, int] = dataclasses.field(default_factory=dict)
  duplicates: Optional[DuplicatesSection] = None
  quality: Optional[QualitySection] = None
  run_date: Optional[str] = None
  diff: Optional[DiffSection] = None
  incremental: Optional[IncrementalSection] = None
  statistics: Optional[StatisticsSection] = None
  timings: Timings = dataclasses.field(default_factory=Timings)
  metrics: Optional[Dict[str, int]] = None
  step_msecs: Optional[Dict[str, int]] = None

  _OMITTED_WHEN_NONE = ('embedding', 'metrics', 'step_msecs')

  @classmethod
  def from_json(cls, data: Any, where: str = '') -> 'Manifest':
    """Parses a ``manifest.json`` object (``json.load``) of format version 1 up to
    ``FORMAT_VERSION``, every value's type checked; keys this version does not know are
    ignored and missing ones take their defaults (older manifests have no ``task``:
    classification).

    Raises:
      FormatVersionError: its ``format_version`` is newer than ``FORMAT_VERSION`` (or below 1).
      ValueError: ``data`` is not a JSON object, or a value in it is not of its field's type
        (a split that is null, ``shards`` that are not objects), or a key without a default is
        missing (``tool``, ``image``, a split's counts); the message names the section and the
        key, e.g. ``manifest.json: splits['train'] has no "num_examples"``.
    """
    if not isinstance(data, dict):
      raise ValueError(f'{MANIFEST_FILE} holds {_json_type(data)}, not a JSON object')
    # the version first: a newer manifest's other keys may not be this version's at all
    version = _parse(int, data.get('format_version', FORMAT_VERSION), 'format_version')
    if version > FORMAT_VERSION:
      raise FormatVersionError(
          f'{MANIFEST_FILE}: format_version {version} is newer than this imagerecords reads '
          f'(1 to {FORMAT_VERSION}): it was written by a newer imagerecords; upgrade the '
          'imagerecords package (the reader) to read it')
    if version < 1:
      raise FormatVersionError(f'{MANIFEST_FILE}: format_version {version} is no version (the '
                               'first is 1)')
    return _parse(cls, data, where)


class FormatVersionError(ValueError):
  """``manifest.json`` says a ``format_version`` this package cannot read: a newer one than
  ``FORMAT_VERSION`` (the output of a newer imagerecords), or none at all (below 1)."""


def _json_type(value) -> str:
  """What a JSON value is, in JSON's words: 'null', 'an array', 'a string'..."""
  if value is None:
    return 'null'
  names = {list: 'an array', str: 'a string', bool: 'a boolean', int: 'a number',
           float: 'a number', dict: 'an object'}
  return names.get(type(value), type(value).__name__)
