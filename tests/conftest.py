"""Shared fixtures: the bundled sample photos converted as the README's first command does."""

import subprocess
import sys

import pytest

from tests.helpers import REPO, SAMPLES


@pytest.fixture(scope='session')
def sample_dataset(tmp_path_factory) -> str:
  """The bundled sample photos converted exactly as the README's first command does
  (``python -m pipeline.run``: 48 files, so in the launcher's process; the default --stats),
  at 64 px; the output dir."""
  out = tmp_path_factory.mktemp('samples') / 'out'
  subprocess.run(
      [sys.executable, '-m', 'pipeline.run', f'--input_dir={SAMPLES}', f'--output_dir={out}',
       '--image_size=64', '--resize_mode=center_crop', '--num_shards=train=4,validation=2'],
      cwd=REPO, check=True)
  return str(out)
