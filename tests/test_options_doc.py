"""docs/options.md is what docs/make_options.py writes from the job's own options."""

import importlib.util
import pathlib

DOCS = pathlib.Path(__file__).resolve().parents[1] / 'docs'


def _make_options():
  spec = importlib.util.spec_from_file_location('docs_make_options', DOCS / 'make_options.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_options_md_is_what_make_options_writes():
  assert (DOCS / 'options.md').read_text(encoding='utf-8') == _make_options().render(), (
      'docs/options.md is stale: run .venv/bin/python docs/make_options.py')


def test_every_job_option_has_a_row():
  from pipeline import options  # pylint: disable=import-outside-toplevel
  text = (DOCS / 'options.md').read_text(encoding='utf-8')
  for action in options.job_actions():
    assert f'| `--{action.dest}` |' in text, action.dest


def test_check_mode_reports_a_stale_page(tmp_path, monkeypatch):
  module = _make_options()
  stale = tmp_path / 'options.md'
  stale.write_text('# stale\n', encoding='utf-8')
  monkeypatch.setattr(module, 'OPTIONS_MD', stale)
  assert module.main(['--check']) == 1
  stale.write_text(module.render(), encoding='utf-8')
  assert module.main(['--check']) == 0
