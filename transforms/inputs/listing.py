"""List the image files under an input root, inside the pipeline.

Listing runs on the workers, not in the launching process: a bucket of millions of files is
not listed on a laptop (the one walk in the launcher, :func:`local_versions`, is of a local
folder and stops at a bound). Every entry the listing meets is either listed or reported (a
``Failure`` at stage ``list`` with the reason); nothing vanishes without a word::

    input_dir/
      ants/0013035.jpg            -> SourceFile(path='/data/hym/ants/0013035.jpg',
      bees/abeja.JPG                            relpath='ants/0013035.jpg', size, mtime)
      .DS_Store                   -> ignored (hidden; so is everything in a dot-folder)
      notes.txt                   -> Failure(stage='list'): not an image file extension
      wasps -> ../more/wasps      -> followed when the target is inside the input root; else
                                     Failure: outside the input root (--follow_external_symlinks)
      gone.jpg -> nowhere         -> Failure: dangling symlink
      pipe.jpg (FIFO), zero.jpg -> /dev/zero
                                  -> Failure: not a regular file (never opened)
      huge.tif (> --max_file_bytes) -> Failure: larger than the limit (never read)
      locked/ (permission denied) -> Failure: the folder cannot be listed
      back\\slash.jpg              -> SourceFile(relpath='back\\slash.jpg'): names are literal

Local roots are walked with ``os.scandir`` (Beam's local listing is an ``os.walk`` that ignores
errors and does not follow folder links): the root's top level in one step, then each folder
below it, and the top level's own files in lots of a thousand, in parallel (a Reshuffle spreads
them over the workers), in one step whose one output is fused to the classification, the
labels and the splits (no per-file element held between stages). Symlinked files and folders
are treated alike: followed while their target (``os.path.realpath``) stays inside the input
root, or anywhere with ``follow_external_symlinks``; a folder link that leads back to one of
its own ancestors (same device and inode) is a loop, reported and not followed. A folder linked
in twice is listed twice, under both names.

Object stores (``gs://``, ``s3://``) have no links, folders or special files: they are listed
through Beam's ``fileio`` with the root escaped (``transforms.files.folders.escape_pattern``), and
the size limit applies to their objects as to local files.
"""

import errno
import os
import posixpath
import stat
from typing import Dict, FrozenSet, Iterable, Iterator, NamedTuple, Optional, Tuple, Union

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import FileSystems

from transforms.elements import (FAILURES_TAG, METRICS_NAMESPACE, STAGE_LIST, Failure,
                                 SourceFile, source_version)
from transforms.files.folders import escape_pattern, is_local

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.jpe', '.jfif', '.png', '.gif', '.bmp', '.webp', '.tif',
                    '.tiff', '.mpo', '.pgm', '.ppm', '.pbm', '.pnm')
"""File extensions (matched case-insensitively) that are taken for images by default."""

DEFAULT_MAX_FILE_BYTES = 512 * 2**20
"""Files larger than this (512 MiB) are refused at listing, never read. A 50-megapixel camera
JPEG is about 25 MB and an uncompressed 8-bit RGB TIFF at ``--max_pixels`` about 270 MB."""


def relative_path(path: str, root: str) -> str:
  """``path`` relative to ``root``, both '/'-separated; ``path`` must lie under ``root``.

  A backslash is part of a name, never a separator: ``root/a\\b.jpg`` -> ``'a\\b.jpg'``.

  Raises:
    ValueError: when ``path`` is not under ``root``.
  """
  root = root.rstrip('/')
  if not path.startswith(root) or path[len(root):len(root) + 1] != '/':
    raise ValueError(f'{path} is not under the input root {root}')
  return path[len(root) + 1:]


def printable_name(name: str) -> str:
  """``name`` with the bytes that are not UTF-8 (Python's surrogate escapes of a file name)
  written as ``\\xNN``, so it can be reported: ``'caf\\udce9.jpg'`` -> ``'caf\\\\xe9.jpg'``."""
  return name.encode('utf-8', 'surrogateescape').decode('utf-8', 'backslashreplace')


def is_hidden(relpath: str) -> bool:
  """True for dot-files and anything inside a dot-folder (.DS_Store, .git/, ._AppleDouble)."""
  return any(part.startswith('.') for part in relpath.split('/'))


def _is_utf8(name: str) -> bool:
  try:
    name.encode('utf-8')  # image/filename and every report are UTF-8
  except UnicodeEncodeError:  # a name of raw bytes, listed with surrogate escapes
    return False
  return True


def _inside(path: str, root: str) -> bool:
  """True when the real path ``path`` is ``root`` or below it (both from os.path.realpath)."""
  return path == root or path.startswith(root.rstrip('/') + '/')


def _special_kind(mode: int) -> str:
  """What a file that is not a regular file is, in words."""
  for test, words in ((stat.S_ISFIFO, 'a FIFO (named pipe)'), (stat.S_ISCHR, 'a character device'),
                      (stat.S_ISBLK, 'a block device'), (stat.S_ISSOCK, 'a socket')):
    if test(mode):
      return words
  return 'not a regular file'


class _Folder(NamedTuple):
  """A local folder still to list: its path (through the links that lead to it), its relpath
  ('' for the root) and the (st_dev, st_ino) of itself and of every folder above it up to the
  root, to tell a link loop."""
  path: str
  relpath: str
  ancestors: FrozenSet[Tuple[int, int]]


class _LocalTree:
  """The rules of a local walk (see the module docstring), shared by both listing steps."""

  def __init__(self, root: str, follow_external_symlinks: bool):
    self._root = root
    self._follow_external = follow_external_symlinks
    self._real_root = None

  def real_root(self) -> str:
    """The input root with every link resolved (what a link's target must lie under)."""
    if self._real_root is None:
      self._real_root = os.path.realpath(self._root)
    return self._real_root

  def _failure(self, path: str, relpath: str, reason: str) -> Failure:
    return Failure(printable_name(path), printable_name(relpath), STAGE_LIST, reason)

  def _follow(self, path: str, relpath: str
              ) -> Tuple[Optional[os.stat_result], Optional[Failure]]:
    """A symlink's target: (its stat, None), or (None, why it is not followed)."""
    try:
      target = os.readlink(path)
    except OSError as error:
      return None, self._failure(path, relpath, f'skipped: cannot read the symlink: {error}')
    try:
      result = os.stat(path)
    except FileNotFoundError:
      return None, self._failure(
          path, relpath, f'skipped: dangling symlink: its target {target!r} does not exist')
    except OSError as error:
      if error.errno == errno.ELOOP:
        return None, self._failure(
            path, relpath, f'skipped: symlink loop: {target!r} leads back to itself')
      return None, self._failure(path, relpath, f'skipped: cannot follow the symlink to '
                                 f'{target!r}: {error.strerror or error}')
    real = os.path.realpath(path)
    if not self._follow_external and not _inside(real, self.real_root()):
      return None, self._failure(
          path, relpath, f'skipped: symlink to {real}, outside the input root: not followed '
          '(--follow_external_symlinks takes links that leave the root)')
    return result, None

  def entry(self, folder: _Folder, entry: os.DirEntry
            ) -> Union[None, SourceFile, Failure, _Folder]:
    """One entry of a folder: a file to list, a folder to list, a reported problem, or None
    (a hidden folder)."""
    name = entry.name
    relpath = f'{folder.relpath}/{name}' if folder.relpath else name
    if name.startswith('.'):  # hidden: a dot-folder is not entered; a dot-file is counted
      return None if entry.is_dir(follow_symlinks=False) else SourceFile(entry.path, relpath)
    if not _is_utf8(name):
      return self._failure(entry.path, relpath, 'skipped: the name is not valid UTF-8; rename it')
    try:
      result = entry.stat(follow_symlinks=False)
    except OSError as error:  # gone since the folder was read, or no permission on it
      return self._failure(entry.path, relpath, f'skipped: cannot stat: {error.strerror or error}')
    if stat.S_ISLNK(result.st_mode):
      result, failure = self._follow(entry.path, relpath)
      if failure:
        return failure
    if stat.S_ISDIR(result.st_mode):
      key = (result.st_dev, result.st_ino)
      if key in folder.ancestors:
        return self._failure(entry.path, relpath + '/', 'skipped: symlink loop: the folder it '
                             'leads to contains the link itself; not followed')
      return _Folder(entry.path, relpath, folder.ancestors | {key})
    if not stat.S_ISREG(result.st_mode):
      return self._failure(entry.path, relpath, f'skipped: {_special_kind(result.st_mode)}, '
                           'not a regular file; it is not opened')
    return SourceFile(entry.path, relpath, None, result.st_size, result.st_mtime)

  def start(self, relpath: str) -> Union[None, Failure, _Folder]:
    """The folder ``relpath`` ('' for the root) to start listing from; None when it does not
    exist (a ``--masks=voc`` root without ``SegmentationClass/``)."""
    try:
      root_stat = os.stat(self._root)
    except OSError as error:
      return self._failure(self._root, './', f'cannot list the input root: {error}')
    folder = _Folder(self._root, '', frozenset([(root_stat.st_dev, root_stat.st_ino)]))
    for name in filter(None, relpath.split('/')):
      try:
        with os.scandir(folder.path) as entries:
          found = [entry for entry in entries if entry.name == name]
      except OSError as error:
        return self._failure(folder.path, (folder.relpath or '.') + '/',
                             f'cannot list this folder: {error.strerror or error}')
      step = self.entry(folder, found[0]) if found else None
      if isinstance(step, Failure):
        return step
      if not isinstance(step, _Folder):  # no such folder, or a file where a folder was named
        return None
      folder = step
    return folder

  def walk(self, folder: _Folder) -> Iterator[Union[SourceFile, Failure]]:
    """Every file and problem below ``folder``, folder by folder (each folder's entries by
    name, the last folder found walked first)."""
    todo = [folder]
    while todo:
      for entry in self.scan(todo.pop()):
        if isinstance(entry, _Folder):
          todo.append(entry)
        else:
          yield entry

  def scan(self, folder: _Folder) -> Iterator[Union[SourceFile, Failure, _Folder]]:
    """The entries of one folder, by name; a folder that cannot be listed is one Failure."""
    try:
      with os.scandir(folder.path) as entries:
        found = sorted(entries, key=lambda e: e.name)
    except OSError as error:
      yield self._failure(folder.path, (folder.relpath or '.') + '/',
                          f'cannot list this folder: {error.strerror or error}; nothing in it '
                          'is converted')
      return
    for entry in found:
      item = self.entry(folder, entry)
      if item is not None:
        yield item


def local_versions(root: str, limit: int, extensions: Tuple[str, ...] = IMAGE_EXTENSIONS,
                   exclude: Iterable[str] = (), follow_external_symlinks: bool = False,
                   max_file_bytes: Optional[int] = DEFAULT_MAX_FILE_BYTES
                   ) -> Optional[Dict[str, str]]:
  """relpath -> ``elements.source_version`` (``'SIZE:MTIME'``) of every image file the listing
  would list below the local folder ``root``: walked by its rules (:class:`_LocalTree`: links,
  loops, hidden entries) and classified by them (:func:`classify`, with the arguments
  ``ListImageFiles`` takes); None when ``root`` is not local or the walk meets more than
  ``limit`` files (it stops there).

  The one walk of the input in the launching process, bounded: the local runner compares it
  with the previous night's ``images.jsonl`` to estimate what a night converts before it picks
  its mode (``pipeline.local_runner.choose_night_mode``). Folders that cannot be read and files
  the listing does not take are left out (the listing reports them, in the pipeline).
  """
  if not is_local(root):
    return None
  tree = _LocalTree(root, follow_external_symlinks)
  start = tree.start('')
  if not isinstance(start, _Folder):
    return {}
  extensions = tuple(e.lower() for e in extensions)
  exclude = frozenset(exclude)
  versions, walked = {}, 0
  for entry in tree.walk(start):
    if not isinstance(entry, SourceFile):
      continue
    walked += 1
    if walked > limit:
      return None
    if isinstance(classify(entry, extensions, exclude, max_file_bytes), SourceFile):
      versions[entry.relpath] = source_version(entry)
  return versions


TOP_ENTRIES_PER_ITEM = 1_000
"""Entries of the start folder itself (its files and problems) per work item of the walk: a
flat folder of a million files is then a thousand items, spread over the workers."""


class _ListTopFolderFn(beam.DoFn):
  """A start folder's relpath -> the walk's work items: each folder directly in it
  (``_Folder``, walked below), and its own entries (files and problems) in tuples of at most
  ``TOP_ENTRIES_PER_ITEM``."""

  def __init__(self, tree: _LocalTree):
    self._tree = tree

  def process(self, relpath: str) -> Iterable:
    start = self._tree.start(relpath)
    if start is None:
      return
    if isinstance(start, Failure):
      yield (start,)
      return
    entries = []
    for item in self._tree.scan(start):
      if isinstance(item, _Folder):
        yield item
      else:
        entries.append(item)
        if len(entries) == TOP_ENTRIES_PER_ITEM:
          yield tuple(entries)
          entries = []
    if entries:
      yield tuple(entries)


class _WalkFolderFn(beam.DoFn):
  """A work item of ``_ListTopFolderFn`` -> SourceFile and Failure elements: every file and
  problem below a ``_Folder``, or the start folder's own entries as they are. One output for
  both kinds (``_ClassifyListedFile``, fused after it, tells them apart): a Flatten of two
  outputs would make the local runner hold every listed file between two stages."""

  def __init__(self, tree: _LocalTree):
    self._tree = tree

  def process(self, item: Union[_Folder, Tuple[Union[SourceFile, Failure], ...]]) -> Iterable:
    if not isinstance(item, _Folder):
      yield from item
      return
    yield from self._tree.walk(item)


def _source_file(metadata: FileMetadata, root: str) -> SourceFile:
  """An object store's FileMetadata -> SourceFile (with its size and time)."""
  return SourceFile(metadata.path, relative_path(metadata.path, root), None,
                    metadata.size_in_bytes, metadata.last_updated_in_seconds)


class _ClassifyListedFile(beam.DoFn):
  """SourceFile -> SourceFile, or Failure(stage='list') for a non-image extension, a name
  that is not UTF-8 or a file above ``max_file_bytes``; hidden files are dropped (counted).
  A Failure (the walk's problems) passes through to the ``failures`` output."""

  def __init__(self, extensions: Tuple[str, ...], exclude: Tuple[str, ...],
               max_file_bytes: Optional[int]):
    self._extensions = tuple(e.lower() for e in extensions)
    self._exclude = frozenset(exclude)
    self._max_file_bytes = max_file_bytes
    self._listed = beam.metrics.Metrics.counter(METRICS_NAMESPACE, 'files_listed')
    self._hidden = beam.metrics.Metrics.counter(METRICS_NAMESPACE, 'hidden_files_ignored')

  def process(self, source: Union[SourceFile, Failure]) -> Iterable:
    if isinstance(source, Failure):
      yield beam.pvalue.TaggedOutput(FAILURES_TAG, source)
      return
    verdict = classify(source, self._extensions, self._exclude, self._max_file_bytes)
    if verdict is None:
      self._hidden.inc()
      return
    self._listed.inc()
    if isinstance(verdict, Failure):
      yield beam.pvalue.TaggedOutput(FAILURES_TAG, verdict)
      return
    yield verdict


def classify(source: SourceFile, extensions: Tuple[str, ...], exclude: FrozenSet[str],
             max_file_bytes: Optional[int]) -> Union[None, SourceFile, Failure]:
  """What the listing makes of a file the walk found: None for a hidden file or one of
  ``exclude`` (the label file: ignored); a Failure at stage ``list`` for a name that is not
  UTF-8, an extension not in ``extensions`` (lower case, with '.') or a size above
  ``max_file_bytes``; else ``source`` itself, an image file to convert."""
  relpath = source.relpath
  if is_hidden(relpath) or source.path in exclude:
    return None
  extension = posixpath.splitext(relpath)[1].lower()
  if not _is_utf8(relpath):
    return Failure(printable_name(source.path), printable_name(relpath), STAGE_LIST,
                   'skipped: the file name is not valid UTF-8; rename the file')
  if extension not in extensions:
    shown = extension or '(no extension)'
    return Failure(source.path, relpath, STAGE_LIST,
                   f'skipped: {shown} is not an image file extension (--extensions)')
  size = source.size_in_bytes
  if max_file_bytes is not None and size is not None and size > max_file_bytes:
    return Failure(source.path, relpath, STAGE_LIST,
                   f'skipped: {size:,} bytes, more than --max_file_bytes={max_file_bytes:,}; '
                   'not read')
  return source


class ListImageFiles(beam.PTransform):
  """PBegin -> PCollection[SourceFile], with a ``failures`` output of PCollection[Failure].

  Lists every file below ``input_dir`` recursively (see the module docstring for links,
  special files and folders that cannot be listed). Hidden files are ignored; files whose
  extension is not in ``extensions`` (case-insensitive), or larger than ``max_file_bytes``,
  become failures at stage ``list``, so that every listed file is accounted for. ``folders``
  ('/'-separated, relative to the root), when given, are the only parts of the root listed
  (``--masks=voc`` lists two of a VOC root's folders); relpaths stay relative to
  ``input_dir``. Each SourceFile carries the file's size and modification time.
  """

  def __init__(self, input_dir: str, extensions=IMAGE_EXTENSIONS, exclude=(), folders=(),
               follow_external_symlinks: bool = False,
               max_file_bytes: Optional[int] = DEFAULT_MAX_FILE_BYTES):
    super().__init__()
    self._input_dir = input_dir.rstrip('/') or '/'
    self._extensions = tuple(extensions)
    self._exclude = tuple(exclude)
    self._folders = tuple(folders)
    self._follow_external = follow_external_symlinks
    self._max_file_bytes = max_file_bytes

  def _list_local(self, pbegin):
    tree = _LocalTree(self._input_dir, self._follow_external)
    # SourceFile and Failure elements, classified together below
    return (
        pbegin
        | 'folders to list' >> beam.Create(list(self._folders) or [''])
        | 'list the top folder' >> beam.ParDo(_ListTopFolderFn(tree))
        | 'spread folders over workers' >> beam.Reshuffle()
        | 'walk each folder' >> beam.ParDo(_WalkFolderFn(tree)))

  def _list_object_store(self, pbegin):
    root = escape_pattern(self._input_dir)
    if self._folders:
      matched = (
          pbegin
          | 'folders to list' >> beam.Create([
              FileSystems.join(root, *map(escape_pattern, folder.split('/')), '**')
              for folder in self._folders])
          | 'match files' >> fileio.MatchAll(fileio.EmptyMatchTreatment.ALLOW))
    else:
      matched = pbegin | 'match files' >> fileio.MatchFiles(
          FileSystems.join(root, '**'), empty_match_treatment=fileio.EmptyMatchTreatment.ALLOW)
    return matched | 'to source files' >> beam.Map(_source_file, self._input_dir)

  def expand(self, pbegin):
    listed = (self._list_local(pbegin) if is_local(self._input_dir)
              else self._list_object_store(pbegin))
    return listed | 'keep image files' >> beam.ParDo(
        _ClassifyListedFile(self._extensions, self._exclude, self._max_file_bytes)
    ).with_outputs(FAILURES_TAG, main='files')
