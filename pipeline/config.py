"""The job's configuration: everything the graph needs, built once from the options.

``pipeline.run.job_config`` validates the flags, probes the input's layout (a few bounded
look-ups, no listing) and returns one :class:`JobConfig`; ``pipeline.run.build_pipeline`` reads
its attributes. Every value pickles to any worker.
"""

import dataclasses
from typing import Dict, List, Optional, Tuple

from pipeline.nightly import IncrementalPlan
from transforms.image.codec import ImageSpec
from transforms.image.embedding import EmbeddingModel
from transforms.inputs.label_file import LabelFileFormat
from transforms.inputs.pairing import MaskPairing
from transforms.outputs.claim import ClaimToken
from transforms.outputs.metadata import MetadataSettings


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
