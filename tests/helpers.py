"""Test helpers: where the real photos are, running the job, reading its records back."""

import io
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


def copy_photos(dest: pathlib.Path, per_folder: int, source: pathlib.Path = SAMPLES,
                folders=('ants', 'bees')) -> pathlib.Path:
  """Copies the first ``per_folder`` photos (``*.jpg``, by name) of each of ``source``'s
  ``folders`` (which may be paths such as ``train/ants``) into the same folders under
  ``dest``, and returns ``dest``: the real-photo input most tests convert."""
  for folder in folders:
    (dest / folder).mkdir(parents=True, exist_ok=True)
    for path in sorted((source / folder).glob('*.jpg'))[:per_folder]:
      (dest / folder / path.name).write_bytes(path.read_bytes())
  return dest


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


def many_scan_jpeg(photo, scans: int) -> bytes:
  """A progressive JPEG of ``scans`` scans made of a real photo (issue 22, item 6): the photo
  saved progressive by Pillow (libjpeg's standard progression: 10 scans in colour), then its
  scans repeated whole until there are ``scans`` of them (a multiple of the progression's).
  Decoders take it with a warning ('bogus progression'); each scan is a pass over the image.

  Raises:
    ValueError: ``scans`` is not a multiple of the progression's scans.
  """
  from PIL import Image  # pylint: disable=import-outside-toplevel
  with Image.open(photo) as image:
    buffer = io.BytesIO()
    image.convert('RGB').save(buffer, 'JPEG', progressive=True, quality=90)
  data = buffer.getvalue()
  # Pillow writes no thumbnail and no 0xFFDA in its tables, and the entropy-coded data cannot
  # hold one (0xFF is followed by 0x00 there): each 0xFFDA is a scan's start (SOS).
  per_progression = data.count(b'\xff\xda')
  if scans % per_progression:
    raise ValueError(f'{scans} scans: not a multiple of the {per_progression} of one progression')
  first = data.index(b'\xff\xda')
  assert data.endswith(b'\xff\xd9')  # EOI, written once after the repeated scans
  return data[:first] + data[first:-2] * (scans // per_progression) + b'\xff\xd9'


def assert_nothing_a_reader_takes(out: pathlib.Path) -> None:
  """A failed run's output (any runner): no _SUCCESS, no working folder, and every file named
  like a shard is whole (``record_spans`` raises FramingError on a shard cut short)."""
  from imagerecords import contract  # pylint: disable=import-outside-toplevel
  from imagerecords.framing import record_spans  # pylint: disable=import-outside-toplevel
  from transforms.files import working_folders  # pylint: disable=import-outside-toplevel
  assert not (out / contract.SUCCESS_FILE).exists()
  assert not (out / working_folders.WRITER_FOLDER).exists()
  for path in out.iterdir():
    if contract.parse_shard_file_name(path.name):
      with open(path, 'rb') as handle:
        for _ in record_spans(handle):
          pass
