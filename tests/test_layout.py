"""The README's layout section matches the tree, and transforms/ keeps the direction it claims."""

import ast
import pathlib
import re
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[1]
STAGES = ('inputs', 'image', 'analysis', 'outputs')  # the data's way, in order
SHARED = ('files', 'elements', 'batches', 'private_apis', 'process_exit')


def _layout_block() -> str:
  readme = (REPO / 'README.md').read_text()
  section = readme.split('## Layout of this repository', 1)[1]
  return re.search(r'```\n(.*?)```', section, re.S).group(1)


def _tracked_files():
  """The repository's files as git tracks them: what a run of the job (``out/``), a virtual
  environment or a build leaves in the working tree is not part of the layout."""
  listed = subprocess.run(['git', 'ls-files', '-z'], cwd=REPO, capture_output=True, check=True)
  return [path for path in listed.stdout.decode().split('\0') if path]


def test_every_path_the_layout_names_exists_and_every_folder_is_named():
  named = set()
  parent = None
  for line in _layout_block().splitlines():
    match = re.match(r'^( {0,4})(\S+)', line)  # deeper: a description's next line
    if not match or not re.search(r'(/|\.py)$', match.group(2)):
      continue
    indent, name = match.groups()
    if indent:  # an entry of the folder above it
      name = f'{parent}{name}'
    else:
      parent = name
    assert (REPO / name).exists(), f'README layout names {name}, which does not exist'
    named.add(name.rstrip('/'))
  tracked = _tracked_files()
  folders = {path.split('/')[0] for path in tracked if '/' in path} - {'.ci'}
  stage_folders = {'/'.join(path.split('/')[:2]) for path in tracked
                   if re.fullmatch(r'transforms/[^/]+/__init__\.py', path)}
  missing = (folders | stage_folders) - named
  assert not missing, f'folders the README layout does not name: {sorted(missing)}'


def _imported_transforms_packages(path: pathlib.Path):
  """(line, the transforms subpackage or module each import names) of one module."""
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      parts = node.module.split('.')
      if parts[0] != 'transforms':
        continue
      if len(parts) > 1:
        yield node.lineno, parts[1]
      else:  # from transforms import X
        for alias in node.names:
          yield node.lineno, alias.name
    elif isinstance(node, ast.Import):
      for alias in node.names:
        parts = alias.name.split('.')
        if parts[0] == 'transforms' and len(parts) > 1:
          yield node.lineno, parts[1]


def test_each_transforms_folder_imports_only_earlier_stages_and_the_shared_modules():
  wrong = []
  for stage in STAGES:
    allowed = {*SHARED, stage, *STAGES[:STAGES.index(stage)]}
    for path in sorted((REPO / 'transforms' / stage).glob('*.py')):
      for line, target in _imported_transforms_packages(path):
        if target not in allowed:
          wrong.append(f'{path.relative_to(REPO)}:{line} imports transforms.{target}')
  assert not wrong, '\n'.join(wrong)


def test_files_and_elements_import_no_stage():
  for path in [REPO / 'transforms' / 'elements.py', REPO / 'transforms' / 'batches.py',
               REPO / 'transforms' / 'private_apis.py',
               *(REPO / 'transforms' / 'files').glob('*.py')]:
    for line, target in _imported_transforms_packages(path):
      assert target in SHARED, f'{path.relative_to(REPO)}:{line} imports transforms.{target}'
