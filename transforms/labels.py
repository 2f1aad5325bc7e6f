"""Assign each image its class name, and number the classes.

Label sources (``--label_source``; Beam's own ``--labels`` sets Dataflow job labels):

* ``directory`` (default): labels come from directory names, as in TFDS's ``ImageFolder`` and Keras's
``image_dataset_from_directory``: the class of ``ants/0013035.jpg`` (or, under a split folder,
``train/ants/0013035.jpg``) is ``ants``, the name of the image's parent folder.
* ``none``: unlabeled images (a ``test/`` folder to predict on); records carry no class keys.

Class ids are the sorted class names, numbered from 0, computed in the pipeline over every
labeled image and handed to the converting DoFn as a side input; the same list is written to
``labels.txt`` (line i = class id i).
"""

from typing import Iterable, List, Optional

import apache_beam as beam

from transforms.elements import FAILURES_TAG, STAGE_LABEL, Failure, SourceFile


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


LABEL_SOURCES = ('directory', 'none')


class _AssignLabel(beam.DoFn):
  """SourceFile -> (SourceFile, class name or None), or Failure(stage='label')."""

  def __init__(self, label_source, split_folders):
    self._label_source = label_source
    self._split_folders = frozenset(split_folders)

  def process(self, source: SourceFile) -> Iterable:
    if self._label_source == 'none':
      yield source, None
      return
    first = source.relpath.split('/', 1)[0]
    label = directory_label(source.relpath, first if first in self._split_folders else None)
    if label is None:
      yield beam.pvalue.TaggedOutput(FAILURES_TAG, Failure(
          source.path, source.relpath, STAGE_LABEL,
          'not inside a class folder: with --label_source=directory the class is the name of the '
          "image's parent folder"))
    else:
      yield source, label


class AssignLabels(beam.PTransform):
  """PCollection[SourceFile] -> PCollection[(SourceFile, str or None)], and ``failures``.

  Args:
    label_source: one of ``LABEL_SOURCES``.
    split_folders: the split folder names at the top of the input (empty when there are none);
      with ``directory`` labels an image directly inside one has no class folder and fails at
      stage ``label``.
  """

  def __init__(self, label_source: str = 'directory', split_folders=()):
    super().__init__()
    if label_source not in LABEL_SOURCES:
      raise ValueError(f'label_source must be one of {LABEL_SOURCES}, got {label_source!r}')
    self._label_source = label_source
    self._split_folders = tuple(split_folders)

  def expand(self, files):
    return files | f'labels from {self._label_source}' >> beam.ParDo(
        _AssignLabel(self._label_source, self._split_folders)).with_outputs(
            FAILURES_TAG, main='labeled')


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

  The list is sorted, so class id = index; use it as ``beam.pvalue.AsSingleton`` (empty, no
  element, for unlabeled data).
  """

  def expand(self, labeled):
    return (
        labeled
        | 'class name' >> beam.FlatMapTuple(
            lambda unused_source, label: [] if label is None else [label])
        | 'sorted distinct class names' >> beam.CombineGlobally(
            _CollectClassNames()).without_defaults())
