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
