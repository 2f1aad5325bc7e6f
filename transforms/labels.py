"""Assign each image its class name, and number the classes.

Labels come from directory names, as in TFDS's ``ImageFolder`` and Keras's
``image_dataset_from_directory``: the class of ``ants/0013035.jpg`` (or, under a split folder,
``train/ants/0013035.jpg``) is ``ants``, the name of the image's parent folder.

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


class _LabelFromDirectory(beam.DoFn):
  """SourceFile -> (SourceFile, class name), or Failure(stage='label')."""

  def __init__(self, split_folders):
    self._split_folders = frozenset(split_folders)

  def process(self, source: SourceFile) -> Iterable:
    first = source.relpath.split('/', 1)[0]
    label = directory_label(source.relpath, first if first in self._split_folders else None)
    if label is None:
      yield beam.pvalue.TaggedOutput(FAILURES_TAG, Failure(
          source.path, source.relpath, STAGE_LABEL,
          'not inside a class folder: with --labels=directory the class is the name of the '
          "image's parent folder"))
    else:
      yield source, label


class LabelFromDirectory(beam.PTransform):
  """PCollection[SourceFile] -> PCollection[(SourceFile, str)], and ``failures``.

  ``split_folders``: the split folder names at the top of the input (empty when there are
  none); an image directly inside one has no class folder and fails at stage ``label``.
  """

  def __init__(self, split_folders=()):
    super().__init__()
    self._split_folders = tuple(split_folders)

  def expand(self, files):
    return files | 'class from parent folder' >> beam.ParDo(
        _LabelFromDirectory(self._split_folders)).with_outputs(FAILURES_TAG, main='labeled')


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
  """PCollection[str] of class names -> a one-element PCollection[List[str]].

  The list is sorted, so class id = index; use it as ``beam.pvalue.AsSingleton``.
  """

  def expand(self, labels):
    return labels | 'sorted distinct class names' >> beam.CombineGlobally(
        _CollectClassNames()).without_defaults()
