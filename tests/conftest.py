"""Shared fixtures: the bundled sample photos converted as the README's first command does."""

import subprocess
import sys

import pytest

from tests.helpers import REPO, SAMPLES

# The modules whose tests run longest in all (pytest --durations: test_flink.py, 4 Flink jobs,
# took 580 s of one worker at a load average of 8-11; test_s3.py about 2 minutes quiet),
# started first: each file runs whole on one xdist worker (pytest.ini: --dist loadfile), so a
# long module handed out last is the end of the run while the other worker waits. xdist's own
# order (most tests first, --loadscope-reorder) handed test_flink.py out late, and it ended CI
# runs alone.
LONGEST_FIRST = ('test_flink.py', 'test_s3.py')


def pytest_collection_modifyitems(items):
  """Moves the tests of LONGEST_FIRST ahead of the rest, in that order (the rest keep theirs)."""
  def rank(item):
    name = item.path.name
    return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
  items.sort(key=rank)  # stable: each module's tests keep their order


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


@pytest.fixture()
def s3_bucket(monkeypatch):
  """A folder of an S3 bucket on moto's in-process server, reached through Beam's S3
  filesystem: ``s3://claims/out``."""
  moto = pytest.importorskip('moto')
  from moto.server import ThreadedMotoServer  # pylint: disable=import-outside-toplevel
  from tests.servers import free_ports  # pylint: disable=import-outside-toplevel
  port, = free_ports(1)
  server = ThreadedMotoServer(ip_address='127.0.0.1', port=port)
  server.start()
  try:
    for name, value in (('AWS_ENDPOINT_URL_S3', f'http://127.0.0.1:{port}'),
                        ('AWS_ACCESS_KEY_ID', 'testing'), ('AWS_SECRET_ACCESS_KEY', 'testing'),
                        ('AWS_DEFAULT_REGION', 'us-east-1')):
      monkeypatch.setenv(name, value)
    import boto3  # pylint: disable=import-outside-toplevel
    boto3.client('s3').create_bucket(Bucket='claims')
    from apache_beam.io.filesystems import FileSystems  # pylint: disable=import-outside-toplevel
    from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=import-outside-toplevel
    FileSystems.set_options(PipelineOptions([]))
    yield 's3://claims/out'
  finally:
    server.stop()
  del moto


def pytest_terminal_summary(terminalreporter):
  """Says loudly, at the end of the run, how many tests were skipped because ../shared/data
  (the real photos most tests run on) is missing: a pass without them proves little."""
  missing = [report for report in terminalreporter.stats.get('skipped', [])
             if 'tests expect ../shared/data' in str(report.longrepr)]
  if missing:
    terminalreporter.write_sep(
        '!', f'{len(missing)} tests SKIPPED: ../shared/data is missing beside the repo; '
        'they run on its real photos (set CI=true to make each a failure)', red=True, bold=True)
