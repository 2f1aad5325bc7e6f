"""The launcher's end of a run: what it does with the runner's result.

- A Dataflow Flex Template launch, the runner's result faked at Beam's boundary
  (``tests.fake_runners.TemplateLaunchRunner``, Beam's own ``DataflowPipelineResult`` without a
  job, state DONE): the launcher must report a submitted job, not a finished one, and read or
  write nothing of the output that the job itself publishes: with ``--overwrite
  --run_date=<a published date>`` the published run (its manifest above all) stays as it was
  until the job replaces it.
- A finished job whose manifest the launcher may not rewrite (SDK workers of another user own
  the folder): the run is published all the same, exit 0, the job's manifest kept.
"""

import hashlib
import json
import logging
import subprocess
import sys

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.dataflow.dataflow_runner import DataflowPipelineResult
import pytest
from apache_beam.runners.runner import PipelineResult, PipelineState

from pipeline import outputs
from pipeline import run as job
from tests.fake_runners import TemplateLaunchRunner
from tests.helpers import REPO, SAMPLES, convert

RUN_DATE = '2026-11-21'
FLAGS = ['--image_size=32', '--num_shards=1', '--stats=false']


def _launch(output_dir, *flags):
  return subprocess.run(
      [sys.executable, '-m', 'pipeline.run', f'--input_dir={SAMPLES}',
       f'--output_dir={output_dir}', f'--run_date={RUN_DATE}', *FLAGS, *flags],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


def _tree(root):
  """{relative path: sha256 of the bytes} of every file below ``root``."""
  return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
          for path in sorted(root.rglob('*')) if path.is_file()}


@pytest.mark.slow
def test_a_template_launch_is_reported_as_submitted_and_touches_no_published_run(tmp_path):
  out = tmp_path / 'records'
  first = _launch(out, '--runner=FnApiRunner')
  assert first.returncode == 0, first.stderr[-4000:]
  published = out / f'dt={RUN_DATE}'
  before, latest = _tree(published), (out / 'LATEST').read_text()
  assert 'manifest.json' in before and '_SUCCESS' in before

  launch = _launch(out, '--overwrite', '--runner=tests.fake_runners.TemplateLaunchRunner',
                   f'--template_location={tmp_path / "template_launches" / "job_object"}')
  assert launch.returncode == 0, launch.stderr[-4000:]
  lines = launch.stderr.strip().splitlines()
  assert 'job submitted, not run yet (a template launch, no job yet' in lines[-1], lines[-1]
  assert str(published) in lines[-1]  # where the job will publish
  assert not any(' done: ' in line or 'imagerecords wrote' in line for line in lines), lines
  assert _tree(published) == before, 'the launcher rewrote the published run'
  assert (out / 'LATEST').read_text() == latest


class _Result(PipelineResult):
  pass


def test_launched_not_run_tells_a_launch_from_a_finished_job():
  plain = PipelineOptions([])
  assert job.launched_not_run(_Result(PipelineState.DONE), plain) is None
  assert job.launched_not_run(_Result(PipelineState.RUNNING), plain) == 'state RUNNING'
  # Beam's result of a template launch: no job, state DONE (with or without the option)
  no_job = DataflowPipelineResult(None, TemplateLaunchRunner(), plain)
  assert no_job.state == PipelineState.DONE
  assert job.launched_not_run(no_job, plain).startswith('a template launch')
  template = PipelineOptions(['--template_location=gs://b/launch/job_object'])
  assert job.launched_not_run(_Result(PipelineState.DONE), template).endswith(
      'gs://b/launch/job_object')


@pytest.mark.slow
def test_a_manifest_the_launcher_may_not_rewrite_leaves_the_run_published(
    tmp_path, monkeypatch, caplog):
  out = tmp_path / 'records'

  def refused(output_dir, manifest):
    raise PermissionError(13, 'Permission denied', f'{output_dir}/manifest.json.1.tmp')

  monkeypatch.setattr(outputs, 'write_manifest', refused)
  with caplog.at_level(logging.WARNING, logger='imagerecords'):
    status = convert(SAMPLES, out, f'--run_date={RUN_DATE}', *FLAGS, '--runner=FnApiRunner')
  assert status == 0
  published = out / f'dt={RUN_DATE}'
  assert (published / '_SUCCESS').is_file()
  assert (out / 'LATEST').read_text().strip() == f'dt={RUN_DATE}'
  manifest = json.loads((published / 'manifest.json').read_text())
  assert manifest['status'] == 'complete' and 'metrics' not in manifest  # the job's own
  assert any("keeps the job's own content" in record.getMessage() and 'Permission denied' in
             record.getMessage() for record in caplog.records), caplog.text
