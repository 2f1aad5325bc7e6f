"""failures.jsonl written by an external merge and the failures summarized in bounded memory
(``transforms.outputs.failures``): the metadata step never holds the failures themselves."""

import collections
import json

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from tests.helpers import convert, manifest_of, shared_data
from transforms.elements import STAGE_DECODE, STAGE_LIST, STAGE_READ, Failure
from transforms.outputs import failures


@pytest.mark.slow
def test_the_messy_folder_s_failures_are_in_file_order_and_summarized(tmp_path):
  """The 90 odd files of ../shared/data/messy: failures.jsonl holds every failure once, in
  (file, stage) order, and the manifest's counts are those of the file."""
  out = tmp_path / 'out'
  assert convert(shared_data('messy'), out, '--label_source=none', '--max_failure_fraction=1') == 0
  entries = [json.loads(line) for line in (out / 'failures.jsonl').read_text().splitlines()]
  assert len(entries) > 10
  keys = [(entry['relpath'], entry['stage']) for entry in entries]
  assert keys == sorted(keys) and len(set(keys)) == len(keys)
  manifest = manifest_of(out)
  assert manifest['failures_by_stage'] == dict(sorted(collections.Counter(
      entry['stage'] for entry in entries).items()))
  skipped = sum(1 for entry in entries if entry['stage'] in ('list', 'missing', 'duplicate'))
  assert (manifest['num_failures'], manifest['num_skipped']) == (len(entries) - skipped, skipped)


def _failure(name, stage=STAGE_DECODE, reason='not an image'):
  return Failure(f'/in/{name}', name, stage, reason)


def test_the_summary_ranks_reasons_with_their_first_file_and_leaves_skipped_stages_out():
  found = [_failure('b.jpg'), _failure('a.jpg'), _failure('c.txt', STAGE_LIST, 'not an image'),
           _failure('d.jpg', STAGE_READ, 'cannot read: gone')]
  summary = failures.summarize(found)
  assert summary.by_stage == {'decode': 2, 'list': 1, 'read': 1}
  assert (summary.num_entries, summary.num_skipped, summary.num_failed) == (4, 1, 3)
  assert summary.reasons == (('decode', 'not an image', 2, 'a.jpg'),
                             ('read', 'cannot read: gone', 1, 'd.jpg'))
  assert failures.common_failure_reasons(summary, 1) == 'decode: not an image (2, e.g. a.jpg)'
  assert '--extensions' in failures.failure_hint(summary, 'directory')
  error = failures.failure_fraction_error(4, 0.5, 'OUT/failures.jsonl', summary)
  assert error.startswith('3 of 4 image inputs failed (75.0%), more than '
                          '--max_failure_fraction=0.5; most common: decode: not an image')


def test_reasons_that_name_their_file_are_held_in_bounded_memory(monkeypatch):
  """100,000 read failures, each reason naming its file (an OS error), and 2,000 of one
  common reason: the summary holds at most MAX_REASONS_HELD reasons, the common one first."""
  monkeypatch.setattr(failures, 'MAX_REASONS_HELD', 500)
  combine = failures._SummaryFn()  # pylint: disable=protected-access
  halves = [combine.create_accumulator(), combine.create_accumulator()]
  for i in range(100_000):
    name = f'{i:06d}.jpg'
    failure = _failure(name, STAGE_READ, f'cannot read: [Errno 13] Permission denied: {name}')
    halves[i % 2] = combine.add_input(halves[i % 2], failure)
    if i % 50 == 0:
      halves[i % 2] = combine.add_input(halves[i % 2], _failure(name))
  for half in halves:
    assert len(half[1]) <= 500
  summary = combine.extract_output(combine.merge_accumulators(halves))
  assert summary.by_stage == {'decode': 2_000, 'read': 100_000}
  assert len(summary.reasons) <= 500
  top = summary.reasons[0]
  assert (top.stage, top.reason, top.example) == ('decode', 'not an image', '000000.jpg')
  assert 1_000 < top.count <= 2_000  # a lower bound once reasons were dropped


def test_write_failures_orders_by_file_then_stage_whatever_the_name(tmp_path):
  """Names with a newline, a space and a prefix of another name: every line is one failure,
  in (relpath, stage) order, and the summary comes once the file is written."""
  names = ['b.jpg', 'a b.jpg', 'a.jpg', 'a.jpg.txt', 'line\nbreak.jpg', 'a.jpg']
  stages = [STAGE_DECODE, STAGE_DECODE, STAGE_READ, STAGE_LIST, STAGE_DECODE, STAGE_DECODE]
  found = [_failure(name, stage) for name, stage in zip(names, stages)]
  with TestPipeline(runner='FnApiRunner') as p:
    summary = (p | beam.Create(found) | failures.WriteFailures(str(tmp_path)))
    assert_that(summary | beam.Map(lambda s: (s.by_stage, s.num_failed)),
                equal_to([({'decode': 4, 'list': 1, 'read': 1}, 5)]))
  lines = (tmp_path / 'failures.jsonl').read_text(encoding='utf-8').splitlines()
  written = [Failure(**json.loads(line)) for line in lines]
  assert written == sorted(found, key=lambda f: (f.relpath, f.stage))
  assert not (tmp_path / '.staging-sorted').exists()
