"""The README's training example runs as written (on the converted sample photos)."""

import pathlib
import re

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
