"""List the image files under an input root, inside the pipeline.

Listing runs on the workers through Beam's ``fileio`` (so ``gs://`` and ``s3://`` roots list
exactly as local ones do) and never in the launching process: a bucket of millions of files is
not listed on a laptop.

    input_dir/
      ants/0013035.jpg            -> SourceFile(path='/data/hym/ants/0013035.jpg',
      bees/abeja.JPG                            relpath='ants/0013035.jpg')
      .DS_Store                   -> ignored (hidden)
      notes.txt                   -> Failure(stage='list'): not an image file extension
"""

import posixpath
from typing import Iterable, Tuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import FileSystems

from transforms.elements import (FAILURES_TAG, METRICS_NAMESPACE, STAGE_LIST, Failure,
                                 SourceFile)

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.jpe', '.jfif', '.png', '.gif', '.bmp', '.webp', '.tif',
                    '.tiff', '.mpo', '.pgm', '.ppm', '.pbm', '.pnm')
"""File extensions (matched case-insensitively) that are taken for images by default."""



def relative_path(path: str, root: str) -> str:
  """``path`` relative to ``root``, '/'-separated; ``path`` must lie under ``root``.

  Raises:
    ValueError: when ``path`` is not under ``root``.
  """
  root = root.rstrip('/\\')
  if not path.startswith(root) or path[len(root):len(root) + 1] not in ('/', '\\'):
    raise ValueError(f'{path} is not under the input root {root}')
  return path[len(root) + 1:].replace('\\', '/')


def printable_name(name: str) -> str:
  """``name`` with the bytes that are not UTF-8 (Python's surrogate escapes of a file name)
  written as ``\\xNN``, so it can be reported: ``'caf\\udce9.jpg'`` -> ``'caf\\\\xe9.jpg'``."""
  return name.encode('utf-8', 'surrogateescape').decode('utf-8', 'backslashreplace')


def is_hidden(relpath: str) -> bool:
  """True for dot-files and anything inside a dot-folder (.DS_Store, .git/, ._AppleDouble)."""
  return any(part.startswith('.') for part in relpath.split('/'))


class _ClassifyListedFile(beam.DoFn):
  """FileMetadata -> SourceFile, or Failure(stage='list') for a non-image extension."""

  def __init__(self, root: str, extensions: Tuple[str, ...], exclude: Tuple[str, ...]):
    self._root = root
    self._extensions = tuple(e.lower() for e in extensions)
    self._exclude = frozenset(exclude)
    self._listed = beam.metrics.Metrics.counter(METRICS_NAMESPACE, 'files_listed')
    self._hidden = beam.metrics.Metrics.counter(METRICS_NAMESPACE, 'hidden_files_ignored')

  def process(self, metadata: FileMetadata) -> Iterable:
    relpath = relative_path(metadata.path, self._root)
    if is_hidden(relpath) or metadata.path in self._exclude:
      self._hidden.inc()
      return
    self._listed.inc()
    extension = posixpath.splitext(relpath)[1].lower()
    try:
      relpath.encode('utf-8')  # image/filename and every report are UTF-8
    except UnicodeEncodeError:  # a name of raw bytes, listed with surrogate escapes
      yield beam.pvalue.TaggedOutput(FAILURES_TAG, Failure(
          printable_name(metadata.path), printable_name(relpath), STAGE_LIST,
          'skipped: the file name is not valid UTF-8; rename the file'))
      return
    if extension in self._extensions:
      yield SourceFile(metadata.path, relpath, size_in_bytes=metadata.size_in_bytes,
                       mtime=metadata.last_updated_in_seconds)
    else:
      shown = extension or '(no extension)'
      yield beam.pvalue.TaggedOutput(FAILURES_TAG, Failure(
          metadata.path, relpath, STAGE_LIST,
          f'skipped: {shown} is not an image file extension (--extensions)'))


class ListImageFiles(beam.PTransform):
  """PBegin -> PCollection[SourceFile], with a ``failures`` output of PCollection[Failure].

  Lists every file below ``input_dir`` recursively. Hidden files are ignored; files whose
  extension is not in ``extensions`` (case-insensitive) become failures at stage ``list``, so
  that every listed file is accounted for. ``folders`` ('/'-separated, relative to the root),
  when given, are the only parts of the root listed (``--masks=voc`` lists two of a VOC root's
  folders); relpaths stay relative to ``input_dir``.
  """

  def __init__(self, input_dir: str, extensions=IMAGE_EXTENSIONS, exclude=(), folders=()):
    super().__init__()
    self._input_dir = input_dir.rstrip('/\\')
    self._extensions = tuple(extensions)
    self._exclude = tuple(exclude)
    self._folders = tuple(folders)

  def expand(self, pbegin):
    pattern = FileSystems.join(self._input_dir, '**')
    if self._folders:
      matched = (
          pbegin
          | 'folders to list' >> beam.Create([
              FileSystems.join(self._input_dir, *folder.split('/'), '**')
              for folder in self._folders])
          | 'match files' >> fileio.MatchAll(fileio.EmptyMatchTreatment.ALLOW))
    else:
      matched = pbegin | 'match files' >> fileio.MatchFiles(
          pattern, empty_match_treatment=fileio.EmptyMatchTreatment.ALLOW)
    return (
        matched
        | 'keep image files' >> beam.ParDo(
            _ClassifyListedFile(self._input_dir, self._extensions, self._exclude)
        ).with_outputs(FAILURES_TAG, main='files'))
