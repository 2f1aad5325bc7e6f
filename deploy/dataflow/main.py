"""Flex Template entry point: the file the template launcher runs (FLEX_TEMPLATE_PYTHON_PY_FILE).

The launcher runs ``python main.py`` with every template parameter as ``--name=value`` plus the
Dataflow options of the launch (``--project``, ``--region``, ``--temp_location``,
``--sdk_container_image``, ...). Two things differ from a command line typed by hand, and are
fixed here before ``pipeline.run.run`` parses the flags:

- a switch of the job (an ``action='store_true'`` option such as ``--overwrite``) arrives as
  ``--overwrite=true`` or ``--overwrite=false``, which argparse refuses: it becomes
  ``--overwrite`` or is dropped;
- the runner defaults to ``DataflowRunner`` (the job's own default is the local runner).

The exit status is ``pipeline.run.run``'s (0 submitted/published, 1 failed, 2 nothing ran), or
2 for a switch whose value is neither true nor false.
"""

import logging
import sys
from typing import FrozenSet, List, Sequence

TRUE_VALUES = ('true', '1', 'yes')
FALSE_VALUES = ('false', '0', 'no', '')


def switch_flags() -> FrozenSet[str]:
  """The job's ``store_true`` options, as ``'--name'`` strings (``pipeline.options.is_switch``
  of ``pipeline.options.job_actions``)."""
  from pipeline import options  # pylint: disable=import-outside-toplevel
  return frozenset(action.option_strings[0] for action in options.job_actions()
                   if options.is_switch(action))


def template_argv(argv: Sequence[str], switches: FrozenSet[str]) -> List[str]:
  """The launcher's arguments rewritten for ``pipeline.run.run`` (see the module docstring).

  Args:
    argv: the arguments after the program name, e.g. ``['--input_dir=gs://b/in',
      '--overwrite=true']``.
    switches: ``'--name'`` of every store_true option (``switch_flags()``).

  Returns:
    The same arguments in the same order, switches written bare or dropped, and
    ``--runner=DataflowRunner`` appended when no ``--runner`` is given.

  Raises:
    ValueError: a switch's value is not one of TRUE_VALUES or FALSE_VALUES (any case).
  """
  result = []
  for arg in argv:
    name, sep, value = arg.partition('=')
    if sep and name in switches:
      value = value.strip().lower()
      if value in TRUE_VALUES:
        result.append(name)
      elif value not in FALSE_VALUES:
        raise ValueError(f'{name}={value!r}: expected true or false')
      continue
    result.append(arg)
  if not any(arg == '--runner' or arg.startswith('--runner=') for arg in result):
    result.append('--runner=DataflowRunner')
  return result


def main() -> None:
  """Runs the job with the launcher's arguments; exits with the job's status."""
  try:
    argv = template_argv(sys.argv[1:], switch_flags())
  except ValueError as error:
    logging.getLogger('imagerecords').error('%s', error)
    sys.exit(2)
  from pipeline.run import run  # pylint: disable=import-outside-toplevel
  sys.exit(run(argv))


if __name__ == '__main__':
  main()
