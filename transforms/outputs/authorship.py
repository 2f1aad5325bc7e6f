"""Proof that the job wrote what it deletes or replaces: the output record.

Every folder the job writes a run into holds, written before any of the run's files, a record
of the entries the run writes there::

    OUT/.imagerecords/output.json                       a run of --output_dir=OUT
    ROOT/_staging/dt=DATE/.imagerecords/output.json     a dated run, while it is staged,
    ROOT/dt=DATE/.imagerecords/output.json              and moved with it when published

    {"written_by": "imagerecords", "version": "0.1.0", "run_id": "1f2e3d4c5b6a",
     "entries": ["_SUCCESS", ".staging-write", "labels.txt", "manifest.json",
                 "train-00000-of-00002.tfrecord", ...]}

``entries`` are names of entries directly in the folder (files, or folders with everything in
them: ``transform_fn/``, the working folders). The job deletes or replaces an entry only when
the folder's record names it; anything else is refused with a :class:`NotWrittenByThisJob`
naming it, never deleted:

* ``--overwrite`` of ``OUT``: of the entries bearing the job's names (``is_job_name``: shards,
  ``manifest.json``, ``labels.txt``, ...; nothing else of ``OUT`` is touched), each must be
  named by ``OUT``'s record;
* a dated run replaces ``dt=DATE/`` and clears ``_staging/dt=DATE/`` whole: every entry there
  must be named by that folder's record (``.imagerecords/`` holding the record alone).

An output written before the record existed (an older version) proves its entries with its
``manifest.json``: a manifest of imagerecords lists its shards (and their ``.idx`` files), and
implies the metadata files every version writes and, where its statistics name one,
``transform_fn/`` and ``transformed_metadata/``.

What the record proves, and what not: it is written before the files it names, so a run that
died before writing a named file leaves a name a user could take later; and a folder that a
user copies records along with it is proven where it lands. It guards against the accidents
of issue 22 (a data lake whose dated folders hold the photos, a user's own ``manifest.json``),
not against a hostile writer of ``.imagerecords/``.
"""

import json
import os
import posixpath
from typing import Dict, FrozenSet, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from apache_beam.io.filesystems import FileSystems
from imagerecords import contract
from imagerecords import manifest_schema

from transforms.files.folders import delete_paths, files_under, is_local
from transforms.files import working_folders
from transforms.files.textfiles import read_text, replace_text
from transforms.outputs.claim import WORK_DIR  # the job's folder in an output folder

RECORD_FILE = 'output.json'
"""The record's name in ``WORK_DIR``."""

WRITTEN_BY = manifest_schema.TOOL_NAME

METADATA_FILES = (
    contract.SUCCESS_FILE, contract.LABELS_FILE, contract.MANIFEST_FILE, contract.FAILURES_FILE,
    contract.IMAGES_INDEX_FILE, contract.DUPLICATES_FILE, contract.QUALITY_FILE,
    contract.TFDS_DATASET_INFO_FILE, contract.TFDS_FEATURES_FILE, contract.TFDS_CLASS_NAMES_FILE)
"""The fixed names of the files a run may write in its output folder besides its shards."""

STATISTICS_DIRS = (contract.TRANSFORM_FN_DIR, contract.TRANSFORMED_METADATA_DIR)
"""The folders ``--stats=tft`` writes (tensorflow-transform's layout)."""

SHOWN = 5
"""How many refused paths a message names (then a count of the rest)."""


class NotWrittenByThisJob(RuntimeError):
  """A file or folder the run would delete or replace was not written by imagerecords (no
  record names it); the message names it. Nothing was deleted."""


def record_path(folder: str) -> str:
  """``folder/.imagerecords/output.json``."""
  return FileSystems.join(folder, WORK_DIR, RECORD_FILE)


def write_record(folder: str, entries: Iterable[str], run_id: str, version: str) -> None:
  """Writes (replaces) ``folder``'s record naming ``entries`` (names directly in ``folder``),
  for run ``run_id`` of imagerecords ``version``. Atomic locally (a rename), one object write
  on object stores."""
  if is_local(folder):
    os.makedirs(os.path.join(folder, WORK_DIR), exist_ok=True)
  replace_text(record_path(folder), json.dumps(
      {'written_by': WRITTEN_BY, 'version': version, 'run_id': run_id,
       'entries': sorted(set(entries))}, indent=1) + '\n')


def _record(folder: str) -> Optional[dict]:
  """``folder``'s output record as written by this job; None when it has none, or none of
  ours (not our JSON: no proof)."""
  path = record_path(folder)
  if not FileSystems.exists(path):
    return None
  try:
    record = json.loads(read_text(path))
  except (ValueError, UnicodeDecodeError):  # not our JSON: no proof
    return None
  return record if isinstance(record, dict) and record.get('written_by') == WRITTEN_BY else None


def record_run_id(folder: str) -> Optional[str]:
  """The run id ``folder``'s record names (the run that wrote what it names last); None
  when it has no record of ours."""
  run_id = (_record(folder) or {}).get('run_id')
  return run_id if isinstance(run_id, str) else None


def _read_record(folder: str) -> Optional[FrozenSet[str]]:
  """The entries ``folder``'s record names; None when it has none (or none of ours)."""
  entries = (_record(folder) or {}).get('entries')
  if not isinstance(entries, list):
    return None
  return frozenset(name for name in entries if isinstance(name, str))


def _manifest_entries(folder: str) -> FrozenSet[str]:
  """What an imagerecords ``manifest.json`` in ``folder`` proves (an output of a version that
  wrote no record; see the module docstring); empty when there is no such manifest."""
  path = FileSystems.join(folder, contract.MANIFEST_FILE)
  if not FileSystems.exists(path):
    return frozenset()
  try:
    manifest = manifest_schema.Manifest.from_json(json.loads(read_text(path)))
  except (ValueError, UnicodeDecodeError):
    # not JSON, or a manifest.json of another shape (a user's own: Manifest.from_json checks
    # every key's type), or of a newer format version
    return frozenset()
  if manifest.tool.name != WRITTEN_BY:
    return frozenset()
  shards = [shard.file for info in manifest.splits.values() for shard in info.shards]
  tft = manifest.statistics is not None and manifest.statistics.transform_fn
  return frozenset([*METADATA_FILES, *shards,
                    *(name + contract.DALI_INDEX_SUFFIX for name in shards),
                    *(STATISTICS_DIRS if tft else ())])


def proven_entries(folder: str) -> FrozenSet[str]:
  """The names of entries directly in ``folder`` that the job is proven to have written:
  those its record names, or, without a record, those its imagerecords manifest proves."""
  recorded = _read_record(folder)
  return recorded if recorded is not None else _manifest_entries(folder)


def is_job_name(name: str) -> bool:
  """True for a name the job writes directly in an output folder: a shard, a shard's DALI
  index, a metadata file, a ``--stats=tft`` folder, or a working folder (``.staging-*``)."""
  if name.endswith(contract.DALI_INDEX_SUFFIX):  # a shard's DALI index (--dali_index)
    name = name[:-len(contract.DALI_INDEX_SUFFIX)]
  return (name in METADATA_FILES or name in STATISTICS_DIRS
          or working_folders.is_working_folder(name)
          or contract.parse_shard_file_name(name) is not None)


def entry_name(folder: str, path: str) -> str:
  """The name of the entry directly in ``folder`` that ``path`` is, or is below:
  ``entry_name('gs://b/out', 'gs://b/out/transform_fn/saved_model.pb') == 'transform_fn'``."""
  prefix = folder.rstrip('/\\')
  relative = path[len(prefix):].lstrip('/\\') if path.startswith(prefix) else path
  return relative.replace('\\', '/').split('/', 1)[0]


def _entries(folder: str) -> Dict[str, List[str]]:
  """Name of each entry directly in ``folder`` -> the paths that delete it: locally the entry
  itself (a file, link or folder, empty ones included); on object stores every object under
  its name. {} when ``folder`` does not exist."""
  if is_local(folder):
    try:
      with os.scandir(folder) as entries:
        return {entry.name: [entry.path] for entry in entries}
    except FileNotFoundError:
      return {}
    except NotADirectoryError:  # a file where the job's folder would be: no record names it
      return {'': [folder]}
  found: Dict[str, List[str]] = {}
  for path in files_under(folder):
    found.setdefault(entry_name(folder, path), []).append(path)
  return found


def _message(folder: str, foreign: Sequence[str], what: str) -> str:
  shown = ', '.join(foreign[:SHOWN]) + (
      f' and {len(foreign) - SHOWN} more' if len(foreign) > SHOWN else '')
  return (f'{shown}: not written by imagerecords (no record of a run names '
          f'{"it" if len(foreign) == 1 else "them"} in {record_path(folder)}, and no '
          f'imagerecords {contract.MANIFEST_FILE} there lists '
          f'{"it" if len(foreign) == 1 else "them"}); {what}. The job deletes and replaces only '
          'files it wrote: move these away, or choose another --output_dir')


def refuse_foreign(folder: str, paths: Sequence[str], what: str) -> None:
  """Raises NotWrittenByThisJob naming the ``paths`` (entries directly in ``folder``, or files
  below them) whose entries ``folder``'s record does not name; ``what``: what the run would
  have done to them, for the message."""
  proven = proven_entries(folder)
  foreign = [path for path in paths if entry_name(folder, path) not in proven]
  if foreign:
    raise NotWrittenByThisJob(_message(folder, foreign, what))


class FolderContents(NamedTuple):
  """What deletes a folder's contents: ``files`` (files, or local entries with what is in them),
  and ``record``: the record's folder (locally) or object, deleted last."""
  files: List[str]
  record: List[str]

  def delete(self) -> None:
    """Deletes ``files``, ``_SUCCESS`` first, then the record: a deletion cut short leaves
    what is left proven by the record.

    Raises:
      OSError: a path could not be deleted (BeamIOError on object stores).
    """
    delete_success_first(self.files)
    if self.record:
      delete_paths(self.record)


def own_folder_contents(folder: str, what: str) -> FolderContents:
  """What deletes everything in ``folder`` (a dated run's ``dt=DATE/`` or staging folder,
  which the job replaces or clears whole); empty when ``folder`` is empty or absent.

  Raises:
    NotWrittenByThisJob: an entry of ``folder`` is not named by its record (or ``WORK_DIR``
      holds more than the record); the message names them and says ``what`` the run would do.
  """
  entries = _entries(folder)
  proven = proven_entries(folder) if entries else frozenset()
  record = record_path(folder)
  own, foreign, work = [], [], []
  for name, paths in sorted(entries.items()):
    if name == WORK_DIR:  # the record's own folder: the record alone
      inside = files_under(FileSystems.join(folder, WORK_DIR))
      foreign.extend(p for p in inside if p != record)
      work = paths if is_local(folder) else inside
    elif name in proven:
      own.extend(paths)
    else:
      foreign.extend(paths)
  if foreign:
    raise NotWrittenByThisJob(_message(folder, foreign, what))
  return FolderContents(own, work)


def delete_success_first(paths: Sequence[str]) -> None:
  """Deletes ``paths`` (files, or local folders with what is in them), the ``_SUCCESS``
  marker before anything else, so that no reader trusts a half-deleted output.

  Raises:
    OSError: a path could not be deleted (BeamIOError on object stores).
  """
  success = [p for p in paths
             if posixpath.basename(p.replace('\\', '/')) == contract.SUCCESS_FILE]
  if success:
    delete_paths(success)
  rest = [p for p in paths if p not in success]
  if rest:
    delete_paths(rest)


def remove_empty_folder(folder: str) -> Tuple[str, ...]:
  """Removes the local ``folder`` if it is empty; returns the names still in it (nothing on
  object stores, which have no folders, and where ``folder`` does not exist)."""
  if not is_local(folder):
    return ()
  try:
    os.rmdir(folder)
    return ()
  except FileNotFoundError:
    return ()
  except NotADirectoryError:
    return (folder,)
  except OSError:  # ENOTEMPTY
    return tuple(sorted(os.listdir(folder)))
