"""Assign each image its class name, and number the classes.

Label sources (``--label_source``; Beam's own ``--labels`` sets Dataflow job labels):

* ``directory`` (default): the name of the image's parent folder, as in TFDS's ``ImageFolder``
  and Keras's ``image_dataset_from_directory``: ``ants/0013035.jpg`` (or, under a split folder,
  ``train/ants/0013035.jpg``) is ``ants``.
* ``filename:REGEX``: the regex's named group ``label``, else its first group, searched in the
  file's base name (the Kaggle dogs-vs-cats convention: ``filename:^([a-z]+)\.\d+\.jpg$``
  gives ``cat`` for ``cat.123.jpg``). A name the regex does not match is a failure.
* ``file:PATH``: a label file (see ``transforms.inputs.label_file``).
* ``none``: unlabeled images (a ``test/`` folder to predict on); records carry no class keys.

Class ids are the sorted class names, numbered from 0, computed in the pipeline over every
labeled image and handed to the converting DoFn as a side input; the same list is written to
``labels.txt`` (line i = class id i). A ``labels.txt`` of an earlier run (``--label_map``) pins
the ids it has; new classes are appended after them, or refused with ``--strict_labels``, so a
nightly run never renumbers a class.
"""

import posixpath
import re
from typing import Iterable, List, Optional, Sequence, Tuple

import apache_beam as beam

from transforms.elements import FAILURES_TAG, STAGE_LABEL, Failure, SourceFile
from transforms.files.textfiles import read_text


def directory_label(relpath: str, split_folder: Optional[str] = None) -> Optional[str]:
  """The class of an image from its parent folder; None when it has no class folder.

  Args:
    relpath: '/'-separated path relative to the input root.
    split_folder: the split folder the path starts with, if the input has split folders; a
      split folder is never itself a class.
  """
  parts = relpath.split('/')[:-1]
  if split_folder is not None and parts[:1] == [split_folder]:
    parts = parts[1:]
  return parts[-1] if parts else None


LABEL_SOURCES = ('directory', 'filename:REGEX', 'file:PATH', 'none')

_LINE_BREAKS = frozenset('\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029')
"""The characters ``str.splitlines`` breaks lines at (readers read labels.txt with it)."""


def class_name_problem(name: str) -> Optional[str]:
  """Why ``name`` cannot be a class name, or None. A line break would split the class over two
  lines of ``labels.txt`` (one class per line) and invent a class; every other character,
  a backslash included, is kept as it is."""
  if _LINE_BREAKS.intersection(name):
    return (f'the class name {name!r} holds a line break, which labels.txt (one class per '
            'line) cannot hold; rename it')
  return None


def filename_regex(label_source: str) -> 're.Pattern':
  """The compiled regex of ``filename:REGEX``.

  Raises:
    ValueError: the regex does not compile, or has neither a ``label`` group nor any group.
  """
  pattern = label_source.split(':', 1)[1]
  try:
    regex = re.compile(pattern)
  except re.error as error:
    raise ValueError(f'--label_source: bad regex {pattern!r}: {error}') from None
  if regex.groups < 1:
    raise ValueError(f'--label_source: the regex {pattern!r} needs a group (the class)')
  return regex


def check_label_source(label_source: str, allowed=LABEL_SOURCES) -> None:
  """Raises ValueError unless ``label_source`` has one of the ``allowed`` forms (a
  ``filename:REGEX`` must also compile, with a group; a ``file:PATH`` must give a path), so a
  bad flag fails at launch."""
  kind = label_source.split(':', 1)[0] if ':' in label_source else label_source
  forms = {form.split(':', 1)[0]: form for form in allowed}
  if kind not in forms or (':' in forms[kind]) != (':' in label_source):
    raise ValueError(f'--label_source must be {", ".join(allowed)}; got {label_source!r}')
  if kind == 'file' and not label_source.split(':', 1)[1].strip():
    raise ValueError('--label_source=file: names no label file (a template that rendered '
                     'nothing?): give its path, --label_source=file:PATH')
  if kind == 'filename':
    filename_regex(label_source)


def filename_label(relpath: str, regex: 're.Pattern') -> Optional[str]:
  """The class from the file's base name by ``regex`` (group ``label``, else group 1)."""
  match = regex.search(posixpath.basename(relpath))
  if not match:
    return None
  return match.group('label') if 'label' in regex.groupindex else match.group(1)


class _AssignLabel(beam.DoFn):
  """SourceFile -> (SourceFile, class name or None), or Failure(stage='label')."""

  def __init__(self, label_source, split_folders):
    self._label_source = label_source
    self._split_folders = frozenset(split_folders)

  def setup(self):
    self._regex = (filename_regex(self._label_source)
                   if self._label_source.startswith('filename:') else None)

  def _fail(self, source, reason):
    return beam.pvalue.TaggedOutput(
        FAILURES_TAG, Failure(source.path, source.relpath, STAGE_LABEL, reason))

  def process(self, source: SourceFile) -> Iterable:
    if self._label_source == 'none':
      yield source, None
      return
    if self._regex is not None:
      label = filename_label(source.relpath, self._regex)
      if not label:
        yield self._fail(source, f'file name does not match --label_source regex '
                         f'{self._regex.pattern!r}')
        return
    else:
      first = source.relpath.split('/', 1)[0]
      label = directory_label(source.relpath, first if first in self._split_folders else None)
      if label is None:
        yield self._fail(source, 'not inside a class folder: with --label_source=directory the '
                         "class is the name of the image's parent folder")
        return
    problem = class_name_problem(label)
    if problem:
      yield self._fail(source, problem)
      return
    yield source, label


class AssignLabels(beam.PTransform):
  """PCollection[SourceFile] -> PCollection[(SourceFile, str or None)], and ``failures``.

  Args:
    label_source: ``directory``, ``filename:REGEX`` or ``none`` (``file:PATH`` is
      ``transforms.inputs.label_file.LabelsFromFile``).
    split_folders: the split folder names at the top of the input (empty when there are none);
      with ``directory`` labels an image directly inside one has no class folder and fails at
      stage ``label``.
  """

  def __init__(self, label_source: str = 'directory', split_folders=()):
    super().__init__()
    # file:PATH is LabelsFromFile's; checked here so a bad regex fails before any worker runs
    check_label_source(label_source, ('directory', 'filename:REGEX', 'none'))
    self._label_source = label_source
    self._split_folders = tuple(split_folders)

  def expand(self, files):
    kind = self._label_source.split(':', 1)[0]
    return files | f'labels from {kind}' >> beam.ParDo(
        _AssignLabel(self._label_source, self._split_folders)).with_outputs(
            FAILURES_TAG, main='labeled')


class _RefuseUnknownClass(beam.DoFn):
  """(SourceFile, label) of a class outside the allowed set -> Failure(stage='label')."""

  def __init__(self, classes):
    self._classes = frozenset(classes)

  def process(self, element):
    source, label = element
    if label is None or label in self._classes:
      yield element
    else:
      yield beam.pvalue.TaggedOutput(FAILURES_TAG, Failure(
          source.path, source.relpath, STAGE_LABEL,
          f'class {label!r} is not in --label_map (--strict_labels)'))


class RefuseUnknownClasses(beam.PTransform):
  """PCollection[(SourceFile, label)] -> the same, less the images of classes not in
  ``classes`` (``--strict_labels`` with ``--label_map``), which go to ``failures``."""

  def __init__(self, classes: Sequence[str]):
    super().__init__()
    self._classes = tuple(classes)

  def expand(self, labeled):
    return labeled | 'refuse classes not in the label map' >> beam.ParDo(
        _RefuseUnknownClass(self._classes)).with_outputs(FAILURES_TAG, main='labeled')


def read_label_map(path: str) -> Tuple[str, ...]:
  """The class names of an earlier run's ``labels.txt`` (line i = class id i).

  Raises:
    ValueError: the file has a blank line inside or names a class twice.
  """
  names = read_text(path).split('\n')
  if names and names[-1] == '':
    names.pop()
  if any(not name for name in names) or len(set(names)) != len(names):
    raise ValueError(f'--label_map: {path} has a blank line or names a class twice')
  return tuple(names)


MAX_INTEGER_CLASS_ID = 1_000_000
"""Integer labels above this are taken as names: ids are kept only where a list of them fits."""


def merge_class_names(found: Sequence[str], pinned: Sequence[str] = (),
                      integer_ids: bool = False) -> List[str]:
  """The class list in use, class id = index.

  ``pinned`` (an earlier labels.txt) keeps its ids and new classes follow in sorted order.
  With ``integer_ids`` (a label file) and nothing pinned, when every label is a plain integer
  ('0', '7', not '007') up to ``MAX_INTEGER_CLASS_ID``, the integers are the class ids, kept as
  given, and the list runs from '0' to the largest id.
  """
  if (integer_ids and not pinned and found
      and all(name.isdigit() and str(int(name)) == name for name in found)
      and max(int(name) for name in found) <= MAX_INTEGER_CLASS_ID):
    return [str(i) for i in range(max(int(name) for name in found) + 1)]
  known = set(pinned)
  return list(pinned) + sorted(name for name in found if name not in known)


class _CollectClassNames(beam.CombineFn):
  """Combines class names (str) into their sorted, de-duplicated list."""

  def create_accumulator(self):
    return set()

  def add_input(self, accumulator, name):
    accumulator.add(name)
    return accumulator

  def merge_accumulators(self, accumulators):
    return set().union(*accumulators)

  def extract_output(self, accumulator) -> List[str]:
    return sorted(accumulator)


class ClassNames(beam.PTransform):
  """PCollection[(SourceFile, str or None)] -> a one-element PCollection[List[str]].

  Class id = index in the list (see ``merge_class_names``; ``pinned`` is the class list of
  ``--label_map``; ``integer_ids`` keeps integer labels of a label file as their ids). Use it
  as ``beam.pvalue.AsSingleton``; it has no element for unlabeled data.
  """

  def __init__(self, pinned: Sequence[str] = (), integer_ids: bool = False):
    super().__init__()
    self._pinned = tuple(pinned)
    self._integer_ids = integer_ids

  def expand(self, labeled):
    pinned, integer_ids = self._pinned, self._integer_ids
    return (
        labeled
        | 'class name' >> beam.FlatMapTuple(
            lambda unused_source, label: [] if label is None else [label])
        | 'sorted distinct class names' >> beam.CombineGlobally(
            _CollectClassNames()).without_defaults()
        | 'after the pinned ids' >> beam.Map(merge_class_names, pinned, integer_ids))
