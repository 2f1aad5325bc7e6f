"""What a run on Beam's local runner sets for its own processes before the pipeline starts:
the runner and its mode (one worker per usable core, or the launcher's own process for a small
folder, or for a night that converts little) and glibc's malloc arenas. Only what the user did
not set is set.
"""

import ctypes
import ctypes.util
import os
from typing import NamedTuple, Optional, Sequence

from apache_beam.options.pipeline_options import (DirectOptions, PipelineOptions,
                                                  StandardOptions)

from pipeline.options import ConvertOptions
from transforms.files import reads
from transforms.files.folders import count_local_files
from transforms.inputs.listing import local_versions
from transforms.outputs.image_index import keyed_by_file

LOCAL_RUNNERS = ('FnApiRunner', 'DirectRunner', 'SwitchingDirectRunner', 'BundleBasedDirectRunner')
"""The runners that run the pipeline on this machine, in this process or its children."""

IN_PROCESS_BELOW_FILES = 1000
"""A local input folder with fewer files than this runs in the launcher's process
(``--direct_running_mode=in_memory``) unless a flag says otherwise: below that, starting and
stopping the worker processes costs more than a second core saves (docs/benchmarks.md,
"Start-up")."""

REUSED_PER_CONVERTED = 20
"""How many images a night reuses weigh as much, in choosing the runner's mode, as one it
converts: what a second worker process saves on a reused image against a converted one, on 2
cores (0.083 against 1.68 ms of wall time, docs/benchmarks.md, "One process for a night that
converts little")."""


MALLOC_ARENAS = 2
"""glibc ``malloc`` arenas per process of a local run (``MALLOC_ARENA_MAX``; glibc's default is
8 per core). The multi-process local runner's launcher receives every stage's output through
gRPC threads, each of which gets an arena of its own; freed memory stays in the arena it was
taken from, so the process tree's footprint grows with the threads, not with what it holds.
Two arenas lower the whole job's peak at the same CPU (docs/benchmarks.md, "Second pass")."""

_M_ARENA_MAX = -8  # glibc's malloc.h


def limit_malloc_arenas() -> bool:
  """Sets :data:`MALLOC_ARENAS` for this process (``mallopt``) and for the processes it starts
  (``MALLOC_ARENA_MAX`` in the environment, which glibc reads at a process's start), unless
  the environment sets ``MALLOC_ARENA_MAX`` already (then glibc applied it to this process at
  its start, and it is left as it is). Returns whether it set them: False too where the C
  library has no ``mallopt`` (not glibc)."""
  if 'MALLOC_ARENA_MAX' in os.environ:
    return False
  try:
    mallopt = ctypes.CDLL(ctypes.util.find_library('c')).mallopt
  except (OSError, AttributeError):  # no C library by that name, or one without mallopt
    return False
  if not mallopt(_M_ARENA_MAX, MALLOC_ARENAS):  # 0: refused (a C library that is not glibc)
    return False
  os.environ['MALLOC_ARENA_MAX'] = str(MALLOC_ARENAS)
  return True


def _set_by_flag(argv: Sequence[str], *flags: str) -> bool:
  """Whether ``argv`` sets one of ``flags`` (``--flag=value`` or ``--flag value``)."""
  return any(arg.startswith(flags) for arg in argv)


def apply_local_runner_defaults(options: PipelineOptions,
                                argv: Sequence[str]) -> Optional[int]:
  """Runs on every core by default: FnApiRunner in multi-process mode, one worker per usable
  core; a small local input (fewer than :data:`IN_PROCESS_BELOW_FILES` files, counted with a
  walk that stops there) in this one process instead. Returns that small input's file count
  (None otherwise).

  Also limits glibc's malloc arenas (:func:`limit_malloc_arenas`). Only what the user did
  not set is set. ``FnApiRunner`` rather than ``DirectRunner``: Beam
  2.77's DirectRunner first tries to download the Prism runner, which hangs offline. Usable
  cores: those this process may run on (``os.sched_getaffinity``: a container's or
  ``taskset``'s CPU set), not every core of the machine.
  """
  standard = options.view_as(StandardOptions)
  if standard.runner is None:
    standard.runner = 'FnApiRunner'
  if standard.runner not in LOCAL_RUNNERS:
    return None
  limit_malloc_arenas()
  direct = options.view_as(DirectOptions)
  small = None
  if not _set_by_flag(argv, '--direct_running_mode'):
    input_dir = options.view_as(ConvertOptions).input_dir
    count = count_local_files(input_dir, IN_PROCESS_BELOW_FILES) if (
        input_dir and not _set_by_flag(argv, '--direct_num_workers')) else None
    if count is not None and count < IN_PROCESS_BELOW_FILES:
      direct.direct_running_mode, small = 'in_memory', count
    else:
      direct.direct_running_mode = 'multi_processing'
  if (direct.direct_running_mode != 'in_memory'
      and not _set_by_flag(argv, '--direct_num_workers')):
    direct.direct_num_workers = usable_cores()
  return small


class NightWork(NamedTuple):
  """A night's work as estimated at launch: ``to_convert`` files whose path or version
  (``'SIZE:MTIME'``) the previous night's ``images.jsonl`` does not hold (new, changed, and
  files that are not images), ``to_reuse`` the others."""
  to_convert: int
  to_reuse: int


def choose_night_mode(options: PipelineOptions, argv: Sequence[str], config
                      ) -> Optional[NightWork]:
  """Runs an incremental night in this process (``--direct_running_mode=in_memory``, one
  worker, as a small first run) when it converts little: when its estimated work, the files to
  convert plus the files to reuse weighed by :data:`REUSED_PER_CONVERTED`, is below
  :data:`IN_PROCESS_BELOW_FILES` (the threshold of a first run, where all files are
  converted). Returns that estimate when it chose this process; None when it left the mode as
  it was: not the local runner, a mode or worker count set by a flag, a run already in this
  process, not a night that reuses (``config.incremental``), a night with ``--masks`` or
  ``--embedding_model`` (the embedding model was loaded for the mode chosen before), an input
  that is not local or holds too many files to walk for it
  (:func:`transforms.inputs.listing.local_versions` stops after ``IN_PROCESS_BELOW_FILES *
  REUSED_PER_CONVERTED`` files), or too much work.

  ``config``: the run's ``pipeline.config.JobConfig`` (which imports this module).

  The estimate walks the local input once, by the listing's rules (``config``'s extensions,
  label file, links and size limit), and reads the previous run's ``images.jsonl``, in the
  launcher, before the graph is built; the pipeline's own listing and comparison decide what is
  reused. A file counts as reused when its path and ``'SIZE:MTIME'`` are the previous entry's
  (the other reasons to convert a file again, a new label or split, are not estimated). An
  estimate that is off costs time, never output. A walk or an ``images.jsonl`` that fails here
  leaves the mode as it is (the pipeline's own listing and reading report why).
  """
  plan = config.incremental
  if (options.view_as(StandardOptions).runner not in LOCAL_RUNNERS
      or _set_by_flag(argv, '--direct_running_mode', '--direct_num_workers')
      or runs_in_process(options) or not (plan and plan.reuse) or config.masks
      or config.embedding):
    return None
  try:
    versions = local_versions(
        config.input_dir, IN_PROCESS_BELOW_FILES * REUSED_PER_CONVERTED, config.extensions,
        [config.label_file] if config.label_file else [], config.follow_external_symlinks,
        config.max_file_bytes)
    if versions is None:
      return None
    previous = map(keyed_by_file,
                   reads.read_bytes(plan.previous_index).decode('utf-8').splitlines())
    reused = sum(1 for relpath, entry in previous if entry.get('version') is not None
                 and versions.get(relpath) == entry['version'])
  except (OSError, reads.ReadFailed, ValueError, KeyError, TypeError, AttributeError):
    # The mode is a matter of speed: a folder or an index that cannot be read or parsed here
    # leaves it as it is, and the pipeline's own listing and reading report the problem.
    return None
  work = NightWork(len(versions) - reused, reused)
  if work.to_convert + work.to_reuse / REUSED_PER_CONVERTED >= IN_PROCESS_BELOW_FILES:
    return None
  direct = options.view_as(DirectOptions)
  direct.direct_running_mode, direct.direct_num_workers = 'in_memory', 1
  return work


def usable_cores() -> int:
  """The cores this process may run on (its CPU affinity), at least 1."""
  try:
    return max(len(os.sched_getaffinity(0)), 1)
  except AttributeError:  # no sched_getaffinity (macOS, Windows): every core
    return os.cpu_count() or 1


def runs_in_process(options: PipelineOptions) -> bool:
  """Whether the pipeline's workers run in this very process: the local runner in
  ``--direct_running_mode=in_memory`` (after :func:`apply_local_runner_defaults`)."""
  return (options.view_as(StandardOptions).runner in LOCAL_RUNNERS
          and options.view_as(DirectOptions).direct_running_mode == 'in_memory')
