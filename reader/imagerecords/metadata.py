"""What an imagerecords output directory says about itself: classes, splits, counts, shards.

Everything here reads the small metadata files the Beam job writes next to the shards (see
:mod:`imagerecords.contract` for the layout)::

    OUT/
      labels.txt       ->  class_names(OUT)            line i = name of class id i
      manifest.json    ->  num_examples(OUT, split)    counts and the shard list per split
                           shard_files(OUT, split)
      _SUCCESS         ->  require_complete(OUT)       written last; no _SUCCESS, no data

Files are read with ``tf.io.gfile``, so ``OUT`` may be a local path or a ``gs://`` (or any
other TensorFlow file system) URL. Every public function first checks for ``_SUCCESS`` and
raises :class:`IncompleteDatasetError` without it: a directory the job is still writing, or
one whose job failed, holds shards that look fine and are not.

The shard files themselves are checked against the manifest before anything reads them
(:func:`check_shards`, the ``verify_shards`` argument of :func:`shard_files` and
:func:`imagerecords.load`): by default each shard's size (one ``stat`` per shard), on request
its SHA-256 too (one read of every byte); a shard that differs raises
:class:`ShardMismatchError`.
"""

import concurrent.futures
import hashlib
import json
import os
from typing import List, NamedTuple, Optional, Sequence, Union

import tensorflow as tf

from imagerecords import contract
from imagerecords import manifest_schema


class IncompleteDatasetError(FileNotFoundError):
  """An output directory has no ``_SUCCESS`` marker (or no manifest) and must not be read.

  A subclass of ``FileNotFoundError``: the file that says "this data is complete" is missing,
  so code that already handles a missing dataset directory handles this case too.
  """


class ShardMismatchError(ValueError):
  """A shard file is not the one the manifest lists: its size or its SHA-256 differs from what
  the job recorded when it wrote it (the shard was replaced, edited, or damaged since).

  Attributes: ``path`` (the shard's full path), ``field`` (``'bytes'`` or ``'sha256'``, the
  manifest's key that differs), ``expected`` (the manifest's value), ``found`` (the file's),
  and ``reason``, what differs, without the path and the advice on switching the check off.
  """

  def __init__(self, path: str, field: str, expected: Union[int, str], found: Union[int, str],
               others: Sequence[str] = ()):
    self.path, self.field, self.expected, self.found = path, field, expected, found
    if field == 'bytes':
      self.reason = f'it holds {found} bytes, the manifest says {expected}'
    else:
      self.reason = f'its SHA-256 is {found}, the manifest says {expected}'
    self.reason += ' (replaced, edited or damaged since the job wrote it)'
    if others:
      self.reason += ('; 1 more shard differs too: ' if len(others) == 1
                      else f'; {len(others)} more shards differ too: ')
      self.reason += ', '.join(others[:3]) + (' ...' if len(others) > 3 else '')
    super().__init__(f'{path} is not the shard {contract.MANIFEST_FILE} lists: {self.reason}. '
                     'Refusing to read it; convert the data again, or pass verify_shards=False '
                     'to read the shards as they are.')


def require_complete(data_dir: str) -> None:
  """Raises :class:`IncompleteDatasetError` unless ``data_dir`` holds a ``_SUCCESS`` marker.

  The Beam job writes ``_SUCCESS`` after every shard, ``labels.txt`` and ``manifest.json``;
  its absence means the job is still running, failed, or ``data_dir`` is not an output
  directory at all. The message names the directory and the marker file.
  """
  marker = _join(data_dir, contract.SUCCESS_FILE)
  if not tf.io.gfile.exists(marker):
    raise IncompleteDatasetError(
        f'{data_dir!r} is not a complete imagerecords output directory: '
        f'{contract.SUCCESS_FILE!r} is missing (the job that writes it is still running, '
        f'failed, or this is the wrong directory). Refusing to read it.')


def read_manifest(data_dir: str) -> manifest_schema.Manifest:
  """The parsed ``manifest.json`` of a complete output directory.

  Raises:
    IncompleteDatasetError: ``_SUCCESS`` or ``manifest.json`` is missing.
    ValueError: ``manifest.json`` is not a manifest (not JSON, or a split without counts).
  """
  require_complete(data_dir)
  path = _join(data_dir, contract.MANIFEST_FILE)
  if not tf.io.gfile.exists(path):
    raise IncompleteDatasetError(
        f'{data_dir!r} has {contract.SUCCESS_FILE!r} but no {contract.MANIFEST_FILE!r}; '
        'it was not written by imagerecords, or was copied only in part.')
  with tf.io.gfile.GFile(path, 'r') as f:
    return manifest_schema.Manifest.from_json(json.load(f))


def split_names(data_dir: str) -> List[str]:
  """The names of the splits in ``data_dir``'s manifest, sorted (e.g. ``['train', 'validation']``).

  Raises:
    IncompleteDatasetError: ``_SUCCESS`` or ``manifest.json`` is missing.
  """
  return sorted(read_manifest(data_dir).splits)


def class_names(data_dir: str) -> List[str]:
  """The class names from ``labels.txt``: element ``i`` is the name of class id ``i``.

  Class ids are the 0-based ``image/class/label`` values of the records and the integer labels
  :func:`imagerecords.load` yields. Empty for an unlabeled dataset.

  Raises:
    IncompleteDatasetError: ``_SUCCESS`` is missing.
  """
  require_complete(data_dir)
  with tf.io.gfile.GFile(_join(data_dir, contract.LABELS_FILE), 'r') as f:
    return f.read().splitlines()


def num_examples(data_dir: str, split: str) -> int:
  """The number of examples (records) in ``split``, from the manifest.

  This is the number of images one evaluation epoch of :func:`imagerecords.load` yields; use
  it for ``steps_per_epoch`` arithmetic, e.g. ``num_examples(d, 'train') // batch_size``.

  Raises:
    IncompleteDatasetError: ``_SUCCESS`` or ``manifest.json`` is missing.
    ValueError: ``split`` is not in the manifest; the message lists the splits that are.
  """
  return int(_split_info(read_manifest(data_dir), data_dir, split).num_examples)


def shard_files(data_dir: str, split: str, verify_shards: Union[bool, str] = True) -> List[str]:
  """The full paths of ``split``'s shard files, sorted by name (that is, by shard index).

  Taken from the manifest's shard list rather than from a glob, so a stray file in the
  directory is never read. Names end in ``.tfrecord`` or, GZIP-compressed, ``.tfrecord.gz``.
  The files are checked first as ``verify_shards`` says (:func:`check_shards`: True, the
  default, their sizes; ``'sha256'`` their digests too; False nothing).

  Raises:
    IncompleteDatasetError: ``_SUCCESS`` or ``manifest.json`` is missing, or (checked) a shard
      file the manifest lists is missing.
    ValueError: ``split`` is not in the manifest; the message lists the splits that are.
    ShardMismatchError: (checked) a shard's size or SHA-256 is not the manifest's.
  """
  shards = split_shards(read_manifest(data_dir), data_dir, split)
  check_shards(shards, verify_shards)
  return [shard.path for shard in shards]


class Shard(NamedTuple):
  """One shard file of a split, as the manifest lists it: full path, record count, size in
  bytes and hex SHA-256 of the file as stored (each None where the manifest lacks it)."""
  path: str
  num_examples: Optional[int]
  bytes: Optional[int] = None
  sha256: Optional[str] = None


def split_shards(manifest: manifest_schema.Manifest, data_dir: str, split: str) -> List[Shard]:
  """The shards of ``split`` listed in ``manifest`` (from :func:`read_manifest`), sorted by path.

  Raises:
    ValueError: ``split`` is not in the manifest; the message lists the splits that are.
  """
  return sorted(Shard(_join(data_dir, entry.file), entry.num_examples, entry.bytes, entry.sha256)
                for entry in _split_info(manifest, data_dir, split).shards)


VERIFY_SHARDS = (True, 'sha256', False)
"""The values of ``verify_shards``: True (the default) checks every shard's size against the
manifest's ``bytes``, ``'sha256'`` also its SHA-256 against the manifest's ``sha256``, False
checks nothing (for shards edited on purpose)."""

_STAT_THREADS = 32  # stats in flight at once: each is one request on gs:// (tens of ms)
_DIGEST_THREADS = 4  # shards read and hashed at once (SHA-256 and file reads free the GIL)
_READ_BYTES = 1 << 20  # tf.io.gfile reads of 1 MiB: 1.4-3.3 GiB/s here; of 2 MiB+: 0.1-0.2


def check_shards(shards: Sequence[Shard], verify_shards: Union[bool, str] = True) -> None:
  """Checks that each shard file is the one the manifest lists, as ``verify_shards`` says.

  * True: every shard's size (one ``tf.io.gfile.stat`` each, run 32 at a time: a few
    milliseconds for hundreds of local shards, one metadata request each on ``gs://``)
    equals the manifest's ``bytes``. Catches a shard replaced by another data set's, a
    truncated or appended one; not an edit that keeps the size (a byte flipped, the same photos
    written with other labels).
  * ``'sha256'``: the sizes, then the SHA-256 of every byte of every shard (``tf.io.gfile``
    reads, 4 shards at a time) equals the manifest's ``sha256``: one full read of the split
    before training starts (the numbers are in ``docs/reader.md``). Catches any change.
  * False: nothing.

  A shard whose manifest entry lacks ``bytes`` (the store gave no size) is not size-checked.

  Raises:
    ValueError: ``verify_shards`` is none of :data:`VERIFY_SHARDS`; or ``'sha256'`` and the
      manifest records no digest for a shard (written by a job older than per-shard digests).
    IncompleteDatasetError: a shard file the manifest lists is missing.
    ShardMismatchError: a shard's size or digest differs from the manifest's; it names the
      first such shard (by name) with both values, and how many others differ.
  """
  if verify_shards is False:
    return
  if verify_shards is not True and verify_shards != 'sha256':
    raise ValueError(f'verify_shards must be one of {VERIFY_SHARDS}, got {verify_shards!r}.')
  with concurrent.futures.ThreadPoolExecutor(_STAT_THREADS) as pool:
    sizes = list(pool.map(_size, shards))
  _raise_first_mismatch([(shard, 'bytes', shard.bytes, size)
                         for shard, size in zip(shards, sizes)
                         if shard.bytes is not None and size != shard.bytes])
  if verify_shards != 'sha256':
    return
  undigested = [shard.path for shard in shards if shard.sha256 is None]
  if undigested:
    raise ValueError(
        f'{contract.MANIFEST_FILE} records no SHA-256 for {undigested[0]}'
        + (f' and {len(undigested) - 1} more shards' if len(undigested) > 1 else '')
        + ": it was written by a job older than the manifest's per-shard digests, so "
        "verify_shards='sha256' cannot check it; verify_shards=True checks the sizes.")
  with concurrent.futures.ThreadPoolExecutor(_DIGEST_THREADS) as pool:
    digests = list(pool.map(lambda shard: file_sha256(shard.path), shards))
  _raise_first_mismatch([(shard, 'sha256', shard.sha256, digest)
                         for shard, digest in zip(shards, digests) if digest != shard.sha256])


def file_sha256(path: str) -> str:
  """The hex SHA-256 digest of every byte of the file ``path`` (read with ``tf.io.gfile``, 1 MiB
  at a time): what the manifest's per-shard ``sha256`` records."""
  digest = hashlib.sha256()
  with tf.io.gfile.GFile(path, 'rb') as f:
    while True:
      block = f.read(_READ_BYTES)
      if not block:
        return digest.hexdigest()
      digest.update(block)


def _size(shard: Shard) -> int:
  """The size of a shard file in bytes; IncompleteDatasetError naming it when it is missing."""
  try:
    return tf.io.gfile.stat(shard.path).length
  except tf.errors.NotFoundError:
    raise IncompleteDatasetError(
        f'{shard.path} is missing: {contract.MANIFEST_FILE} lists it, so the directory was '
        'copied only in part, or the shard deleted since. Refusing to read the split.') from None


def _raise_first_mismatch(mismatches) -> None:
  """Raises ShardMismatchError for the first of ``mismatches`` ((shard, field, expected,
  found), in shard order), naming how many others there are; nothing when there are none."""
  if mismatches:
    shard, field, expected, found = mismatches[0]
    raise ShardMismatchError(shard.path, field, expected, found,
                             [os.path.basename(other.path) for other, *_ in mismatches[1:]])


def latest_run(root: str) -> str:
  """The newest published run of a nightly job (``--run_date``) under ``root``:
  ``root/<the name in root/LATEST>``, e.g. ``gs://datasets/flowers/dt=2026-11-21``.

  Raises:
    IncompleteDatasetError: ``root/LATEST`` is missing (no run was published yet), or the run
      it names has no ``_SUCCESS``.
  """
  pointer = _join(root, contract.LATEST_FILE)
  if not tf.io.gfile.exists(pointer):
    raise IncompleteDatasetError(
        f'{root!r} has no {contract.LATEST_FILE!r}: no nightly run was published there yet.')
  with tf.io.gfile.GFile(pointer, 'r') as f:
    run_dir = _join(root, f.read().strip())
  require_complete(run_dir)
  return run_dir


def _split_info(manifest: manifest_schema.Manifest, data_dir: str,
                split: str) -> manifest_schema.SplitEntry:
  """The manifest entry of ``split``; a ValueError naming the available splits if absent."""
  splits = manifest.splits
  if split not in splits:
    raise ValueError(
        f'Unknown split {split!r} in {data_dir!r}; available splits: {sorted(splits)}.')
  return splits[split]


def _join(data_dir: str, name: str) -> str:
  """``data_dir/name``, for local paths and file-system URLs (``gs://bucket/dir``) alike."""
  return tf.io.gfile.join(data_dir, name)
