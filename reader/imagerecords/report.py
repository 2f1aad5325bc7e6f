"""What inspecting an output directory finds: the parsed records and the per-split report.

:func:`imagerecords.inspect.inspect` fills a :class:`Report` (verification) and
:mod:`imagerecords.pictures` draws from it; both import these types from here, so neither
module imports the other.
"""

import collections
import dataclasses
from typing import Dict, FrozenSet, List, Optional, Tuple

from imagerecords import contract
from imagerecords import records
from imagerecords.manifest_schema import DuplicateGroupEntry


# --- records ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Record:
  """The parts of one parsed record that inspection uses (keys: :mod:`imagerecords.contract`).

  ``mask_classes`` is filled in by :func:`check_record`: the class ids the decoded mask holds,
  void (255) left out.
  """
  encoded: bytes
  image_format: str
  height: int
  width: int
  channels: int
  label: Optional[int]
  class_text: Optional[str]
  filename: str
  mask: Optional[bytes]
  mask_classes: Optional[FrozenSet[int]] = None


def parse_record(data: bytes) -> Record:
  """Parses a serialized ``tf.train.Example`` into a :class:`Record` (with
  :func:`imagerecords.records.parse_example`: no TensorFlow).

  Raises:
    imagerecords.records.RecordError: not a ``tf.train.Example`` (a ValueError; the message
      starts 'not a tf.train.Example').
    ValueError: a required key is missing or of the wrong type (the message names the key).
  """
  feature = records.parse_example(data, _RECORD_KEYS)

  def get(key, kind, required=True):
    if key not in feature:
      if required:
        raise ValueError(f'no {key!r} feature')
      return None
    values = feature[key]
    count = len(values) if all(isinstance(value, kind) for value in values) else 0
    if count != 1:  # a value of another kind is no value of this one, as protobuf reads it
      raise ValueError(f'{key!r} holds {count} {_KIND_NAMES[kind]} values, not 1')
    return values[0]

  text = get(contract.CLASS_TEXT, bytes, required=False)
  return Record(
      encoded=get(contract.IMAGE_ENCODED, bytes),
      image_format=get(contract.IMAGE_FORMAT, bytes).decode('utf-8', 'replace'),
      height=get(contract.IMAGE_HEIGHT, int),
      width=get(contract.IMAGE_WIDTH, int),
      channels=get(contract.IMAGE_CHANNELS, int),
      label=get(contract.CLASS_LABEL, int, required=False),
      class_text=None if text is None else text.decode('utf-8', 'replace'),
      filename=(get(contract.FILENAME, bytes, required=False) or b'').decode(
          'utf-8', 'replace'),
      mask=get(contract.MASK_ENCODED, bytes, required=False))


_RECORD_KEYS = (contract.IMAGE_ENCODED, contract.IMAGE_FORMAT, contract.IMAGE_HEIGHT,
                contract.IMAGE_WIDTH, contract.IMAGE_CHANNELS, contract.CLASS_LABEL,
                contract.CLASS_TEXT, contract.FILENAME, contract.MASK_ENCODED)
_KIND_NAMES = {bytes: 'bytes_list', int: 'int64_list'}


# --- one output directory -----------------------------------------------------------------------


@dataclasses.dataclass
class SplitReport:
  """What was read of one split. ``sizes`` holds (height, width) of every record read."""
  name: str
  num_shards: int = 0
  num_examples: int = 0
  bytes: int = 0
  class_counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  sizes: List[Tuple[int, int]] = dataclasses.field(default_factory=list)
  samples: List[Record] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Report:
  """The result of :func:`inspect`: the problems (one line each) and what was read per split."""
  data_dir: str
  class_names: List[str]
  splits: Dict[str, SplitReport]
  problems: List[str]
  verified: bool
  segmentation: bool = False
  # duplicates.jsonl's groups worth drawing (label conflicts, then leaks, first),
  # quality.jsonl's flagged images (as their JSON objects), and the records of their files
  duplicate_groups: List[DuplicateGroupEntry] = dataclasses.field(default_factory=list)
  flagged: List[dict] = dataclasses.field(default_factory=list)
  images: Dict[str, Record] = dataclasses.field(default_factory=dict)
  input_dir: Optional[str] = None

  @property
  def ok(self) -> bool:
    return not self.problems
