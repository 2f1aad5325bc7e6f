"""Labels from a label file beside or outside the images (``--label_source=file:PATH``).

Two formats, told apart by the first line:

* CSV with a header naming a ``filename`` and a ``label`` column (other columns ignored)::

      filename,label
      images/val_0.JPEG,n03444034

* whitespace-separated ``FILENAME LABEL [more columns ignored]`` lines, no header: ImageNet's
  ``val.txt`` (``ILSVRC2012_val_00000001.JPEG 65``), Tiny ImageNet's ``val_annotations.txt``
  (``val_0.JPEG<TAB>n03444034<TAB>0 32 44 62``).

A file name with a '/' is matched against the image's path relative to the input root; one
without is matched against the image's base name. The label file and the listing are joined
with a CoGroupByKey, so both directions are reported: an image the file does not name fails at
stage ``label``; a file entry with no image is reported at stage ``missing`` (not an input, so
it does not count against ``--max_failure_fraction``). Integer labels are class ids, kept as
given (see ``transforms.labels.merge_class_names``).
"""

import csv
import posixpath
from typing import Iterable, NamedTuple, Optional, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms.elements import FAILURES_TAG, STAGE_LABEL, STAGE_MISSING, Failure


class LabelFileFormat(NamedTuple):
  """How to read a label file: CSV column indices (with a header line), or whitespace."""
  is_csv: bool
  filename_column: int = 0
  label_column: int = 1
  by_path: bool = False  # entries hold '/'-paths relative to the input root, not base names


def sniff_format(path: str) -> LabelFileFormat:
  """Reads the first lines of the label file (launch time, a few KB) to learn its format.

  Raises:
    ValueError: the file is empty, or a CSV header lacks a ``filename`` or ``label`` column.
  """
  with FileSystems.open(path) as handle:
    head = handle.read(64 * 1024).decode('utf-8-sig', errors='replace')
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
    return LabelFileFormat(True, column, header.index('label'), any('/' in n for n in names))
  return LabelFileFormat(False, by_path=any('/' in line.split()[0] for line in lines))


def parse_line(line: str, fmt: LabelFileFormat) -> Optional[Tuple[str, str]]:
  """(file name, label) of one data line; None for a blank or short line (or the header)."""
  if fmt.is_csv:
    row = next(csv.reader([line]), [])
    if len(row) <= max(fmt.filename_column, fmt.label_column):
      return None
    name, label = row[fmt.filename_column].strip(), row[fmt.label_column].strip()
    if name.lower() == 'filename' and label.lower() == 'label':
      return None
  else:
    fields = line.split()
    if len(fields) < 2:
      return None
    name, label = fields[0], fields[1]
  return (name, label) if name and label else None


def _join_key(relpath: str, fmt: LabelFileFormat) -> str:
  return relpath if fmt.by_path else posixpath.basename(relpath)


class _MatchLabels(beam.DoFn):
  """(key, {'images': [SourceFile], 'labels': [str]}) -> (SourceFile, label), or Failure."""

  def __init__(self, label_file: str):
    self._label_file = label_file

  def process(self, element) -> Iterable:
    key, joined = element
    images, labels = list(joined['images']), sorted(set(joined['labels']))
    if not images:
      yield beam.pvalue.TaggedOutput(FAILURES_TAG, Failure(
          self._label_file, key, STAGE_MISSING,
          f'named in the label file {self._label_file}, but no such image was listed'))
      return
    for image in images:
      if not labels:
        reason = f'not named in the label file {self._label_file}'
      elif len(labels) > 1:
        reason = f'the label file gives it several labels: {labels}'
      elif len(images) > 1:
        reason = (f'its base name {key!r} is shared by {len(images)} images, so the label '
                  'file cannot tell them apart (use paths in the label file)')
      else:
        yield image, labels[0]
        continue
      yield beam.pvalue.TaggedOutput(
          FAILURES_TAG, Failure(image.path, image.relpath, STAGE_LABEL, reason))


class LabelsFromFile(beam.PTransform):
  """PCollection[SourceFile] -> PCollection[(SourceFile, str)], and ``failures``.

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
        | 'read label file' >> beam.io.ReadFromText(label_file)
        | 'parse lines' >> beam.FlatMap(lambda line: [e for e in [parse_line(line, fmt)] if e]))
    keyed_images = files | 'key images' >> beam.Map(
        lambda source: (_join_key(source.relpath, fmt), source))
    return (
        {'images': keyed_images, 'labels': entries}
        | 'join images and labels' >> beam.CoGroupByKey()
        | 'match' >> beam.ParDo(_MatchLabels(label_file)).with_outputs(
            FAILURES_TAG, main='labeled'))
