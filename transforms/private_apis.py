"""Every use of an interface that Beam or argparse does not make public, in one place.

Each may change in any release of its library, so each lives here, behind a name of ours, and
``tests/test_private_apis.py`` checks each one against the installed version: an upgrade that
breaks one fails that test, which names it, not a run somewhere in the job.

- :func:`s3_client`: the boto3 client of Beam's S3 filesystem, configured by the S3 pipeline
  options (endpoint, credentials). Beam offers no public way to reach it, and the job needs it
  for what Beam's ``FileSystems`` cannot do on S3: a conditional write (``If-None-Match``) and
  an empty object (Beam 2.77's multipart writer refuses zero bytes).
- :func:`gcs_client`: the ``google.cloud.storage`` client of Beam's GCS filesystem, for the
  conditional write there (``if_generation_match``).
- :func:`share_s3_clients`: one boto3 client per process and configuration for Beam's S3
  filesystem, which otherwise builds a new boto3 session and client for every call (every
  open, exists, size, rename: about 76 ms of CPU each, docs/object-storage.md).
- :func:`parser_actions`: the ``argparse.Action`` of each option a parser declares (argparse
  keeps them in ``_actions``), from which the job's docs, template metadata and flag checks are
  made.
- :func:`declare_options`: a ``PipelineOptions`` subclass's flags added to a parser of our own
  (Beam calls ``_add_argparse_args`` itself; the job calls it to list its own flags apart from
  Beam's).
"""

import argparse
import os
import threading
from typing import Any, Dict, List, Tuple, Type

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions


def s3_client(path: str):
  """The boto3 S3 client of the Beam filesystem that serves ``path`` (``s3://...``), with the
  endpoint and credentials of the pipeline options given to ``FileSystems.set_options``.

  Raises:
    ValueError: ``path`` is not on a filesystem Beam knows.
    ImportError: Beam's ``aws`` extra (boto3) is not installed.
  """
  from apache_beam.io.aws import s3io  # pylint: disable=import-outside-toplevel
  filesystem = FileSystems.get_filesystem(path)
  options = filesystem._options  # pylint: disable=protected-access
  return s3io.S3IO(options=options).client.client


class _SharedClients:
  """What Beam's S3 wrapper (``apache_beam.io.aws.clients.s3.boto3_client``) takes for the
  ``boto3`` module: ``boto3.session.Session()`` gives an object whose ``client(**kwargs)``
  returns the one boto3 client of those arguments and of the ``AWS_*`` environment variables
  (which botocore reads when it makes a client: endpoint, credentials, retries) in this
  process, made on first use from a session of its own. boto3's low-level clients are
  thread-safe, its sessions are not: hence a new session per client made, under a lock, and no
  session shared."""

  def __init__(self, boto3_module):
    self._boto3 = boto3_module
    self._lock = threading.Lock()
    self._clients: Dict[Tuple[Any, ...], Any] = {}
    self.session = self  # boto3.session.Session() -> self.Session()

  def Session(self):  # pylint: disable=invalid-name  (boto3's name)
    return self

  def client(self, **kwargs):
    # the key: Beam's arguments and the environment botocore would read for a new client
    key = (tuple(sorted(kwargs.items())),
           tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith('AWS_'))))
    with self._lock:
      client = self._clients.get(key)
      if client is None:
        client = self._clients[key] = self._boto3.session.Session().client(**kwargs)
    return client


def share_s3_clients() -> None:
  """Makes Beam's S3 filesystem reuse one boto3 client per configuration in this process.

  Beam 2.77's ``S3FileSystem`` makes an ``S3IO`` for each call, and each ``S3IO`` a new boto3
  session and client (``boto3_client.Client.__init__``): about 76 ms of CPU per call on this
  machine, against under 1 ms for Beam's wrapper around a client reused, so each image read
  from ``s3://`` cost more than its conversion. Idempotent; a no-op without boto3. Called when
  ``transforms.files`` is imported, so that the launcher and every worker process that touches
  a file has it.
  """
  try:
    from apache_beam.io.aws.clients.s3 import boto3_client  # pylint: disable=import-outside-toplevel
  except ImportError:  # Beam without its aws extra: no S3 filesystem to share clients for
    return
  module = getattr(boto3_client, 'boto3', None)
  if module is None or isinstance(module, _SharedClients):
    return
  boto3_client.boto3 = _SharedClients(module)


def gcs_client(path: str):
  """The ``google.cloud.storage.Client`` of the Beam filesystem that serves ``path``
  (``gs://...``): the pipeline options' credentials, or anonymous without any.

  Raises:
    ValueError: ``path`` is not on a filesystem Beam knows.
  """
  filesystem = FileSystems.get_filesystem(path)
  return filesystem._gcsIO().client  # pylint: disable=protected-access


def parser_actions(parser: argparse.ArgumentParser) -> List[argparse.Action]:
  """The parser's actions, one per declared option (``--help`` too unless ``add_help=False``),
  in declaration order."""
  return list(parser._actions)  # pylint: disable=protected-access


def declare_options(options_class: Type[PipelineOptions], parser):
  """Adds ``options_class``'s own flags (its ``_add_argparse_args``) to ``parser`` (an
  ``argparse.ArgumentParser`` or one of its argument groups); returns ``parser``."""
  options_class._add_argparse_args(parser)  # pylint: disable=protected-access
  return parser
