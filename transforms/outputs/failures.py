"""``failures.jsonl`` and what the manifest says of the failures, in memory that does not grow
with them.

Every input that did not become an example is one ``Failure``: the file is written one per line,
ordered by file and stage, by an external merge (``transforms.files.sorted_lines``), and the
metadata step receives one :class:`FailureSummary` (counts per stage, the most common reasons
of the failed image inputs with an example file each), never the failures themselves: a folder
that holds a sidecar file beside each image (``.json``, ``.txt``) has as many failures as images.

    PCollection[Failure]
      ├─> ((relpath, stage) key, JSON line) -> WriteSortedLines      OUT/failures.jsonl
      └─> CombineGlobally(_SummaryFn)                                 one FailureSummary
"""

import collections
from typing import Dict, NamedTuple, Optional, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from imagerecords import contract

from transforms.elements import NOT_INPUTS, STAGE_DECODE, STAGE_LABEL, STAGE_READ, Failure
from transforms.files.sorted_lines import WriteSortedLines

COMMON_REASONS_SHOWN = 3
"""How many of the most common failure reasons a failed run's one-line reason quotes."""

MAX_REASONS_HELD = 10_000
"""Distinct (stage, reason) pairs of failed inputs a summary counts exactly. Reasons that name
their file (an OS error's message) can be as many as the failures; past this many, the least
common are dropped as new ones come (Misra and Gries, "Finding repeated elements", 1982): a
reason more common than 1 in ``MAX_REASONS_HELD`` failures is still kept, its count then a
lower bound."""


class ReasonCount(NamedTuple):
  """A reason of failed inputs: its stage, its words, how many failed so and the first of them
  by relative path."""
  stage: str
  reason: str
  count: int
  example: str


class FailureSummary(NamedTuple):
  """What the manifest and a failed run's reason say of the failures (``failures.jsonl`` holds
  each one).

  by_stage: stage -> entries of ``failures.jsonl`` (the stages of ``NOT_INPUTS`` too).
  reasons: the most common reasons of the failed image inputs (not ``NOT_INPUTS``), most
    common first, ties in (stage, reason) order; at most ``MAX_REASONS_HELD``.
  """
  by_stage: Dict[str, int]
  reasons: Tuple[ReasonCount, ...] = ()

  @property
  def num_entries(self) -> int:
    """Lines of ``failures.jsonl``."""
    return sum(self.by_stage.values())

  @property
  def num_skipped(self) -> int:
    """Entries that are not failed image inputs (stages of ``NOT_INPUTS``)."""
    return sum(self.by_stage.get(stage, 0) for stage in NOT_INPUTS)

  @property
  def num_failed(self) -> int:
    """Failed image inputs."""
    return self.num_entries - self.num_skipped


def summarize(failures) -> FailureSummary:
  """The FailureSummary of an iterable of Failure (what the pipeline's combiner gives)."""
  combine = _SummaryFn()
  accumulator = combine.create_accumulator()
  for failure in failures:
    accumulator = combine.add_input(accumulator, failure)
  return combine.extract_output(accumulator)


class _SummaryFn(beam.CombineFn):
  """Failure -> one FailureSummary. The accumulator: (Counter of stages, {(stage, reason):
  [count, first relpath]}), the reasons bounded by ``MAX_REASONS_HELD``."""

  def create_accumulator(self):
    return collections.Counter(), {}

  def add_input(self, accumulator, failure: Failure):
    stages, reasons = accumulator
    stages[failure.stage] += 1
    if failure.stage not in NOT_INPUTS:
      _count(reasons, (failure.stage, failure.reason), 1, failure.relpath)
    return accumulator

  def merge_accumulators(self, accumulators):
    stages, reasons = collections.Counter(), {}
    for more_stages, more_reasons in accumulators:
      stages.update(more_stages)
      for key, (count, example) in more_reasons.items():
        _count(reasons, key, count, example)
    return stages, reasons

  def extract_output(self, accumulator) -> FailureSummary:
    stages, reasons = accumulator
    ranked = sorted(reasons.items(), key=lambda item: (-item[1][0], item[0]))
    return FailureSummary(dict(sorted(stages.items())), tuple(
        ReasonCount(stage, reason, count, example)
        for (stage, reason), (count, example) in ranked))


def _count(reasons: Dict[Tuple[str, str], list], key: Tuple[str, str], count: int,
           example: str) -> None:
  """Adds ``count`` failures of ``key`` (first file ``example``) to ``reasons``, keeping at
  most ``MAX_REASONS_HELD`` keys (``MAX_REASONS_HELD``'s docstring)."""
  held = reasons.get(key)
  if held is not None:
    held[0] += count
    held[1] = min(held[1], example)
    return
  reasons[key] = [count, example]
  if len(reasons) > MAX_REASONS_HELD:  # take the least count off every reason; drop those at 0
    least = min(value[0] for value in reasons.values())
    for other in list(reasons):
      reasons[other][0] -= least
      if reasons[other][0] <= 0:
        del reasons[other]


def common_failure_reasons(summary: FailureSummary, most: int = COMMON_REASONS_SHOWN) -> str:
  """The ``most`` most common reasons of the failed image inputs, each with its stage, count
  and the first file (by path) that failed so, e.g. ``label: not inside a class folder: ...
  (200, e.g. cat.1.jpg)``. '' when no input failed."""
  return '; '.join(f'{r.stage}: {r.reason} ({r.count}, e.g. {r.example})'
                   for r in summary.reasons[:most])


def failure_hint(summary: FailureSummary, label_source: Optional[str]) -> str:
  """What usually fixes the most common failure's stage, naming the flag; '' when no input
  failed or no flag helps (a missing mask, a file that vanished)."""
  if not summary.reasons:
    return ''
  stage = summary.reasons[0].stage
  if stage == STAGE_LABEL and label_source:
    kind, _, value = label_source.partition(':')
    return {
        'directory': 'images outside a class folder: move them into one, or try '
                     '--label_source=file:PATH, --label_source=filename:REGEX or '
                     '--label_source=none',
        'filename': f'file names the regex of --label_source=filename:{value} does not match: '
                    'check it, or try --label_source=directory or file:PATH',
        'file': f'images the label file {value} does not name: check its file names, or try '
                '--label_source=directory or filename:REGEX',
    }.get(kind, f'check --label_source={label_source}')
  if stage == STAGE_DECODE:
    return ('files that are not images the job decodes: --extensions=jpg,jpeg,png (say) lists '
            'only the types you mean, or a higher --max_failure_fraction accepts them')
  if stage == STAGE_READ:
    return 'files that could not be read: check their permissions and the storage'
  return ''


def failure_fraction_error(num_inputs: int, limit: float, failures_path: str,
                           summary: FailureSummary, label_source: Optional[str] = None
                           ) -> Optional[str]:
  """The reason a run fails on its failures, or None when it may succeed: the count, the most
  common reasons with an example file each (:func:`common_failure_reasons`), the flag that
  usually fixes the most common one (:func:`failure_hint`) and the report's path."""
  if num_inputs == 0:
    return 'no image files found under the input directory'
  num_failed = summary.num_failed
  if num_failed > limit * num_inputs:
    reasons = common_failure_reasons(summary)
    hint = failure_hint(summary, label_source)
    return (f'{num_failed} of {num_inputs} image inputs failed ({num_failed / num_inputs:.1%}), '
            f'more than --max_failure_fraction={limit}'
            + (f'; most common: {reasons}' if reasons else '')
            + (f'; {hint}' if hint else '') + f'; see {failures_path}')
  return None


def _keyed_line(failure: Failure) -> Tuple[str, str]:
  """A failure's line of failures.jsonl, keyed by its file and stage (the file's order); a
  newline in a file's name is escaped in its key, whose run files hold one line each."""
  relpath = failure.relpath.replace('\n', '\\n')
  return f'{relpath}\x01{failure.stage}', failure.to_json()  # \x01: before any name's character


class WriteFailures(beam.PTransform):
  """PCollection[Failure] -> a one-element PCollection[FailureSummary], emitted once
  ``OUT/failures.jsonl`` is written (one ``Failure.to_json`` per line, ordered by relative path,
  then stage; an empty file when nothing failed).

  Args:
    output_dir: the folder the file is written to.
  """

  def __init__(self, output_dir: str):
    super().__init__()
    self._path = FileSystems.join(output_dir, contract.FAILURES_FILE)

  def expand(self, failures):
    written = (failures
               | 'failure lines' >> beam.Map(_keyed_line)
               | 'write failures.jsonl' >> WriteSortedLines(self._path, keyed=True))
    return (failures
            | 'count failures' >> beam.CombineGlobally(_SummaryFn())
            | 'after the file' >> beam.transforms.util.WaitOn(written))

