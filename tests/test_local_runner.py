"""What a local run sets for its own processes (``pipeline.local_runner.apply_local_runner_defaults``):
glibc's malloc arenas, for the launcher and the SDK worker processes it starts."""

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

_PROBE = '''
import os, sys
from apache_beam.options.pipeline_options import PipelineOptions
from pipeline import local_runner
argv = sys.argv[1:]
local_runner.apply_local_runner_defaults(PipelineOptions(argv), argv)
print(os.environ.get('MALLOC_ARENA_MAX'))
'''


def _arenas_after_defaults(runner_flags, environ_value=None):
  env = {key: value for key, value in os.environ.items() if key != 'MALLOC_ARENA_MAX'}
  if environ_value is not None:
    env['MALLOC_ARENA_MAX'] = environ_value
  result = subprocess.run([sys.executable, '-c', _PROBE, *runner_flags], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=True)
  return result.stdout.strip().splitlines()[-1]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc is the Linux C library')
def test_a_local_run_limits_malloc_arenas_for_itself_and_its_workers():
  local = ['--runner=FnApiRunner', '--direct_running_mode=multi_processing',
           '--direct_num_workers=2']
  assert _arenas_after_defaults(local) == '2'  # the workers inherit the environment
  assert _arenas_after_defaults(local, environ_value='4') == '4'  # the user's own is kept
  # a cluster's workers are not this process's children: nothing is set
  assert _arenas_after_defaults(['--runner=DataflowRunner']) == 'None'


def test_limit_malloc_arenas_leaves_a_set_environment_alone(monkeypatch):
  from pipeline import local_runner  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv('MALLOC_ARENA_MAX', '3')
  assert local_runner.limit_malloc_arenas() is False
  assert os.environ['MALLOC_ARENA_MAX'] == '3'


_EXIT_PROBE = '''
import atexit, gc
# registered first, so it runs last (atexit runs its handlers in reverse order)
atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count() > 0, flush=True))
from transforms import process_exit
process_exit.skip_final_collections()
process_exit.skip_final_collections()  # once per process, however often it is asked
kept = [object() for _ in range(1000)]
print('frozen before exit:', gc.get_freeze_count() > 0, flush=True)
'''


def test_a_process_that_skips_its_final_collections_freezes_its_objects_only_at_exit():
  # The launcher (pipeline.run.main) and a local run's worker processes (the conversion's
  # DoFn.setup) exit without the final full collections; nothing changes before the exit.
  result = subprocess.run([sys.executable, '-c', _EXIT_PROBE], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=True)
  assert result.stdout.splitlines() == ['frozen before exit: False', 'frozen at exit: True']
