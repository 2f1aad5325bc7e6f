"""examples/train_classifier.py runs as docs/proof.md shows, on the converted sample photos."""

import re
import subprocess
import sys

import pytest

from tests.helpers import REPO, manifest_of

_ACCURACY = r'(\d\.\d{3})'


@pytest.mark.slow
def test_train_classifier_runs_and_reports_validation_accuracy(sample_dataset):
  result = subprocess.run(
      [sys.executable, str(REPO / 'examples' / 'train_classifier.py'),
       f'--data_dir={sample_dataset}', '--epochs=1', '--image_size=64', '--batch_size=16'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  splits = manifest_of(sample_dataset)['splits']
  assert lines[0] == (
      f"{sample_dataset}: 2 classes ['ants', 'bees'], {splits['train']['num_examples']} train "
      f"(train), {splits['validation']['num_examples']} validation (validation); chance is 0.500")
  epoch = re.fullmatch(rf'epoch   1/1: loss \d+\.\d{{3}} accuracy {_ACCURACY}  val_loss '
                       rf'\d+\.\d{{3}} val_accuracy {_ACCURACY}  \(\d+\.\d s\)', lines[1])
  assert epoch, lines
  final = re.fullmatch(rf'final val_accuracy {_ACCURACY} after 1 epoch \(best {_ACCURACY} at '
                       r'epoch 1\); \d+ s of training', lines[2])
  assert final, lines
  # the final evaluation sees the same weights and examples as the epoch's validation pass
  assert final[1] == final[2] == epoch[2]
  assert 0 <= float(final[1]) <= 1
