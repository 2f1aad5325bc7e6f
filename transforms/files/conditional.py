"""Conditional writes of small objects on object stores: write only if the object is still
the version that was read (compare-and-swap), or only if there is none (exclusive create).

    text, version = read_versioned('s3://b/root/LATEST')     # (None, None): no such object
    write_if_version('s3://b/root/LATEST', 'dt=2026-11-21\\n', version)  # False: it changed

The one primitive behind run claims (``transforms.outputs.claim``: create a claim only if the
name is free) and ``LATEST`` (``transforms.outputs.publish``: move it only forward), per store:

* ``s3://``: ``PutObject`` with ``If-Match: <ETag read>`` (or ``If-None-Match: *`` for no
  object): S3 conditional writes (August and November 2024), through the client Beam's S3
  filesystem configured. An S3-compatible server that ignores the headers makes every write
  unconditional;
* ``gs://``: an upload with ``ifGenerationMatch=<generation read>`` (0 for no object) through
  the google-cloud-storage client of Beam's GCS filesystem (Beam's ``FileSystems`` exposes no
  precondition). The tests' GCS server (gcp-storage-emulator, ``tests/test_gcs.py``) keeps no
  generations and ignores preconditions, so this path is not exercised by them.

Local disk has no version to compare; its callers lock instead (``fcntl.flock``, see
``transforms.outputs.publish.point_latest``, or create with a hard link, see ``claim``).
"""

from typing import Optional, Tuple

from apache_beam.io.filesystems import FileSystems

from transforms import private_apis

SCHEMES = ('s3', 'gs')
"""The filesystems with conditional writes here."""


def has_conditional_writes(path: str) -> bool:
  """True when ``path`` is on a store this module writes conditionally (``SCHEMES``)."""
  return FileSystems.get_scheme(path) in SCHEMES


def _s3_client(path: str):
  """(boto3 S3 client of Beam's configured S3 filesystem, bucket, key) of ``path``."""
  bucket, key = path[len('s3://'):].split('/', 1)
  return private_apis.s3_client(path), bucket, key


def _gcs_blob(path: str):
  """The google-cloud-storage ``Blob`` of ``path``, through Beam's GCS filesystem's client."""
  bucket, name = path[len('gs://'):].split('/', 1)
  return private_apis.gcs_client(path).bucket(bucket).blob(name)


def read_versioned(path: str) -> Tuple[Optional[str], Optional[str]]:
  """(UTF-8 text, version) of the object ``path``: the version is S3's ETag or GCS's
  generation, as text; (None, None) when there is no such object.

  Raises:
    ValueError: ``path`` is not on ``s3://`` or ``gs://``.
    botocore.exceptions.ClientError, google.api_core.exceptions.GoogleAPIError: any other
      refusal (credentials, bucket).
  """
  scheme = FileSystems.get_scheme(path)
  if scheme == 's3':
    from botocore.exceptions import ClientError  # pylint: disable=import-outside-toplevel
    client, bucket, key = _s3_client(path)
    try:
      answer = client.get_object(Bucket=bucket, Key=key)
    except ClientError as error:
      if str(error.response.get('Error', {}).get('Code')) in ('NoSuchKey', '404'):
        return None, None
      raise
    return answer['Body'].read().decode('utf-8'), answer['ETag']
  if scheme == 'gs':
    from google.api_core import exceptions  # pylint: disable=import-outside-toplevel
    blob = _gcs_blob(path)
    try:
      blob.reload()
    except exceptions.NotFound:
      return None, None
    try:  # the bytes of exactly the generation reload() saw
      data = blob.download_as_bytes(if_generation_match=blob.generation)
    except (exceptions.NotFound, exceptions.PreconditionFailed):  # changed meanwhile: again
      return read_versioned(path)
    return data.decode('utf-8'), str(blob.generation)
  raise ValueError(f'{path}: no versioned reads on {scheme or "local disk"}')


def write_if_version(path: str, text: str, version: Optional[str],
                     content_type: str = 'text/plain') -> bool:
  """Writes ``text`` (UTF-8) to the object ``path`` only if it is still at ``version`` (from
  :func:`read_versioned`), or, with ``version`` None, only if there is no such object. True
  when written; False when the store refused because another writer came first (S3: 412
  Precondition Failed, or 409 for a racing conditional write; GCS: 412).

  Raises:
    ValueError: ``path`` is not on ``s3://`` or ``gs://``.
    botocore.exceptions.ClientError, google.api_core.exceptions.GoogleAPIError: any other
      refusal (credentials, bucket).
  """
  scheme = FileSystems.get_scheme(path)
  if scheme == 's3':
    from botocore.exceptions import ClientError  # pylint: disable=import-outside-toplevel
    client, bucket, key = _s3_client(path)
    condition = {'IfNoneMatch': '*'} if version is None else {'IfMatch': version}
    try:
      client.put_object(Bucket=bucket, Key=key, Body=text.encode('utf-8'),
                        ContentType=content_type, **condition)
    except ClientError as error:
      code = str(error.response.get('Error', {}).get('Code'))
      if code in ('PreconditionFailed', '412', 'ConditionalRequestConflict', '409'):
        return False
      raise
    return True
  if scheme == 'gs':
    from google.api_core import exceptions  # pylint: disable=import-outside-toplevel
    try:
      _gcs_blob(path).upload_from_string(
          text.encode('utf-8'), content_type=content_type,
          if_generation_match=0 if version is None else int(version))
    except exceptions.PreconditionFailed:
      return False
    return True
  raise ValueError(f'{path}: no conditional writes on {scheme or "local disk"}')
