"""Flags that neither the job nor Beam defines stop the launch (exit 2) instead of being
discarded; every runner's own flags pass through (``pipeline.options.check_flags``). So do flags
that would silently mean something else: an empty path or date (``check_not_empty``), Beam's
``--labels`` taken for a label file (``check_dataflow_labels``)."""

import logging

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import validation
from tests.helpers import SAMPLES, convert, shared_data

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
  validation.check_flags(['--input_dir=in', '--output_dir=out', '--image_size=64', '--stats=false',
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
    validation.check_flags(['--input_dir=in', *argv, '--project=p'])
  assert message in str(raised.value)
  assert '\n' not in str(raised.value)


def test_after_a_double_dash_nothing_is_a_flag():
  validation.check_flags(['--input_dir=in', '--', '--not_a_flag'])


def test_a_typo_stops_the_launch_with_exit_2(tmp_path, caplog):
  out = tmp_path / 'out'
  with caplog.at_level(logging.ERROR, logger='imagerecords'):
    status = convert(SAMPLES, out, '--image_sise=64')
  assert status == 2
  errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
  assert any("--image_sise (did you mean --image_size?)" in e for e in errors), errors
  assert not out.exists()
  assert list(tmp_path.iterdir()) == []  # no claim file or log beside it either


# Each flag of the job that takes a path or a date, given empty as a scheduler's template that
# rendered nothing leaves it: every one stops the launch, naming itself, before anything is
# written (an empty --run_date used to write a plain run into the nightly root).
EMPTY_FLAGS = ['--run_date=', '--run_date= ', '--label_map=', '--masks=', '--embedding_model=',
               '--embedding_weights=', '--label_source=file:', '--input_dir=', '--output_dir=']


@pytest.mark.parametrize('flag', EMPTY_FLAGS)
def test_an_empty_path_or_date_stops_the_launch_with_exit_2_naming_the_flag(tmp_path, caplog, flag):
  from pipeline.run import run  # pylint: disable=import-outside-toplevel
  root = tmp_path / 'root'
  argv = [f'--input_dir={SAMPLES}', f'--output_dir={root}', '--image_size=32', '--num_shards=1',
          '--stats=false', '--direct_running_mode=in_memory']
  name = flag.split('=', 1)[0]
  argv = [arg for arg in argv if not arg.startswith(name + '=')] + [flag]
  with caplog.at_level(logging.ERROR, logger='imagerecords'):
    assert run(argv) == 2
  errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
  assert len(errors) == 1 and '\n' not in errors[0], errors
  assert errors[0].startswith(name), errors
  assert 'empty' in errors[0] or 'names no label file' in errors[0], errors
  assert list(tmp_path.iterdir()) == []  # no output, claim or log


def test_beams_labels_taken_for_a_label_file_stops_the_launch_with_the_hint(tmp_path, caplog):
  # Beam defines --labels (Dataflow job labels): a label file meant by it used to be dropped
  # without a word, and every photo of Tiny ImageNet labelled 'images' (its folder)
  out = tmp_path / 'out'
  with caplog.at_level(logging.ERROR, logger='imagerecords'):
    status = convert(shared_data('tiny_imagenet_val'), out, '--labels=val_annotations.txt',
                     '--image_size=32', '--num_shards=1')
  assert status == 2
  errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
  assert len(errors) == 1 and '--label_source=file:val_annotations.txt' in errors[0], errors
  assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('runner, labels, refused', [
    ('DataflowRunner', [], False),
    ('DataflowRunner', ['--labels=team=vision', '--labels=cost-centre=ml_42'], False),
    ('DataflowRunner', ['--labels={"team": "vision"}'], False),
    ('dataflow', ['--labels=team=vision'], False),
    ('DataflowRunner', ['--labels=val_annotations.txt'], True),
    ('DataflowRunner', ['--labels=team=vision', '--labels=gs://bucket/labels.csv'], True),
    ('DataflowRunner', ['--labels=annotations'], True),  # a file of that name exists here
    ('FnApiRunner', ['--labels=team=vision'], True),
    ('FlinkRunner', ['--labels=team=vision'], True),
])
def test_beams_labels_pass_only_as_dataflow_job_labels(tmp_path, monkeypatch, runner, labels,
                                                        refused):
  monkeypatch.chdir(tmp_path)
  (tmp_path / 'annotations').write_text('val_0.JPEG n03444034\n')
  options = PipelineOptions([f'--runner={runner}', *labels])
  if not refused:
    validation.check_dataflow_labels(options)
    return
  with pytest.raises(ValueError, match=r'--label_source=file:') as raised:
    validation.check_dataflow_labels(options)
  assert "Beam's flag for Dataflow job labels" in str(raised.value)
