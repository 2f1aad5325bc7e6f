"""The one write-or-check step of the files generated from the job's options
(``docs/make_options.py``: docs/options.md; ``deploy/dataflow/make_metadata.py``: the Flex
Template's metadata.json), which CI runs with ``--check``."""

import pathlib
import sys
from typing import Sequence


def write_or_check_generated(path: pathlib.Path, text: str, argv: Sequence[str], script: str,
                             what: str) -> int:
  """The write-or-check step of a file generated from the job's options (``metadata.json``,
  ``docs/options.md``), as its generator's exit status.

  With ``--check`` in ``argv``: 0 when ``path`` holds ``text``, else 1 after printing how to
  regenerate it (``script``: the generator's path relative to the repo root). Without: writes
  ``text`` there, prints ``wrote PATH (WHAT)`` and returns 0.
  """
  if '--check' in argv:
    if path.exists() and path.read_text(encoding='utf-8') == text:
      return 0
    print(f'{path} is stale: run python {script}', file=sys.stderr)
    return 1
  path.write_text(text, encoding='utf-8')
  print(f'wrote {path} ({what})')
  return 0
