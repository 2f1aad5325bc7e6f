"""The job's configuration: everything the graph needs, built once from the options.

The launcher validates the flags (``pipeline.validation.validate``), claims the output, then
:meth:`JobConfig.from_options` probes the input's layout (a few bounded look-ups, no listing),
reads the label map and the previous night, and returns one :class:`JobConfig`;
``pipeline.run.build_pipeline`` reads its attributes. Every value pickles to any worker.
"""

import dataclasses
import logging
import os
import time
import uuid
from typing import Dict, List, Optional, Tuple

from apache_beam.io.filesystems import FileSystems
from imagerecords import contract
from imagerecords import manifest_schema

import pipeline
from pipeline import local_runner, nightly
from pipeline import options as opts
from pipeline.nightly import IncrementalPlan
from transforms.files.folders import holds_a_file, is_local
from transforms.image.codec import ImageSpec
from transforms.image.embedding import EmbeddingModel, probe
from transforms.image.masks import MASK_FORMAT
from transforms.inputs import pairing
from transforms.inputs.label_file import LabelFileFormat, label_file_splits, sniff_format
from transforms.inputs.labels import read_label_map
from transforms.inputs.pairing import MaskPairing
from transforms.inputs.splits import probe_split_folders
from transforms.outputs.claim import ClaimToken
from transforms.outputs.metadata import MetadataSettings

_LOG = logging.getLogger('imagerecords')


@dataclasses.dataclass(frozen=True)
class JobConfig:
  """One run's configuration (frozen: the graph reads it, nothing changes it).

  Paths are absolute (local) or URLs (``gs://``, ``s3://``).
  """
  input_dir: str
  spec: ImageSpec  # what every image becomes (size, resize mode, format, channels, ...)
  output_dir: str  # where the pipeline writes: a dated run's staging folder, else --output_dir
  output_root: str  # --output_dir as given (made absolute)
  publish_dir: Optional[str]  # --run_date: OUTPUT/dt=DATE, where the run is published; else None
  previous_run: Optional[str]  # --run_date: the last published run, if any
  previous_index: Optional[str]  # its images.jsonl, when it has one (the night's diff)
  extensions: Tuple[str, ...]  # the file extensions taken for images (lower case, with '.')
  label_source: str  # --label_source
  label_file: Optional[str]  # --label_source=file:PATH, made absolute
  label_file_format: Optional[LabelFileFormat]
  file_splits: Tuple[str, ...]  # the label file's split column's names; () without one
  dedup: str  # --dedup
  near_duplicate_distance: int
  image_checks: bool  # perceptual hashes and quality flags
  label_map: Tuple[str, ...]  # class names that keep their ids (labels.txt of the last run)
  strict_labels: bool
  split_folders: Tuple[str, ...]  # the split folders used as splits; () for hashed fractions
  fractions: List[Tuple[str, float]]  # (split, fraction) of hashed splits; [] with folders
  num_shards: Dict[str, int]  # split -> its fixed number of shards
  compressed: bool  # --compression=gzip
  shuffle_seed: int
  metadata: MetadataSettings  # the manifest's launch entries and the metadata step's limits
  claim: Optional[ClaimToken]  # the run's claim on its output; None: unclaimed (no check)
  dali_index: bool
  stats: Optional[str]  # options.STATS_EXACT or STATS_TFT; None for --stats=false
  embedding: Optional[EmbeddingModel]  # --embedding_model, loaded and fingerprinted
  masks: Optional[MaskPairing]  # --masks: how images pair with masks; None: classification
  split_lists: Dict[str, Tuple[str, ...]]  # VOC's ImageSets/Segmentation/NAME.txt lists
  incremental: Optional[IncrementalPlan]  # --run_date: what the night reuses
  run_id: str  # this launch's id (the claim's), in publication markers
  follow_external_symlinks: bool
  max_file_bytes: Optional[int]
  progress_dir: Optional[str] = None  # local runs: the conversion's progress files

  @classmethod
  def from_options(cls, options: opts.ConvertOptions,
                   claim_token: Optional[ClaimToken] = None) -> 'JobConfig':
    """Everything the graph needs, from options that passed ``pipeline.validation.validate`` (the
    launcher validates them before it claims the output): the input's layout probed (a few
    bounded look-ups, no listing), the label map and the previous night read, the manifest's
    launch section built, as values that pickle to any worker.

    ``claim_token``: the run's claim on its output (``transforms.outputs.claim``), checked by the
    pipeline before it publishes; a dated run clears a dead run's staging folder here, so the
    claim must be held first.

    Raises:
      ValueError: a flag's value does not fit the input (a split folder, a label file's split
        column), or the input directory holds no file.
      OSError: the label file or label map cannot be read.
    """
    input_dir = opts.absolute_dir(options.input_dir)
    output_dir = opts.absolute_dir(options.output_dir)
    label_file = None
    if options.label_source.startswith('file:'):
      label_file = opts.absolute_dir(options.label_source.split(':', 1)[1])
    _check_input_dir(input_dir)
    layout = nightly.plan_run(output_dir, options.run_date, options.overwrite) if (
        options.run_date) else None
    previous = layout.previous_dir if layout else None
    label_map_path = options.label_map
    if (not label_map_path and previous and options.label_source != 'none'
        and FileSystems.exists(FileSystems.join(previous, contract.LABELS_FILE))):
      label_map_path = FileSystems.join(previous, contract.LABELS_FILE)  # ids stay across nights
    masks = pairing.parse_masks(options.masks)
    if masks and masks.layout == 'voc' and not label_map_path:
      label_map_path = pairing.voc_class_names_path(input_dir)  # labelme's VOC export
    label_map = read_label_map(label_map_path) if label_map_path else ()
    strict_labels = options.strict_labels and bool(label_map)
    if options.strict_labels and not label_map:  # --run_date's first night: nothing to keep yet
      _LOG.warning('--strict_labels: no earlier run under %s to take classes from; this first '
                   'run sets them', output_dir)
    spec = opts.image_spec(options)
    # --embedding_model: loaded once, checked, fingerprinted; kept for a worker of this process
    embedding = probe(opts.embedding_spec(options), spec.image_format,
                      in_process=local_runner.runs_in_process(options)) if (
        options.embedding_model) else None
    incremental = nightly.plan_incremental(
        previous, opts.conversion_settings(options, embedding), label_map,
        options.full_rebuild) if layout else None
    previous_index = previous and FileSystems.join(previous, contract.IMAGES_INDEX_FILE)
    if previous_index and not FileSystems.exists(previous_index):
      previous_index = None  # written by a version without images.jsonl: no diff this night
    label_file_format = sniff_format(label_file) if label_file else None
    # a label file's split column assigns the splits (--splits must stay auto)
    file_splits = (label_file_splits(label_file, label_file_format, options.splits)
                   if label_file else ())
    # VOC's ImageSets/Segmentation/NAME.txt lists are the splits (with --splits=auto)
    split_lists = (pairing.read_split_lists(input_dir)
                   if masks and masks.layout == 'voc' and options.splits == 'auto' else {})
    split_folders, fractions = ((), []) if file_splits or split_lists else opts.resolve_splits(
        options.splits, probe_split_folders(input_dir))
    splits = list(file_splits or split_lists or split_folders) or [name for name, _ in fractions]
    num_shards = opts.parse_num_shards(options.num_shards, splits)
    compressed = options.compression == 'gzip'
    # the manifest's entries known at launch; the metadata step adds the results
    launch = manifest_schema.Manifest(
        tool=manifest_schema.ToolInfo(name=manifest_schema.TOOL_NAME, version=pipeline.__version__),
        input_dir=input_dir,
        output_dir=layout.publish_dir if layout else output_dir,  # where readers find it
        options=opts.job_options(options),
        image=manifest_schema.ImageSection(
            format=spec.image_format, channels=spec.channels, image_size=spec.image_size,
            resize_mode=spec.resize_mode,
            mask=manifest_schema.ImageMask(format=MASK_FORMAT, void=contract.MASK_VOID,
                                           layout=masks.layout) if masks else None),
        embedding=embedding.manifest_section() if embedding else None,
        split_source=('label_file' if file_splits else 'split_lists' if split_lists
                      else 'folders' if split_folders else 'hash'),
        task=contract.TASK_SEGMENTATION if masks else contract.TASK_CLASSIFICATION,
        run_date=options.run_date,
        incremental=incremental.manifest_section() if incremental else None)
    metadata = MetadataSettings(
        launch=launch, write_dir=layout.staging_dir if layout else output_dir,
        write_success=layout is None, num_shards=num_shards, compressed=compressed,
        max_failure_fraction=options.max_failure_fraction,
        required_classes=tuple(label_map) if strict_labels else (), start_time=time.time(),
        # a classification run with labels ends with two classes or more (--allow_single_class)
        label_source=None if masks or options.label_source == 'none' else options.label_source,
        allow_single_class=options.allow_single_class)
    return cls(
        input_dir=input_dir, spec=spec,
        # where the pipeline writes; a dated run stages, then publishes to publish_dir
        output_dir=layout.staging_dir if layout else output_dir,
        output_root=output_dir, publish_dir=layout.publish_dir if layout else None,
        previous_run=previous, previous_index=previous_index,
        extensions=opts.extensions(options), label_source=options.label_source,
        label_file=label_file,
        label_file_format=label_file_format, file_splits=file_splits,
        dedup=options.dedup, near_duplicate_distance=options.near_duplicate_distance,
        image_checks=options.image_checks,
        label_map=label_map, strict_labels=strict_labels,
        split_folders=split_folders,
        fractions=fractions, num_shards=num_shards, compressed=compressed,
        shuffle_seed=options.shuffle_seed, metadata=metadata, claim=claim_token,
        dali_index=options.dali_index,
        # --stats: opts.STATS_EXACT or STATS_TFT; None for --stats=false
        stats=None if options.stats == opts.STATS_OFF else options.stats,
        embedding=embedding,  # --embedding_model: transforms.image.embedding.EmbeddingModel
        masks=masks, split_lists=split_lists,
        incremental=incremental,  # --run_date: what the night reuses (pipeline.nightly)
        # this launch, in publication markers: the claim's id (transforms.outputs.claim) when it
        # holds one
        run_id=claim_token.run_id if claim_token else f'{os.getpid()}-{uuid.uuid4().hex}',
        follow_external_symlinks=options.follow_external_symlinks,
        max_file_bytes=options.max_file_bytes)


def _check_input_dir(input_dir: str) -> None:
  """Raises ValueError unless ``input_dir`` is a folder with something in it (locally: any
  entry, a link to a folder included; on object stores: one object, found with a limit of 1)."""
  if is_local(input_dir):
    try:
      with os.scandir(input_dir) as entries:
        empty = next(entries, None) is None
    except OSError as error:
      raise ValueError(f'--input_dir={input_dir} cannot be listed: {error.strerror or error}'
                       ) from None
  else:
    empty = not holds_a_file(input_dir)
  if empty:
    raise ValueError(f'--input_dir={input_dir} does not exist or holds no file')
