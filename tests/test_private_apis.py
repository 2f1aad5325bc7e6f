"""Each interface the job takes from Beam or argparse without its library making it public
(``transforms/private_apis.py``), checked against the installed versions: an upgrade that
changes one fails here, by name."""

import argparse

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import options as opts
from transforms import private_apis


def test_the_s3_client_is_the_one_the_s3_options_configure():
  FileSystems.set_options(PipelineOptions([
      '--s3_endpoint_url=http://127.0.0.1:9', '--s3_access_key_id=id',
      '--s3_secret_access_key=secret', '--s3_region_name=eu-west-1']))
  try:
    client = private_apis.s3_client('s3://bucket/key')
    assert client.meta.endpoint_url == 'http://127.0.0.1:9'
    assert client.meta.region_name == 'eu-west-1'
    assert callable(client.put_object) and callable(client.get_object)
  finally:
    FileSystems.set_options(PipelineOptions([]))


def test_beams_s3_filesystem_reuses_one_boto3_client_per_configuration():
  """Beam's S3 filesystem builds an S3IO, and so a boto3 client, per call; importing
  ``transforms.files`` makes every call of one configuration share a client (and thereby its
  connection pool), and another configuration get its own."""
  import transforms.files  # pylint: disable=import-outside-toplevel,unused-import
  from apache_beam.io.aws import s3io  # pylint: disable=import-outside-toplevel

  def options(endpoint):
    return PipelineOptions([f'--s3_endpoint_url={endpoint}', '--s3_access_key_id=id',
                            '--s3_secret_access_key=secret', '--s3_region_name=eu-west-1'])

  first, second = (s3io.S3IO(options=options('http://127.0.0.1:9')).client for _ in range(2))
  assert first is not second  # Beam's wrapper keeps per-read state: one per call, as before
  assert first.client is second.client
  other = s3io.S3IO(options=options('http://127.0.0.1:10')).client.client
  assert other is not first.client and other.meta.endpoint_url == 'http://127.0.0.1:10'
  private_apis.share_s3_clients()  # a second call changes nothing
  assert s3io.S3IO(options=options('http://127.0.0.1:9')).client.client is first.client


def test_a_changed_aws_environment_gets_a_client_of_its_own(monkeypatch):
  """botocore reads AWS_* variables (endpoint, credentials, retries) when it makes a client,
  so a client made before they changed is not the one asked for after."""
  import transforms.files  # pylint: disable=import-outside-toplevel,unused-import
  from apache_beam.io.aws import s3io  # pylint: disable=import-outside-toplevel
  monkeypatch.setenv('AWS_ACCESS_KEY_ID', 'id')
  monkeypatch.setenv('AWS_SECRET_ACCESS_KEY', 'secret')
  monkeypatch.setenv('AWS_DEFAULT_REGION', 'us-east-1')
  monkeypatch.setenv('AWS_ENDPOINT_URL_S3', 'http://127.0.0.1:11')
  before = s3io.S3IO(options=PipelineOptions([])).client.client
  assert s3io.S3IO(options=PipelineOptions([])).client.client is before
  monkeypatch.setenv('AWS_ENDPOINT_URL_S3', 'http://127.0.0.1:12')
  after = s3io.S3IO(options=PipelineOptions([])).client.client
  assert after is not before and after.meta.endpoint_url == 'http://127.0.0.1:12'


def test_the_gcs_client_is_a_storage_client_anonymous_without_credentials(monkeypatch):
  from apache_beam.internal.gcp import auth  # pylint: disable=import-outside-toplevel
  from google.cloud import storage  # pylint: disable=import-outside-toplevel
  # no credentials here: Beam would look for them 5 times (20 s) before it goes anonymous
  monkeypatch.setattr(auth, 'get_service_credentials', lambda *args, **kwargs: None)
  client = private_apis.gcs_client('gs://bucket/key')
  assert isinstance(client, storage.Client)
  assert client.bucket('bucket').blob('key').name == 'key'


def test_the_parser_actions_are_the_declared_options_in_order():
  parser = private_apis.declare_options(opts.ConvertOptions,
                                        argparse.ArgumentParser(add_help=False))
  actions = private_apis.parser_actions(parser)
  assert [action.dest for action in actions][:2] == ['input_dir', 'output_dir']
  assert all(isinstance(action, argparse.Action) for action in actions)
  switches = {action.option_strings[0] for action in actions if opts.is_switch(action)}
  assert {'--overwrite', '--full_rebuild', '--strict_labels'} <= switches
  group = argparse.ArgumentParser().add_argument_group('job')
  assert private_apis.declare_options(opts.ConvertOptions, group) is group
