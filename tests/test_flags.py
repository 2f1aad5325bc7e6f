"""Flags that neither the job nor Beam defines stop the launch (exit 2) instead of being
discarded; every runner's own flags pass through (``pipeline.options.check_flags``)."""

import logging

import pytest

from pipeline import options as opts
from tests.helpers import SAMPLES, convert

# Real runner flags, as deploy/ and docs/converting.md pass them; none of them is the job's own.
RUNNER_FLAGS = {
    'dataflow': ['--runner=DataflowRunner', '--project=my-project', '--region=europe-west1',
                 '--temp_location=gs://bucket/tmp', '--staging_location=gs://bucket/staging',
                 '--sdk_container_image=europe-docker.pkg.dev/p/r/imagerecords:1',
                 '--experiments=use_runner_v2', '--experiments=no_use_multiple_sdk_containers',
                 '--setup_file=./setup.py', '--max_num_workers=8',
                 '--machine_type=n2-standard-4'],
    'flink': ['--runner=FlinkRunner', '--flink_master=localhost:8081',
              '--environment_type=EXTERNAL', '--environment_config=localhost:50000'],
    'portable': ['--runner=PortableRunner', '--job_endpoint=localhost:8099',
                 '--environment_type', 'LOOPBACK', '--artifact_endpoint=localhost:8098'],
    'local': ['--runner=FnApiRunner', '--direct_running_mode=multi_processing',
              '--direct_num_workers=2'],
}


@pytest.mark.parametrize('runner', sorted(RUNNER_FLAGS))
def test_runner_flags_pass(runner):
  opts.check_flags(['--input_dir=in', '--output_dir=out', '--image_size=64', '--stats=false',
                    '--verbose', *RUNNER_FLAGS[runner]])


@pytest.mark.parametrize('argv, message', [
    (['--image_sise=64'], 'unknown flag --image_sise (did you mean --image_size?)'),
    (['--image_sise', '64'], 'unknown flag --image_sise (did you mean --image_size?)'),
    (['--projcet=p'], 'unknown flag --projcet (did you mean --project?)'),
    # argparse's prefix matching is off in Beam's parser: an abbreviation is no flag either
    (['--image_siz=64'], 'unknown flag --image_siz (did you mean --image_size?)'),
    (['--image_sise=64', '--zzzz'], 'unknown flags --image_sise (did you mean --image_size?), '
     '--zzzz:'),
])
def test_unknown_flags_are_named_with_beams_suggestion(argv, message):
  with pytest.raises(ValueError) as raised:
    opts.check_flags(['--input_dir=in', *argv, '--project=p'])
  assert message in str(raised.value)
  assert '\n' not in str(raised.value)


def test_after_a_double_dash_nothing_is_a_flag():
  opts.check_flags(['--input_dir=in', '--', '--not_a_flag'])


def test_a_typo_stops_the_launch_with_exit_2(tmp_path, caplog):
  out = tmp_path / 'out'
  with caplog.at_level(logging.ERROR, logger='imagerecords'):
    status = convert(SAMPLES, out, '--image_sise=64')
  assert status == 2
  errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
  assert any("--image_sise (did you mean --image_size?)" in e for e in errors), errors
  assert not out.exists()
  assert list(tmp_path.iterdir()) == []  # no claim file or log beside it either
