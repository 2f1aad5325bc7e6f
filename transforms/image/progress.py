"""The conversion's progress counts, as the workers of a local run leave them for the launcher.

On the local runner (FnApiRunner, in one process or several) the launcher shows one progress
line for the whole job (``pipeline.progress``). The worker processes are its children on the
same machine, so each conversion DoFn instance keeps its running counts in a small file of a
local folder the launcher created and named in the job's config::

    PROGRESS_DIR/
      <pid>-<instance>.json    {"done": 1234, "failed": 2, "total": 4378}
                               done: images converted; failed: images that failed to read,
                               decode or pair with their mask; total: images to convert in the
                               whole job (every instance has it, once the listing has ended),
                               or null before

A file is rewritten whole (written beside, then renamed over: a reader never sees half of
it) at most every :data:`WRITE_EVERY_S` seconds and when a bundle ends. On Dataflow or Flink
there is no such folder (``progress_dir`` None); the same counts are the job's Beam metrics
(``images_converted``, ``images_failed_*`` counters, the ``images_to_convert`` gauge,
namespace ``imagerecords``), which the runner's UI shows.

This module owns the file format: :class:`ProgressFile` writes it, :func:`read_progress`
adds the files up.
"""

import json
import os
import time
import uuid
from typing import NamedTuple, Optional

WRITE_EVERY_S = 0.5
"""Seconds between two rewrites of an instance's file while it converts."""


class Progress(NamedTuple):
  """The whole job's counts: images ``done`` (converted) and ``failed`` so far, and the
  ``total`` to convert (None until the listing, labelling and de-duplication have ended)."""
  done: int
  failed: int
  total: Optional[int]


class ProgressFile:
  """One conversion DoFn instance's counts, in its own file of ``progress_dir``.

  Call :meth:`update` after every image (it writes at most every :data:`WRITE_EVERY_S`) and
  :meth:`flush` when a bundle ends. Errors writing the file (a full or vanished temporary
  folder) are ignored: progress display is not worth failing a conversion for.
  """

  def __init__(self, progress_dir: str):
    self._path = os.path.join(progress_dir, f'{os.getpid()}-{uuid.uuid4().hex[:12]}.json')
    self._counts = {'done': 0, 'failed': 0, 'total': None}
    self._written_at = 0.0

  def update(self, done: int = 0, failed: int = 0, total: Optional[int] = None) -> None:
    """Adds ``done`` and ``failed`` images, records the job's ``total``; writes if due."""
    self._counts['done'] += done
    self._counts['failed'] += failed
    if total is not None:
      self._counts['total'] = total
    if time.monotonic() - self._written_at >= WRITE_EVERY_S:
      self.flush()

  def flush(self) -> None:
    """Writes the counts now."""
    self._written_at = time.monotonic()
    temporary = f'{self._path}.tmp'
    try:
      with open(temporary, 'w', encoding='utf-8') as handle:
        json.dump(self._counts, handle)
      os.replace(temporary, self._path)
    except OSError:  # the launcher's temporary folder is gone or full: no progress shown
      pass


def read_progress(progress_dir: str) -> Progress:
  """The sum of every instance's counts in ``progress_dir`` (a file being replaced, or one
  that is not JSON, is skipped this time); zeros when there is none yet."""
  done = failed = 0
  total = None
  try:
    names = [name for name in os.listdir(progress_dir) if name.endswith('.json')]
  except OSError:
    names = []
  for name in names:
    try:
      with open(os.path.join(progress_dir, name), encoding='utf-8') as handle:
        counts = json.load(handle)
    except (OSError, ValueError):  # renamed over meanwhile: read again next time
      continue
    done += int(counts.get('done') or 0)
    failed += int(counts.get('failed') or 0)
    if counts.get('total') is not None:
      total = int(counts['total'])
  return Progress(done, failed, total)
