"""The README's training example runs as written (on the converted sample photos)."""

import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / 'README.md'


def test_readme_training_example_runs(sample_dataset):
  blocks = re.findall(r'```python\n(.*?)```', README.read_text(), re.S)
  assert len(blocks) == 1
  code = blocks[0]
  assert "data = 'out'" in code and 'epochs=5' in code
  code = code.replace("data = 'out'", f'data = {sample_dataset!r}').replace('epochs=5', 'epochs=1')
  namespace = {}
  exec(compile(code, str(README), 'exec'), namespace)  # pylint: disable=exec-used
  history = namespace['model'].history.history
  assert set(history) >= {'loss', 'accuracy', 'val_loss', 'val_accuracy'}


def _first_command_job() -> str:
  """The job part of the README's first command (after its install steps)."""
  text = README.read_text()
  block = re.search(r'Convert the bundled sample photos.*?```\n(.*?)```', text, re.S).group(1)
  return block.strip().rsplit(' && ', 1)[1]


@pytest.mark.slow
def test_the_first_command_then_the_tests_in_a_clone(tmp_path):
  """The README's two commands in a row (issue 24): in a clone of this repository (its files
  as git sees them, uncommitted ones included), the first command's job writes out/, then the
  test command collects every test and the layout tests, which read the repository's files,
  still pass."""
  repo = README.parent
  clone = tmp_path / 'clone'
  listed = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
                          cwd=repo, capture_output=True, check=True).stdout.decode().split('\0')
  for name in filter(None, listed):
    if (repo / name).is_file():
      (clone / name).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(repo / name, clone / name)
  for command in (['git', 'init', '-q'], ['git', 'add', '-A']):
    subprocess.run(command, cwd=clone, check=True, capture_output=True)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(clone), str(clone / 'reader')]))
  job = _first_command_job()
  assert job.startswith('.venv/bin/python -m pipeline.run '), job
  argv = [sys.executable, *shlex.split(job)[1:]]
  result = subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True, check=False,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert (clone / 'out' / '_SUCCESS').is_file()
  tests = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-n', '0']
  collected = subprocess.run([*tests, '--collect-only'], cwd=clone, env=env,
                             capture_output=True, text=True, check=False, timeout=600)
  assert collected.returncode == 0, collected.stdout[-3000:]
  layout = subprocess.run([*tests, 'tests/test_layout.py'], cwd=clone, env=env,
                          capture_output=True, text=True, check=False, timeout=600)
  assert layout.returncode == 0, layout.stdout[-3000:]
