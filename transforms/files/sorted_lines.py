"""One sorted text file from a PCollection of lines, in memory that does not grow with them.

An external merge sort, on any filesystem Beam knows::

    PCollection[str]                    lines, without their newline
      | sorted runs                     each worker sorts up to ``run_lines`` lines at a time and
      |                                 writes them as a run file: OUT/.staging-sorted/<uuid>
      | all runs                        the run paths: one list (a few per worker and bundle)
      | merge                           heapq.merge of the runs, streamed, ``fan_in`` at a time
      |                                 (more runs: merged in rounds through larger runs)
      -> the file's path, once written and every run deleted

Memory: ``run_lines`` lines per worker while a run fills, then one line and one read buffer
per run merged at once. The lines a job meets in one list on one worker, then sorts, are held
whole instead (on the local runner also by the runner, which passes the list on), a cost that
grows with the lines (docs/benchmarks.md, "Memory").
"""

import heapq
import io
import os
import uuid
from typing import Iterable, Iterator, List

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows

from transforms.files.folders import delete_tree, is_local
from transforms.files.textfiles import write_lines
from transforms.files.working_folders import SORTED_LINES_FOLDER



def _read_lines(path: str) -> Iterator[str]:
  """The lines of a run file, without their newline, streamed."""
  with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
    for line in io.TextIOWrapper(raw, encoding='utf-8', newline='\n'):
      yield line[:-1]


KEY_SEPARATOR = '\0'
"""Between a keyed line's sort key and the line, in run files (``WriteSortedLines(keyed=True)``):
it sorts before any other character, so lines order by their whole key first."""


def merge_runs(runs: List[str], path: str, staging_dir: str, fan_in: int = 64,
               keyed: bool = False) -> str:
  """Merges the sorted run files ``runs`` (in ``staging_dir``) into ``path``; deletes
  ``staging_dir``; returns ``path``.

  More than ``fan_in`` runs are merged in rounds: ``fan_in`` at a time into new runs in
  ``staging_dir``, until ``fan_in`` or fewer are left. ``keyed``: the runs' lines are
  ``key KEY_SEPARATOR line``, and ``path`` gets the lines without their keys.
  """
  runs = sorted(runs)
  while len(runs) > fan_in:
    merged = []
    for start in range(0, len(runs), fan_in):
      group = runs[start:start + fan_in]
      merged.append(FileSystems.join(staging_dir, f'merged-{uuid.uuid4().hex}'))
      write_lines(merged[-1], heapq.merge(*(_read_lines(run) for run in group)))
    runs = merged  # every run stays until the file is written: see _merge_and_tidy
  merged = heapq.merge(*(_read_lines(run) for run in runs))
  write_lines(path, (line.split(KEY_SEPARATOR, 1)[1] for line in merged) if keyed else merged)
  delete_tree(staging_dir)  # the runs
  return path


class _WriteSortedRunsFn(beam.DoFn):
  """str (``keyed``: (sort key, str)) -> the paths of sorted run files, each of at most
  ``run_lines`` lines (``keyed``: ``key KEY_SEPARATOR line``)."""

  def __init__(self, staging_dir: str, run_lines: int, keyed: bool = False):
    self._staging_dir = staging_dir
    self._run_lines = run_lines
    self._keyed = keyed

  def start_bundle(self):
    self._lines: List[str] = []

  def _write_run(self) -> str:
    self._lines.sort()
    run = FileSystems.join(self._staging_dir, f'run-{uuid.uuid4().hex}')
    write_lines(run, self._lines)
    self._lines = []
    return run

  def process(self, line) -> Iterable[str]:
    if self._keyed:
      key, line = line
      if KEY_SEPARATOR in key:
        raise ValueError(f'a sort key holds KEY_SEPARATOR: {key!r}')
      line = f'{key}{KEY_SEPARATOR}{line}'
    self._lines.append(line)
    if len(self._lines) >= self._run_lines:
      yield self._write_run()

  def finish_bundle(self):
    if self._lines:
      yield GlobalWindows.windowed_value(self._write_run())


class WriteSortedLines(beam.PTransform):
  """PCollection[str] (lines without newlines) -> a one-element PCollection: ``path``, after
  writing every line to it, sorted (Python's ``str`` order), one per line (UTF-8).

  Run files go to ``SORTED_LINES_FOLDER/<name of path>`` beside ``path`` and are deleted when it is
  written; no lines at all write an empty file.

  Args:
    path: the file to write.
    run_lines: lines a worker sorts in memory at a time (one run file each).
    fan_in: run files merged at once.
    keyed: the elements are (sort key, line) pairs, keys without ``KEY_SEPARATOR``: lines are
      ordered by their key (then by themselves), and only the lines are written.
  """

  def __init__(self, path: str, run_lines: int = 20_000, fan_in: int = 64,
               keyed: bool = False):
    super().__init__()
    self._path = path
    self._run_lines = run_lines
    self._fan_in = fan_in
    self._keyed = keyed

  def expand(self, lines):
    # one subfolder per file: the job writes several sorted files at once, and each merge
    # deletes its own runs' folder
    folder, name = FileSystems.split(self._path)
    staging_dir = FileSystems.join(folder, SORTED_LINES_FOLDER, name)
    return (
        lines
        | 'sorted runs' >> beam.ParDo(_WriteSortedRunsFn(staging_dir, self._run_lines,
                                                         self._keyed))
        | 'all runs' >> beam.combiners.ToList()
        | 'merge runs' >> beam.Map(_merge_and_tidy, self._path, staging_dir, self._fan_in,
                                   self._keyed))


def _merge_and_tidy(runs: List[str], path: str, staging_dir: str, fan_in: int,
                    keyed: bool = False) -> str:
  """``merge_runs``, then removes ``SORTED_LINES_FOLDER`` itself once the last file's runs are gone
  (locally; object stores have no empty folders). Another file's merge still running keeps
  it: the last one to finish removes it.

  Safe to run again after it completed (Flink runs a step again when a task of its region
  fails later): the runs are deleted only once ``path`` is written whole, so runs that are gone
  while ``path`` exists mean an earlier attempt wrote it, and it is kept.

  Raises:
    FileNotFoundError: a run is gone and ``path`` was never written.
  """
  missing = [run for run in runs if not FileSystems.exists(run)]
  if missing:
    if FileSystems.exists(path):
      return path
    raise FileNotFoundError(f'{len(missing)} sorted runs of {path} are gone, and it was never '
                            f'written: {missing[0]}')
  merge_runs(runs, path, staging_dir, fan_in, keyed)
  parent = FileSystems.split(staging_dir)[0]
  if is_local(parent):
    try:
      os.rmdir(parent)
    except OSError:  # not empty (another file's runs), or gone already: left to the last
      pass
  return path
