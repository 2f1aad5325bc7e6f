"""Labels from a label file beside or outside the images (``--label_source=file:PATH``).

Two formats, told apart by the first line:

* CSV with a header naming a ``filename`` and a ``label`` column, and optionally a ``split``
  column (other columns ignored)::

      filename,label,split
      images/val_0.JPEG,n03444034,train
      images/val_1.JPEG,n04067472,test

* whitespace-separated ``FILENAME LABEL [more columns ignored]`` lines, no header: ImageNet's
  ``val.txt`` (``ILSVRC2012_val_00000001.JPEG 65``), Tiny ImageNet's ``val_annotations.txt``
  (``val_0.JPEG<TAB>n03444034<TAB>0 32 44 62``).

A file name with a '/' is matched against the image's path relative to the input root; one
without is matched against the image's base name. The label file and the listing are joined
with a CoGroupByKey, so both directions are reported: an image the file does not name fails at
stage ``label``; a file entry with no image is reported at stage ``missing`` (not an input, so
it does not count against ``--max_failure_fraction``). Integer labels are class ids, kept as
given (see ``transforms.inputs.labels.merge_class_names``).

A ``split`` column assigns each image's split, overriding split folders and the hash split. The
launcher reads the column once (``label_file_splits``, streaming, keeping only the distinct
names) to learn the splits and their shard counts before the pipeline starts; ``--splits`` other
than ``auto`` together with a split column is refused as contradictory. An image whose split cell
is empty, not a valid split name (``contract.SPLIT_NAME_RE``) or differs between two lines fails
at stage ``split``.
"""

import csv
import io
import posixpath
from typing import Iterable, NamedTuple, Optional, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from imagerecords import contract

from transforms.elements import FAILURES_TAG, STAGE_LABEL, STAGE_MISSING, STAGE_SPLIT, Failure
from transforms.files import reads
from transforms.files.folders import escape_pattern


class LabelFileFormat(NamedTuple):
  """How to read a label file: CSV column indices (with a header line), or whitespace."""
  is_csv: bool
  filename_column: int = 0
  label_column: int = 1
  by_path: bool = False  # entries hold '/'-paths relative to the input root, not base names
  split_column: Optional[int] = None  # CSV only: index of the 'split' column, if any


def sniff_format(path: str) -> LabelFileFormat:
  """Reads the first lines of the label file (launch time, a few KB) to learn its format.

  Raises:
    ValueError: the file is empty, or a CSV header lacks a ``filename`` or ``label`` column.
  """
  def read_head():
    with FileSystems.open(path) as handle:
      return handle.read(64 * 1024)
  head = reads.with_retries(read_head, path).decode('utf-8-sig', errors='replace')
  lines = [line for line in head.splitlines() if line.strip()]
  if not lines:
    raise ValueError(f'--label_source: label file {path} is empty')
  first = lines[0]
  if ',' in first:
    header = [c.strip().lower() for c in next(csv.reader([first]))]
    missing = [c for c in ('filename', 'label') if c not in header]
    if missing:
      raise ValueError(f'--label_source: CSV label file {path} has no {missing} column in its '
                       f'header {header}')
    column = header.index('filename')
    names = [row[column] for row in csv.reader(lines[1:]) if len(row) > column]
    return LabelFileFormat(True, column, header.index('label'), any('/' in n for n in names),
                           header.index('split') if 'split' in header else None)
  return LabelFileFormat(False, by_path=any('/' in line.split()[0] for line in lines))


def parse_line(line: str, fmt: LabelFileFormat
               ) -> Optional[Tuple[str, Tuple[str, Optional[str]]]]:
  """(file name, (label, split)) of one data line; None for a blank or short line (or the
  header). The split is the ``split`` column's cell ('' when the line lacks it), None when the
  file has no split column."""
  line = line.lstrip('\ufeff')  # a UTF-8 byte order mark before the header
  split = None
  if fmt.is_csv:
    row = next(csv.reader([line]), [])
    if len(row) <= max(fmt.filename_column, fmt.label_column):
      return None
    name, label = row[fmt.filename_column].strip(), row[fmt.label_column].strip()
    if name.lower() == 'filename' and label.lower() == 'label':
      return None
    if fmt.split_column is not None:
      split = row[fmt.split_column].strip() if len(row) > fmt.split_column else ''
  else:
    fields = line.split()
    if len(fields) < 2:
      return None
    name, label = fields[0], fields[1]
  return (name, (label, split)) if name and label else None


def label_file_splits(path: str, fmt: LabelFileFormat, splits_flag: str = 'auto'
                      ) -> Tuple[str, ...]:
  """The sorted distinct split names of the label file's ``split`` column; () without one.

  Streams the whole file once (launch time; the names, not the lines, are kept), so the
  launcher knows the splits and their ``--num_shards`` before the pipeline runs. Cells that
  are not valid split names are left out here; their images fail at stage ``split``.

  Raises:
    ValueError: ``splits_flag`` (``--splits``) is not ``auto`` while the file has a split column
      (two sources of splits), or the column holds no valid split name.
  """
  if not fmt.is_csv or fmt.split_column is None:
    return ()
  if splits_flag != 'auto':
    raise ValueError(f'--splits={splits_flag}: the label file {path} has a split column, which '
                     'assigns the splits; drop --splits (or the column)')

  def read_split_names():  # streaming: only the distinct names are kept
    names = set()
    with FileSystems.open(path) as handle:
      rows = csv.reader(io.TextIOWrapper(handle, encoding='utf-8-sig', errors='replace'))
      header_seen = False
      for row in rows:
        if not header_seen:
          header_seen = any(cell.strip() for cell in row)
          continue
        if len(row) > fmt.split_column:
          names.add(row[fmt.split_column].strip())
    return names
  names = reads.with_retries(read_split_names, path)
  valid = tuple(sorted(n for n in names if contract.SPLIT_NAME_RE.match(n)))
  if not valid:
    raise ValueError(f'--label_source: the split column of {path} names no valid split '
                     '(letters, digits and _ only)')
  return valid


def _split_problem(splits) -> Optional[str]:
  """Why the split cells given for one image do not name one valid split; None when they do."""
  if len(splits) > 1:
    return f'the label file gives it several splits: {splits}'
  if not splits[0]:
    return "its cell in the label file's split column is empty"
  if not contract.SPLIT_NAME_RE.match(splits[0]):
    return (f"the label file's split column gives it the split {splits[0]!r}: a split name "
            'may hold only letters, digits and _')
  return None


def _join_key(relpath: str, fmt: LabelFileFormat) -> str:
  return relpath if fmt.by_path else posixpath.basename(relpath)


class _MatchLabels(beam.DoFn):
  """(key, {'images': [SourceFile], 'labels': [(label, split)]}) -> (SourceFile, label), or
  Failure. With a split column the SourceFile carries its ``split``."""

  def __init__(self, label_file: str):
    self._label_file = label_file

  def process(self, element) -> Iterable:
    key, joined = element
    entries = set(joined['labels'])
    images, labels = list(joined['images']), sorted({label for label, _ in entries})
    splits = sorted({split for _, split in entries if split is not None})
    if not images:
      yield beam.pvalue.TaggedOutput(FAILURES_TAG, Failure(
          self._label_file, key, STAGE_MISSING,
          f'named in the label file {self._label_file}, but no such image was listed'))
      return
    split_problem = _split_problem(splits) if splits else None
    for image in images:
      stage = STAGE_LABEL
      if not labels:
        reason = f'not named in the label file {self._label_file}'
      elif len(labels) > 1:
        reason = f'the label file gives it several labels: {labels}'
      elif len(images) > 1:
        reason = (f'its base name {key!r} is shared by {len(images)} images, so the label '
                  'file cannot tell them apart (use paths in the label file)')
      elif split_problem:
        stage, reason = STAGE_SPLIT, split_problem
      else:
        yield (image._replace(split=splits[0]) if splits else image), labels[0]
        continue
      yield beam.pvalue.TaggedOutput(
          FAILURES_TAG, Failure(image.path, image.relpath, stage, reason))


class LabelsFromFile(beam.PTransform):
  """PCollection[SourceFile] -> PCollection[(SourceFile, str)], and ``failures``.

  With a ``split`` column each SourceFile comes out with its ``split`` set (see
  ``transforms.inputs.splits.AssignSplits``' ``file_splits``).

  Args:
    label_file: path of the label file (any filesystem).
    fmt: its format, from ``sniff_format``.
  """

  def __init__(self, label_file: str, fmt: LabelFileFormat):
    super().__init__()
    self._label_file = label_file
    self._fmt = fmt

  def expand(self, files):
    fmt, label_file = self._fmt, self._label_file
    entries = (
        files.pipeline
        | 'read label file' >> beam.io.ReadFromText(escape_pattern(label_file))
        | 'parse lines' >> beam.FlatMap(lambda line: [e for e in [parse_line(line, fmt)] if e]))
    keyed_images = files | 'key images' >> beam.Map(
        lambda source: (_join_key(source.relpath, fmt), source))
    return (
        {'images': keyed_images, 'labels': entries}
        | 'join images and labels' >> beam.CoGroupByKey()
        | 'match' >> beam.ParDo(_MatchLabels(label_file)).with_outputs(
            FAILURES_TAG, main='labeled'))
