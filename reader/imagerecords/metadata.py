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
"""

import json
from typing import List, NamedTuple, Optional

import tensorflow as tf

from imagerecords import contract


class IncompleteDatasetError(FileNotFoundError):
  """An output directory has no ``_SUCCESS`` marker (or no manifest) and must not be read.

  A subclass of ``FileNotFoundError``: the file that says "this data is complete" is missing,
  so code that already handles a missing dataset directory handles this case too.
  """


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


def read_manifest(data_dir: str) -> contract.Manifest:
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
    return contract.Manifest.from_json(json.load(f))


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


def shard_files(data_dir: str, split: str) -> List[str]:
  """The full paths of ``split``'s shard files, sorted by name (that is, by shard index).

  Taken from the manifest's shard list rather than from a glob, so a stray file in the
  directory is never read. Names end in ``.tfrecord`` or, GZIP-compressed, ``.tfrecord.gz``.

  Raises:
    IncompleteDatasetError: ``_SUCCESS`` or ``manifest.json`` is missing.
    ValueError: ``split`` is not in the manifest; the message lists the splits that are.
  """
  return [shard.path for shard in split_shards(read_manifest(data_dir), data_dir, split)]


class Shard(NamedTuple):
  """One shard file of a split: full path, and its record count (None if the manifest lacks it)."""
  path: str
  num_examples: Optional[int]


def split_shards(manifest: contract.Manifest, data_dir: str, split: str) -> List[Shard]:
  """The shards of ``split`` listed in ``manifest`` (from :func:`read_manifest`), sorted by path.

  Raises:
    ValueError: ``split`` is not in the manifest; the message lists the splits that are.
  """
  return sorted(Shard(_join(data_dir, entry.file), entry.num_examples)
                for entry in _split_info(manifest, data_dir, split).shards)


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


def _split_info(manifest: contract.Manifest, data_dir: str, split: str) -> contract.SplitEntry:
  """The manifest entry of ``split``; a ValueError naming the available splits if absent."""
  splits = manifest.splits
  if split not in splits:
    raise ValueError(
        f'Unknown split {split!r} in {data_dir!r}; available splits: {sorted(splits)}.')
  return splits[split]


def _join(data_dir: str, name: str) -> str:
  """``data_dir/name``, for local paths and file-system URLs (``gs://bucket/dir``) alike."""
  return tf.io.gfile.join(data_dir, name)
