"""Folders on any filesystem Beam knows: local disk has them, object stores (``gs://``,
``s3://``) only have key prefixes; both are listed and removed the same way here.

Paths are literal. Beam's ``FileSystems.match`` takes glob patterns (``*``, ``?``, ``[...]``),
and its local and ``gs://`` ``delete`` match their arguments too, so a folder named
``dataset[v2]`` or ``out[1]`` would otherwise select its siblings (``out1/``). Every path that
goes into a match goes through :func:`escape_pattern`; local folders are listed and deleted
with ``os`` calls, without patterns at all::

    escape_pattern('/data/out[1]/*.txt')   ->  '/data/out[[]1]/[*].txt'
    files_under('/data/out[1]')            ->  the files below out[1]/, never out1/'s
    delete_paths(['/data/out[1]/a'])       ->  removes exactly that file
"""

import os
import shutil
import warnings
from typing import Iterable, List, Optional

from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import FileSystems

_PATTERN_CHARACTERS = {'[': '[[]', '*': '[*]', '?': '[?]'}

# Beam 2.77's delete() matches its arguments as patterns on these filesystems (local disk and
# GCS); S3's deletes the keys it is given as they are.
_DELETE_MATCHES_PATTERNS = ('gs',)


def is_local(path: str) -> bool:
  """True for a path on local disk (no ``scheme://``)."""
  return FileSystems.get_scheme(path) is None


def escape_pattern(path: str) -> str:
  """``path`` as a ``FileSystems.match`` pattern that matches exactly ``path``.

  Beam's ``FileSystem.translate_pattern`` follows fnmatch, whose brackets quote: ``[`` ->
  ``[[]``, ``*`` -> ``[*]``, ``?`` -> ``[?]``; ``]`` outside a bracket is literal already.
  Append a pattern to the result (``FileSystems.join(escape_pattern(d), '*')``) to match inside
  a literal folder.
  """
  return ''.join(_PATTERN_CHARACTERS.get(c, c) for c in path)


def match(pattern: str, limit: Optional[int] = None) -> List[FileMetadata]:
  """``FileSystems.match`` of one pattern (its literal parts made with :func:`escape_pattern`).

  Python's ``re`` warns "Possible nested set" (a FutureWarning) at the regex Beam makes of the
  ``[[]`` escape; it is the standard fnmatch quote, and the warning is silenced here.
  """
  with warnings.catch_warnings():
    warnings.filterwarnings('ignore', 'Possible nested set', FutureWarning)
    return FileSystems.match([pattern], limits=[limit])[0].metadata_list


def match_literal(path: str) -> Optional[FileMetadata]:
  """The metadata of exactly ``path`` (any filesystem), or None when there is no such file."""
  if is_local(path):
    try:
      stat = os.stat(path)
    except OSError:
      return None
    return FileMetadata(path, stat.st_size, stat.st_mtime)
  found = match(escape_pattern(path))
  return found[0] if found else None


def files_under(directory: str) -> List[str]:
  """Every file below ``directory`` (recursively), as full paths, sorted; [] when there is
  none. Locally symlinks are listed as entries, never followed (a run's own folders hold
  none)."""
  if is_local(directory):
    found = []
    for parent, folders, files in os.walk(directory):
      found.extend(os.path.join(parent, name) for name in files)
      # a link to a folder is an entry of its parent (deleted as a file), not a subtree
      found.extend(os.path.join(parent, name) for name in folders
                   if os.path.islink(os.path.join(parent, name)))
    return sorted(found)
  try:
    found = match(FileSystems.join(escape_pattern(directory), '**'))
  except OSError:  # BeamIOError (a subclass) where nothing matches on some filesystems
    return []
  return sorted(m.path for m in found)


def holds_a_file(directory: str) -> bool:
  """True when ``directory`` has at least one file below it (found without listing it all)."""
  if is_local(directory):
    for _, _, files in os.walk(directory):
      if files:
        return True
    return False
  return bool(match(FileSystems.join(escape_pattern(directory), '**'), limit=1))


def count_local_files(directory: str, limit: int) -> Optional[int]:
  """The number of files (and links) below the local ``directory``, counted up to ``limit``
  (a folder walk that stops there: ``limit`` means "at least ``limit``"); None for a path
  that is not local (an object store is not walked for this)."""
  if not is_local(directory):
    return None
  count = 0
  for _, _, files in os.walk(directory):
    count += len(files)
    if count >= limit:
      return limit
  return count


def delete_paths(paths: Iterable[str]) -> None:
  """Deletes exactly ``paths`` (files, or local folders with what is in them); on every
  filesystem the paths are taken literally, never as patterns.

  Raises:
    OSError: a path could not be deleted (BeamIOError on object stores).
  """
  paths = list(paths)
  local = [p for p in paths if is_local(p)]
  for path in local:
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path)
    else:
      os.remove(path)
  remote = [p for p in paths if not is_local(p)]
  if remote:
    with warnings.catch_warnings():  # see match()
      warnings.filterwarnings('ignore', 'Possible nested set', FutureWarning)
      FileSystems.delete([escape_pattern(p) if FileSystems.get_scheme(p) in _DELETE_MATCHES_PATTERNS
                          else p for p in remote])


def delete_tree(directory: str) -> None:
  """Deletes every file below ``directory``, then ``directory`` itself where the filesystem has
  folders (local disk; on object stores it is gone with its last file). Nothing there: a
  no-op."""
  if is_local(directory):
    if os.path.isdir(directory) and not os.path.islink(directory):
      shutil.rmtree(directory)
    return
  files = files_under(directory)
  if files:
    delete_paths(files)
