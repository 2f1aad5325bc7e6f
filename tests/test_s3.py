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

from tests.helpers import SAMPLES, all_records, manifest_of
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
  # runner's worker processes do not receive the --s3_* pipeline options (see README).
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
