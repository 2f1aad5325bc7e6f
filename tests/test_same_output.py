"""The job's output keeps its content when its graph changes (issue 15): on real photos of
../shared/data, what the job writes now equals, less what varies between runs, what it wrote
before the per-image overhead work (``tests/golden_outputs.json``, see ``tests/golden.py``):
the same records per split (count, class counts, bytes, fingerprint), the same manifest
sections and the same images.jsonl, labels.txt, failures.jsonl, duplicates.jsonl and
quality.jsonl."""

import json

import pytest

from tests import golden
from tests.helpers import SHARED_DATA, shared_data


@pytest.mark.parametrize('name', sorted(golden.CASES))
def test_output_as_before(tmp_path, name):
  shared_data(golden.CASES[name][0])
  expected = json.loads(golden.GOLDEN.read_text())[name]
  got = golden.case_digest(name, SHARED_DATA, tmp_path)
  assert got['manifest'] == expected['manifest']
  assert got['files'] == expected['files']
