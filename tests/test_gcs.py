"""Google Cloud Storage: the job reads images from one bucket and publishes a dated run to
another, against a GCS-compatible server on loopback (gcp-storage-emulator, a child process
stopped by its id at the end), through Beam's ``FileSystems`` (``apache_beam.io.gcp``) and the
google-cloud-storage client that Beam's GCS filesystem makes, which honours
``STORAGE_EMULATOR_HOST``.

The emulator keeps no object generations and ignores preconditions, so what these tests cover
is listing, reads, shard writes, metadata and publication on ``gs://``; the conditional writes
of run claims and ``LATEST`` (``transforms.files.conditional``) are a first write here, whatever
their condition."""

import json
import pathlib
import signal

import pytest

from tests.golden import output_digest
from tests.helpers import convert, copy_photos
from tests.servers import free_ports, spawn, stop, wait_for_port

storage = pytest.importorskip('google.cloud.storage')  # Beam's gcp extra, in requirements.txt

PER_CLASS = 8  # photos of each class of the samples: every shard gets some, the test stays quick


@pytest.fixture(scope='module')
def gcs(tmp_path_factory):
  """The endpoint (``http://127.0.0.1:PORT``) of an in-memory gcp-storage-emulator."""
  workdir = tmp_path_factory.mktemp('gcs')
  port, = free_ports(1)
  log = workdir / 'emulator.log'
  server = spawn(['gcp_storage_emulator', 'start', '--host=127.0.0.1', f'--port={port}',
                  '--in-memory'], workdir, None, log)
  try:
    wait_for_port(port, server, log)
    yield f'http://127.0.0.1:{port}'
  finally:
    stop(server, signal.SIGTERM)


@pytest.fixture
def on_gcs(gcs, monkeypatch):
  """A storage client of the emulator; this process's GCS clients (Beam's too) use it, and
  Beam looks for no credentials (it would retry for 20 s before it goes anonymous)."""
  from apache_beam.internal.gcp import auth  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv('STORAGE_EMULATOR_HOST', gcs)
  monkeypatch.setattr(auth, 'get_service_credentials', lambda *args, **kwargs: None)
  client = storage.Client.create_anonymous_client()
  client.project = 'imagerecords-test'
  return client


def _download(client, bucket: str, prefix: str, target: pathlib.Path) -> list:
  """Copies every object under ``prefix`` to ``target``; returns their names."""
  names = []
  for blob in client.list_blobs(bucket, prefix=prefix):
    path = target / blob.name[len(prefix):].lstrip('/')
    path.parent.mkdir(parents=True, exist_ok=True)
    blob.download_to_filename(str(path))
    names.append(blob.name)
  return sorted(names)


@pytest.mark.slow
def test_a_dated_run_from_one_bucket_to_another_publishes_the_local_runs_records(
    on_gcs, tmp_path):
  photos = copy_photos(tmp_path / 'photos', per_folder=PER_CLASS)
  for bucket in ('photos', 'datasets'):
    on_gcs.create_bucket(bucket)
  uploaded = sorted(path.relative_to(photos).as_posix() for path in photos.rglob('*.jpg'))
  for name in uploaded:
    on_gcs.bucket('photos').blob(f'hymenoptera/{name}').upload_from_filename(
        str(photos / name))
  flags = ('--run_date=2026-12-07', '--image_size=64', '--num_shards=2')
  assert convert('gs://photos/hymenoptera', 'gs://datasets/hymenoptera', *flags) == 0
  assert convert(photos, tmp_path / 'local', *flags) == 0

  local = tmp_path / 'from_gcs'
  names = _download(on_gcs, 'datasets', 'hymenoptera/', local)
  assert (local / 'LATEST').read_text().strip() == 'dt=2026-12-07'
  run_dir = local / 'dt=2026-12-07'
  assert (run_dir / '_SUCCESS').is_file()
  assert not [name for name in names if '/_staging/' in name]  # nothing left once published
  manifest = json.loads((run_dir / 'manifest.json').read_text())
  assert manifest['output_dir'] == 'gs://datasets/hymenoptera/dt=2026-12-07'
  assert manifest['num_examples'] == len(uploaded) == 2 * PER_CLASS
  assert sorted(p.name for p in run_dir.glob('*.tfrecord')) == [
      'train-00000-of-00002.tfrecord', 'train-00001-of-00002.tfrecord',
      'validation-00000-of-00002.tfrecord', 'validation-00001-of-00002.tfrecord']
  # the records, labels, splits, statistics and reports of the same photos converted on disk
  digest = output_digest(run_dir, 'gs://photos/hymenoptera')
  expected = output_digest(tmp_path / 'local' / 'dt=2026-12-07', str(photos))
  assert digest == expected
