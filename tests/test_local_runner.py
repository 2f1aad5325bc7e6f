"""What a local run sets for its own processes (``pipeline.local_runner``): glibc's malloc
arenas, for the launcher and the SDK worker processes it starts; the launcher's own process for
a night that converts little."""

import logging
import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO, convert, manifest_of, shared_data

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


def _photos(count):
  """``count`` real photos, hymenoptera's ants and bees, half each, bees last."""
  train = shared_data('hymenoptera') / 'train'
  return [*sorted(train.glob('ants/*.jpg'))[:count // 2],
          *sorted(train.glob('bees/*.jpg'))[:count - count // 2]]


def _copy_under(root, photos):
  """Copies each photo to ``root/<its class folder>/<its name>``."""
  for photo in photos:
    target = root / photo.parent.name / photo.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(photo, target)


def test_local_versions_are_the_listings_size_and_time_by_relpath(tmp_path):
  """The launcher's bounded walk takes what the listing takes: image files by its extensions,
  not hidden ones, not the label file, not a looping link; each with the listing's
  'SIZE:MTIME'."""
  from transforms.inputs.listing import local_versions  # pylint: disable=import-outside-toplevel
  root = tmp_path / 'in'
  _copy_under(root, _photos(6))
  (root / '.hidden').mkdir()
  (root / '.hidden' / 'x.jpg').write_bytes(b'not walked')
  (root / 'ants' / 'loop').symlink_to(root)  # a loop: reported by the listing, not walked
  (root / 'notes.txt').write_text('not an image\n')
  (root / 'labels.jpg').write_text('a label file named like an image\n')
  expected = {}
  for path in root.glob('[!.]*/*.jpg'):
    info = path.stat()
    expected[path.relative_to(root).as_posix()] = f'{info.st_size}:{info.st_mtime!r}'
  versions = local_versions(str(root), 100, exclude=[str(root / 'labels.jpg')])
  assert versions == expected and len(versions) == 6
  assert local_versions(str(root), 7) is None  # 8 files walked (the dot-folder is not): over
  assert local_versions('gs://bucket/photos', 100) is None


def test_a_night_that_converts_little_runs_in_the_launchers_process(tmp_path, monkeypatch,
                                                                   caplog):
  """A night whose work (files to convert, plus reused files weighed 1/20) is below the
  in-process threshold runs in the launcher's process, with one worker; one with more work, or
  a flag that sets the mode, keeps the worker processes. The threshold is lowered to 10 files,
  so that a folder of 50 real photos is "large" and its night (2 new, 48 reused: 2 + 48/20 =
  4.4) "small"."""
  from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions  # pylint: disable=import-outside-toplevel
  from pipeline import local_runner  # pylint: disable=import-outside-toplevel
  from pipeline.config import JobConfig  # pylint: disable=import-outside-toplevel
  from pipeline.options import ConvertOptions  # pylint: disable=import-outside-toplevel
  images, root = tmp_path / 'images', tmp_path / 'out'
  photos = _photos(50)
  _copy_under(images, photos[:48])
  flags = ('--image_size=32', '--num_shards=1')
  assert convert(images, root, '--run_date=2026-12-01', *flags) == 0  # in this process
  _copy_under(images, photos[48:])  # new tonight
  monkeypatch.setattr(local_runner, 'IN_PROCESS_BELOW_FILES', 10)

  def mode(*extra):
    argv = [f'--input_dir={images}', f'--output_dir={root}', '--run_date=2026-12-02', *flags,
            *extra]
    options = PipelineOptions(argv)
    local_runner.apply_local_runner_defaults(options, argv)
    config = JobConfig.from_options(options.view_as(ConvertOptions))
    work = local_runner.choose_night_mode(options, argv, config)
    direct = options.view_as(DirectOptions)
    return work, direct.direct_running_mode, direct.direct_num_workers

  assert mode() == ((2, 48), 'in_memory', 1)
  cores = local_runner.usable_cores()
  assert mode('--direct_running_mode=multi_processing') == (None, 'multi_processing', cores)
  assert mode('--direct_num_workers=2') == (None, 'multi_processing', 2)
  assert mode('--full_rebuild')[:2] == (None, 'multi_processing')
  monkeypatch.setattr(local_runner, 'REUSED_PER_CONVERTED', 4)  # 2 + 48/4 = 14: too much
  assert mode()[:2] == (None, 'multi_processing')
  monkeypatch.setattr(local_runner, 'REUSED_PER_CONVERTED', 20)
  # the whole night, with the job's own choice: in this process, 48 records reused
  with caplog.at_level(logging.INFO, logger='imagerecords'):
    assert convert(images, root, '--run_date=2026-12-02', *flags, in_memory=False) == 0
  assert ('about 2 files to convert and 48 to reuse from the previous night: converting in '
          'this process') in caplog.text
  night = manifest_of(root / 'dt=2026-12-02')
  assert (night['num_examples'], night['incremental']['reused']) == (50, 48)
