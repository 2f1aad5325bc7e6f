"""What a newcomer meets in the first hour (issue 24, items 7 and 8): a quiet ``inspect`` that
writes nothing it was not asked to, counts and words on the console that say what they count
(a VOC run's mask classes too), and an offline embedding model that names the flag to use."""

import collections
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from imagerecords import inspect
from PIL import Image

from pipeline import outputs
from tests.helpers import REPO, SAMPLES, convert, manifest_of, shared_data

ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / 'reader')]))


@pytest.mark.slow
def test_inspect_prints_no_tensorflow_start_up_and_writes_pictures_only_where_told(tmp_path):
  out = tmp_path / 'out'
  assert convert(SAMPLES, out) == 0
  here = tmp_path / 'cwd'
  here.mkdir()
  result = subprocess.run([sys.executable, '-m', 'imagerecords.inspect', str(out)], cwd=here,
                          env=ENV, capture_output=True, text=True, check=False, timeout=300)
  assert result.returncode == 0, result.stderr
  assert result.stderr == '', result.stderr  # no cuInit, CPU-feature or absl lines
  assert result.stdout.strip().splitlines()[-1] == 'OK'
  assert '--out DIR' in result.stdout
  assert not list(here.iterdir()), list(here.iterdir())  # nothing in the current folder
  pictures = tmp_path / 'pictures'
  result = subprocess.run([sys.executable, '-m', 'imagerecords.inspect', str(out), '--out',
                           str(pictures)], cwd=here, env=ENV, capture_output=True, text=True,
                          check=False, timeout=300)
  assert result.returncode == 0, result.stderr
  assert (pictures / 'class_counts.png').is_file() and not list(here.iterdir())


def test_counts_on_the_console_name_what_they_count():
  assert outputs.counted(1, 'file') == '1 file'
  assert outputs.counted(9900, 'label line without an image',
                         'label lines without an image') == (
      '9,900 label lines without an image')
  assert outputs.counted(1, 'class', 'classes') == '1 class'
  assert outputs.counted(0, 'class', 'classes') == '0 classes'


def test_a_label_file_run_calls_its_unmatched_lines_label_lines_not_files(tmp_path, capsys):
  """A label file naming 3 images that exist and 2 that do not, among the 48 samples: the
  summary counts 2 label lines without an image, and no skipped files."""
  images = tmp_path / 'images'
  names = sorted(p.relative_to(SAMPLES) for p in SAMPLES.glob('*/*.jpg'))
  labels = tmp_path / 'labels.csv'
  lines = ['filename,label'] + [f'{name.as_posix()},{name.parent.name}' for name in names]
  lines += ['ants/gone_1.jpg,ants', 'bees/gone_2.jpg,bees']
  labels.write_text('\n'.join(lines) + '\n')
  shutil.copytree(SAMPLES, images)
  assert convert(images, tmp_path / 'out', f'--label_source=file:{labels}') == 0
  console = capsys.readouterr().err
  assert '0 inputs failed; skipped: 2 label lines without an image' in console, console
  assert 'files skipped' not in console


@pytest.mark.slow
def test_an_offline_keras_application_names_embedding_weights(tmp_path):
  """Keras downloads an application's ImageNet weights on first use; with no way out (a proxy
  on a closed loopback port, an empty Keras cache) the launch fails (exit 2) naming the flag."""
  env = dict(ENV, KERAS_HOME=str(tmp_path / 'keras'), HTTPS_PROXY='http://127.0.0.1:9',
             https_proxy='http://127.0.0.1:9', HTTP_PROXY='http://127.0.0.1:9',
             http_proxy='http://127.0.0.1:9')
  result = subprocess.run(
      [sys.executable, '-m', 'pipeline.run', f'--input_dir={SAMPLES}',
       f'--output_dir={tmp_path / "out"}', '--embedding_model=keras.applications:MobileNetV2',
       '--direct_running_mode=in_memory'],
      cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=300)
  assert result.returncode == 2, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert 'URL fetch failure' in last and '--embedding_weights=FILE' in last, last


def test_help_gives_an_example_first_then_the_options_in_groups_and_how_to_list_beams(capsys):
  from pipeline import usage  # pylint: disable=import-outside-toplevel
  from pipeline import options as opts  # pylint: disable=import-outside-toplevel
  from pipeline.run import run  # pylint: disable=import-outside-toplevel
  grouped = [name for _, names in usage.HELP_GROUPS for name in names]
  assert sorted(grouped) == sorted(a.dest for a in opts.job_actions())  # each once
  assert run(['--help']) == 0
  text = capsys.readouterr().out
  headers = [text.index(f'\n{title}:\n') for title in ['example'] + [
      title for title, _ in usage.HELP_GROUPS]] + [text.index('\nrunner (Beam')]
  assert headers == sorted(headers), headers
  assert '--stats [true|false|tft]' in text and '--input_dir DIR' in text
  assert '[STATS]' not in text and 'INPUT_DIR' not in text
  assert run(['--help_beam']) == 0
  beam = capsys.readouterr().out
  assert '--runner' in beam and '--direct_num_workers' in beam and '--input_dir' not in beam


@pytest.mark.slow
def test_a_voc_run_without_class_names_counts_the_classes_its_masks_hold(tmp_path, capsys):
  """The 3 VOC photos and their palette masks, without ``class_names.txt``: the summary says
  how many classes the masks hold (not '0 classes'), the manifest counts the examples whose
  mask holds each as inspect does, and with the class names the same counts carry names."""
  voc = tmp_path / 'voc'
  shutil.copytree(shared_data('segmentation/voc_palette'), voc)
  names = (voc / 'class_names.txt').read_text().split('\n')
  (voc / 'class_names.txt').unlink()
  expected = collections.Counter()  # class id -> masks that hold it (void 255 left out)
  for mask in (voc / 'SegmentationClass').glob('*.png'):
    expected.update(v for v in np.unique(np.asarray(Image.open(mask))).tolist() if v != 255)
  assert convert(voc, tmp_path / 'out', '--masks=voc', '--image_size=512') == 0
  console = capsys.readouterr().err
  assert f'3 examples in {len(expected)} mask classes' in console, console
  counts = collections.Counter()
  for split in manifest_of(tmp_path / 'out')['splits'].values():
    counts.update(split['class_counts'])
  assert counts == {f'class {i}': n for i, n in expected.items()}
  assert 'class 15' in console  # a row of the table
  report = inspect.inspect(str(tmp_path / 'out'))  # reads every record's mask
  assert not report.problems, report.problems
  read = collections.Counter()
  for split in report.splits.values():
    read.update(split.class_counts)
  assert read == counts
  # with the class names, the same counts under their names
  (voc / 'class_names.txt').write_text('\n'.join(names))
  assert convert(voc, tmp_path / 'named', '--masks=voc', '--image_size=512') == 0
  named = collections.Counter()
  for split in manifest_of(tmp_path / 'named')['splits'].values():
    named.update(split['class_counts'])
  assert named == {names[i]: n for i, n in expected.items()}
  assert 'person' in capsys.readouterr().err
