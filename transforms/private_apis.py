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
- :func:`parser_actions`: the ``argparse.Action`` of each option a parser declares (argparse
  keeps them in ``_actions``), from which the job's docs, template metadata and flag checks are
  made.
- :func:`declare_options`: a ``PipelineOptions`` subclass's flags added to a parser of our own
  (Beam calls ``_add_argparse_args`` itself; the job calls it to list its own flags apart from
  Beam's).
"""

import argparse
from typing import List, Type

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
