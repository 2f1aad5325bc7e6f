"""Test helpers: where the real photos are, running the job, reading its records back."""

import json
import os
import pathlib
from typing import Dict, Iterator, List, Tuple

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLES = REPO / 'samples' / 'hymenoptera'
SHARED_DATA = REPO.parent / 'shared' / 'data'

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def shared_data(name: str) -> pathlib.Path:
  """A data set of ../shared/data. In CI (CI=true) a missing one fails the test loudly;
  elsewhere the test is skipped with the reason."""
  path = SHARED_DATA / name
  if not path.exists():
    message = f'{path} is missing: the tests expect ../shared/data beside the repo'
    if os.environ.get('CI'):
      pytest.fail(message)
    pytest.skip(message)
  return path


def convert(input_dir, output_dir, *flags: str, in_memory: bool = True) -> int:
  """Runs the job in this process; returns its exit status.

  ``in_memory`` runs the FnApiRunner in one process (faster to start in tests); the default of
  the job itself, multi-process, is exercised by the sample fixture and the README command.
  The statistics are off unless ``flags`` name ``--stats`` (``--stats`` for the default Beam
  combiners, ``--stats=tft`` for the tensorflow-transform analysis, about 15 s of CPU per
  run); the sample fixture runs the default, as the job does.
  """
  from pipeline.run import run  # pylint: disable=import-outside-toplevel
  argv = [f'--input_dir={input_dir}', f'--output_dir={output_dir}', *flags]
  if not any(flag.startswith('--stats') for flag in flags):
    argv.append('--stats=false')
  if in_memory:
    argv.append('--direct_running_mode=in_memory')
  return run(argv)


def read_records(output_dir, split: str) -> Dict[str, List[dict]]:
  """Every record of a split, parsed with TensorFlow, grouped by shard file name.

  Each record is a dict of the contract's keys to Python values (bytes, int).
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  manifest = manifest_of(output_dir)
  shards = {}
  for shard in manifest['splits'][split]['shards']:
    path = str(pathlib.Path(output_dir) / shard['file'])
    records = []
    for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
      feature = tf.train.Example.FromString(raw).features.feature
      record = {}
      for key, value in feature.items():
        kind = value.WhichOneof('kind')
        record[key] = list(getattr(value, kind).value)[0]
      records.append(record)
    shards[shard['file']] = records
  return shards


def all_records(output_dir) -> Iterator[Tuple[str, dict]]:
  """(split, record) for every record of every split in the manifest (see read_records)."""
  for split in manifest_of(output_dir)['splits']:
    for records in read_records(output_dir, split).values():
      for record in records:
        yield split, record


def filename_splits(output_dir) -> Dict[str, str]:
  """image/filename -> split, over every record of the output."""
  return {record['image/filename'].decode(): split for split, record in all_records(output_dir)}


def manifest_of(output_dir) -> dict:
  """The output's manifest.json."""
  return json.loads((pathlib.Path(output_dir) / 'manifest.json').read_text())
