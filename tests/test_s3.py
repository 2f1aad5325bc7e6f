"""Object storage: the job reads images from one S3 bucket and publishes a dated run to
another, against a real S3-compatible server on loopback (moto's server mode, a child process
stopped by its id at the end). Listing, reads, shard writes, metadata and the publication's
renames all go through Beam's ``FileSystems`` (``apache_beam.io.aws``)."""

import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest

from tests.helpers import REPO, SAMPLES, all_records, convert, manifest_of
from tests.servers import free_ports, spawn, stop, tail, wait_for_port

boto3 = pytest.importorskip('boto3')  # pinned in requirements.txt; absent only in odd set-ups

JOB_TIMEOUT_S = 300
# 8 photos of each class: enough for every shard, few enough to keep the test quick
UPLOADED = [path for name in ('ants', 'bees')
            for path in sorted((SAMPLES / name).glob('*.jpg'))[:8]]
CREDENTIALS = {'aws_access_key_id': 'testing', 'aws_secret_access_key': 'testing',
               'region_name': 'us-east-1'}


@pytest.fixture(scope='module')
def s3(tmp_path_factory):
  """{'endpoint': URL, 'client': boto3 S3 client} of a moto server on a free loopback port."""
  workdir = tmp_path_factory.mktemp('moto')
  port, = free_ports(1)
  log = workdir / 'moto.log'
  server = spawn(['moto.server', '-H', '127.0.0.1', '-p', str(port)], workdir, None, log)
  try:
    wait_for_port(port, server, log)
    endpoint = f'http://127.0.0.1:{port}'
    yield {'endpoint': endpoint, 'log': log,
           'client': boto3.client('s3', endpoint_url=endpoint, **CREDENTIALS)}
  finally:
    stop(server, signal.SIGTERM)


def _download(client, bucket: str, prefix: str, target: pathlib.Path) -> list:
  """Copies every object under ``prefix`` to ``target``; returns their keys."""
  keys = []
  for page in client.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix=prefix):
    for item in page.get('Contents', []):
      path = target / item['Key'][len(prefix):].lstrip('/')
      path.parent.mkdir(parents=True, exist_ok=True)
      client.download_file(bucket, item['Key'], str(path))
      keys.append(item['Key'])
  return sorted(keys)


@pytest.fixture(scope='module')
def converted(s3, tmp_path_factory):
  """16 of the bundled samples uploaded to s3://photos/hymenoptera/, converted with --run_date to
  s3://datasets/hymenoptera/; returns (completed process, local copy of the output root)."""
  client = s3['client']
  client.create_bucket(Bucket='photos')
  client.create_bucket(Bucket='datasets')
  for path in UPLOADED:
    client.upload_file(str(path), 'photos', f'hymenoptera/{path.relative_to(SAMPLES).as_posix()}')
  command = [
      sys.executable, '-m', 'pipeline.run', '--input_dir=s3://photos/hymenoptera',
      '--output_dir=s3://datasets/hymenoptera', '--run_date=2026-11-21',
      '--image_size=64', '--resize_mode=center_crop', '--num_shards=2',
      '--stats=false']  # TensorFlow 2.21 has no s3:// filesystem for tensorflow-transform
  # The endpoint and credentials come from the environment, as boto3 reads them: the local
  # runner's worker processes do not receive the --s3_* pipeline options (see docs/object-storage.md).
  env = dict(os.environ, AWS_ENDPOINT_URL_S3=s3['endpoint'], AWS_ACCESS_KEY_ID='testing',
             AWS_SECRET_ACCESS_KEY='testing', AWS_DEFAULT_REGION='us-east-1')
  try:
    result = subprocess.run(command, capture_output=True, text=True, timeout=JOB_TIMEOUT_S,
                            check=False, env=env)
  except subprocess.TimeoutExpired as error:
    pytest.fail(f'the S3 run took over {JOB_TIMEOUT_S} s:\n{error.stderr}')
  local = tmp_path_factory.mktemp('from_s3')
  _download(client, 'datasets', 'hymenoptera/', local)
  return result, local


@pytest.mark.slow
def test_the_run_is_published_in_the_bucket(converted, s3):
  result, local = converted
  assert result.returncode == 0, f'{result.stderr[-6000:]}\n--- moto:\n{tail(s3["log"])}'
  assert (local / 'LATEST').read_text().strip() == 'dt=2026-11-21'
  run_dir = local / 'dt=2026-11-21'
  assert (run_dir / '_SUCCESS').exists()
  assert sorted(p.name for p in run_dir.glob('*.tfrecord')) == [
      'train-00000-of-00002.tfrecord', 'train-00001-of-00002.tfrecord',
      'validation-00000-of-00002.tfrecord', 'validation-00001-of-00002.tfrecord']
  # nothing left in staging once published
  staged = s3['client'].list_objects_v2(Bucket='datasets', Prefix='hymenoptera/_staging/')
  assert staged.get('KeyCount', 0) == 0
  manifest = manifest_of(run_dir)
  assert manifest['output_dir'] == 's3://datasets/hymenoptera/dt=2026-11-21'
  assert manifest['metrics']['images_read'] == len(UPLOADED)


@pytest.mark.slow
def test_every_image_of_the_bucket_is_read_back_with_the_reader(converted):
  import imagerecords  # pylint: disable=import-outside-toplevel
  _, local = converted
  run_dir = local / 'dt=2026-11-21'
  uploaded = {p.relative_to(SAMPLES).as_posix() for p in UPLOADED}
  records = {r['image/filename'].decode(): r['image/class/text'].decode()
             for _, r in all_records(run_dir)}
  assert set(records) == uploaded
  assert all(name.split('/')[0] == label for name, label in records.items())
  names = imagerecords.class_names(str(run_dir))
  images = 0
  for split in ('train', 'validation'):
    for image, label in imagerecords.load(str(run_dir), split, batch_size=16, image_size=64):
      assert image.shape[1:] == (64, 64, 3)
      assert set(label.numpy()) <= set(range(len(names)))
      images += image.shape[0]
  assert images == len(UPLOADED)
  assert json.loads((run_dir / 'manifest.json').read_text())['num_examples'] == len(UPLOADED)


def _run_through_proxy(s3, tmp_path, output: str, rules) -> subprocess.CompletedProcess:
  """The job from s3://photos/hymenoptera to ``output`` with every S3 request passing through
  the fault-injecting proxy (tests/fault_proxy.py, a child process stopped by its id)."""
  port, = free_ports(1)
  log = tmp_path / 'proxy.log'
  upstream = int(s3['endpoint'].rsplit(':', 1)[1])
  proxy = spawn(['tests.fault_proxy', '--port', str(port), '--upstream', str(upstream),
                 *rules], pathlib.Path(__file__).resolve().parents[1], None, log)
  try:
    wait_for_port(port, proxy, log)
    env = dict(os.environ, AWS_ENDPOINT_URL_S3=f'http://127.0.0.1:{port}',
               AWS_ACCESS_KEY_ID='testing', AWS_SECRET_ACCESS_KEY='testing',
               AWS_DEFAULT_REGION='us-east-1', AWS_MAX_ATTEMPTS='2')
    # in one process: the retries are the reads' own, on any runner; the runner's worker
    # processes and their credentials are the converted fixture's (the default, multi-process)
    command = [sys.executable, '-m', 'pipeline.run', '--input_dir=s3://photos/hymenoptera',
               f'--output_dir={output}', '--run_date=2026-11-21', '--image_size=64',
               '--resize_mode=center_crop', '--num_shards=2', '--stats=false',
               '--direct_running_mode=in_memory']
    result = subprocess.run(command, capture_output=True, text=True, timeout=JOB_TIMEOUT_S,
                            check=False, env=env)
  finally:
    stop(proxy, signal.SIGTERM)
  result.faults = [line for line in log.read_text().splitlines() if line.startswith('fault ')]
  return result


@pytest.mark.slow
def test_resets_and_throttling_on_s3_cost_retries_not_images(converted, s3, tmp_path):
  _, clean = converted
  names = [p.relative_to(SAMPLES).as_posix() for p in UPLOADED]
  rules = [*(f'--reset_first=hymenoptera/{n}' for n in names[::4]),
           *(f'--status_first=503:hymenoptera/{n}' for n in names[1::4])]
  result = _run_through_proxy(s3, tmp_path, 's3://datasets/faulty', rules)
  assert result.returncode == 0, f'{result.stderr[-6000:]}'
  assert len(result.faults) == len(rules)
  local = tmp_path / 'faulty'
  _download(s3['client'], 'datasets', 'faulty/', local)
  manifest = manifest_of(local / 'dt=2026-11-21')
  assert manifest['num_examples'] == len(UPLOADED) and manifest['num_failures'] == 0
  assert (local / 'dt=2026-11-21' / 'failures.jsonl').read_text() == ''
  clean_manifest = manifest_of(clean / 'dt=2026-11-21')
  assert ({s: i['fingerprint'] for s, i in manifest['splits'].items()}
          == {s: i['fingerprint'] for s, i in clean_manifest['splits'].items()})


@pytest.mark.slow
def test_an_object_that_keeps_failing_fails_the_run_without_publishing(s3, tmp_path,
                                                                       monkeypatch):
  """In this process, so that the waits of Beam's own S3 retries (minutes: 7 retries from 5 s,
  with backoff) can be skipped; the same path of the job otherwise."""
  from apache_beam.utils import retry  # pylint: disable=import-outside-toplevel
  from transforms.files import reads  # pylint: disable=import-outside-toplevel
  stuck = UPLOADED[3].relative_to(SAMPLES).as_posix()
  port, = free_ports(1)
  log = tmp_path / 'proxy.log'
  upstream = int(s3['endpoint'].rsplit(':', 1)[1])
  proxy = spawn(['tests.fault_proxy', '--port', str(port), '--upstream', str(upstream),
                 f'--reset_always=hymenoptera/{stuck}'], REPO, None, log)
  try:
    wait_for_port(port, proxy, log)
    for name, value in dict(AWS_ENDPOINT_URL_S3=f'http://127.0.0.1:{port}',
                            AWS_ACCESS_KEY_ID='testing', AWS_SECRET_ACCESS_KEY='testing',
                            AWS_DEFAULT_REGION='us-east-1', AWS_MAX_ATTEMPTS='2').items():
      monkeypatch.setenv(name, value)
    monkeypatch.setattr(retry.Clock, 'sleep', lambda self, seconds: None)
    monkeypatch.setattr(reads, 'FIRST_DELAY_S', 0.01)
    status = convert('s3://photos/hymenoptera', 's3://datasets/stuck', '--run_date=2026-11-21',
                     '--image_size=64', '--num_shards=2')
  finally:
    stop(proxy, signal.SIGTERM)
  assert status == 1
  faults = [line for line in log.read_text().splitlines() if line.startswith('fault ')]
  assert faults and all(stuck in line for line in faults)
  published = s3['client'].list_objects_v2(Bucket='datasets', Prefix='stuck/dt=')
  assert published.get('KeyCount', 0) == 0
  latest = s3['client'].list_objects_v2(Bucket='datasets', Prefix='stuck/LATEST')
  assert latest.get('KeyCount', 0) == 0
