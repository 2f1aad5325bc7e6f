"""Folders on any filesystem Beam knows: local disk has them, object stores (``gs://``,
``s3://``) only have key prefixes; both are listed and removed the same way here."""

from typing import List

from apache_beam.io.filesystems import FileSystems


def files_under(directory: str) -> List[str]:
  """Every file below ``directory`` (recursively), as full paths; [] when there is none."""
  try:
    result = FileSystems.match([FileSystems.join(directory, '**')])[0]
  except OSError:  # BeamIOError (a subclass) where nothing matches on some filesystems
    return []
  return sorted(m.path for m in result.metadata_list)


def delete_tree(directory: str) -> None:
  """Deletes every file below ``directory``, then ``directory`` itself where the filesystem has
  folders (local disk; on object stores it is gone with its last file). Nothing there: a
  no-op."""
  files = files_under(directory)
  if files:
    FileSystems.delete(files)
  if FileSystems.exists(directory):
    FileSystems.delete([directory])
