"""What verifying a reused record costs: the checks an incremental night makes on each record it
copies from the previous night's shards (``transforms.outputs.incremental``), per record.

    .venv/bin/python bench/reuse_check.py [--image_size=256] [--repeat=20] [--limit=N]
        [--side_input_copies=50]

Converts ``../shared/data/hymenoptera`` (its first ``--limit`` JPEGs, copied) once with the job
(in this process; ``--image_size``, JPEG, the defaults otherwise), then times, over every
record of its shards, read into memory first (``--repeat`` passes, the best one kept):

* ``read frames``: ``imagerecords.framing.read_frames`` over the shard's bytes, each length
  field checked against its checksum (what the copy's read does);
* ``data checksum``: ``framing.data_checksum_ok`` (the masked CRC-32C of the data);
* ``image/filename``: ``imagerecords.records.example_filename`` (which file the record is);
* ``SHA-256``: ``hashlib.sha256`` of the record (compared with the previous ``images.jsonl``'s
  ``record_sha256``; the split's fingerprint needs this digest in any case).

Printed: a table of microseconds per record and MB/s for each, with the mean record size.

Then what the files to reuse cost as the copy's side input, per file, from the run's own
``images.jsonl`` (each file ``--side_input_copies`` times under other names; a quarter of the
``--repeat`` passes): each one as the ``ReuseEntry`` NamedTuple the copy read before issue 26 (this
night's LabeledImage, the digests, pixel sums, measures; Beam pickles it), and packed as it is
now ((record_sha256, relpath, split) entries, 20,000 to one ``encode_entries`` bytes value):
``encode`` with Beam's ``FastPrimitivesCoder`` (what the runner does once), ``decode`` and
look-up (``FastPrimitivesCoder`` and the dict the copy looks files up in: ``AsDict``'s then,
``ReuseIndex`` now; each worker that reads the side input), and ``state cache size``: the
deep size Beam's state cache measures (``objsize``) of a side input a worker holds, on each
worker that reads it.
"""

import argparse
import hashlib
import io
import json
import pathlib
import shutil
import sys
import tempfile
import time
from typing import NamedTuple, Optional

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.common import (format_table, image_files, machine, one_class_flags,  # noqa: E402
                          shared_data)
from imagerecords import framing  # noqa: E402  # pylint: disable=wrong-import-position
from imagerecords.records import \
    example_filename  # noqa: E402  # pylint: disable=wrong-import-position


class _ReuseEntry(NamedTuple):
  """The copy's side-input entry of a file to reuse before issue 26 (then
  ``transforms.outputs.incremental.ReuseEntry``), as it was."""
  image: tuple  # transforms.elements.LabeledImage
  source_sha256: str
  record_sha256: bytes
  pixel_sums: Optional[tuple]
  measures: Optional[tuple] = None
  mask_classes: Optional[tuple] = None


def _side_input_rows(index_path: pathlib.Path, repeat: int, copies: int) -> list:
  """(form, µs to encode, to decode, to measure, bytes, per file) of the files of the
  ``images.jsonl`` at ``index_path``, each ``copies`` times under other names (a night's
  thousands of files), as the copy's side input, before and now."""
  # pylint: disable=import-outside-toplevel
  from apache_beam.coders import coders
  from apache_beam.runners.worker import statecache
  from transforms.batches import encode_entries
  from transforms.elements import LabeledImage
  from transforms.image.image_measures import ImageMeasures
  from transforms.image.pixel_sums import PixelSums
  from transforms.outputs.incremental import INDEX_PACK
  from transforms.outputs.previous_records import ReuseIndex
  entries = [dict(entry, file=f'{copy}/{entry["file"]}') for copy in range(copies)
             for entry in map(json.loads, index_path.read_text().splitlines())]
  old = []
  for entry in entries:
    sums = entry.get('pixel_sums')
    old.append((entry['file'], _ReuseEntry(
        LabeledImage(f'/in/{entry["file"]}', entry['file'], entry['label'], entry['split'],
                     version=entry.get('version')),
        entry['sha256'], bytes.fromhex(entry['record_sha256']),
        None if sums is None else PixelSums(tuple(sums[0]), tuple(sums[1]), sums[2]),
        None if 'measures' not in entry else tuple(
            ImageMeasures.from_index(entry['measures'])))))
  slim = [(bytes.fromhex(entry['record_sha256']), entry['file'], entry['split'])
          for entry in entries]
  coder = coders.FastPrimitivesCoder()
  rows = []
  # what the decision makes of the files (one element each then, packs now), and what a
  # worker makes of the side input (AsDict's dict then, the copy's look-up now)
  for name, values, pack, lookup in (
      ('ReuseEntry per file (before)', old, lambda values: values, dict),
      ('packed entries (now)', slim, lambda values: [
          encode_entries(values[i:i + INDEX_PACK]) for i in range(0, len(values), INDEX_PACK)],
       ReuseIndex)):
    encoded = [coder.encode(value) for value in pack(values)]
    decoded = [coder.decode(data) for data in encoded]
    times = [_best(lambda: [coder.encode(value) for value in pack(values)], repeat),
             _best(lambda: lookup([coder.decode(data) for data in encoded]), repeat),
             _best(lambda: statecache.get_deep_size(decoded), repeat)]
    rows.append((name, *(seconds / len(entries) * 1e6 for seconds in times),
                 sum(map(len, encoded)) / len(entries)))
  return rows


def _best(function, repeat: int) -> float:
  """The fastest of ``repeat`` calls of ``function``, in seconds."""
  best = float('inf')
  for _ in range(repeat):
    start = time.perf_counter()
    function()
    best = min(best, time.perf_counter() - start)
  return best


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
  parser.add_argument('--image_size', type=int, default=256)
  parser.add_argument('--repeat', type=int, default=20)
  parser.add_argument('--limit', type=int, default=None, help='only the first N photos')
  parser.add_argument('--side_input_copies', type=int, default=50,
                      help='the side-input table: each file this many times, under other names')
  args = parser.parse_args(argv)
  from pipeline.run import run  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory() as tmp:
    data = shared_data('hymenoptera')
    photos, out = pathlib.Path(tmp, 'in'), pathlib.Path(tmp, 'out')
    for path in image_files(data, args.limit):
      target = photos / path.relative_to(data)
      target.parent.mkdir(parents=True, exist_ok=True)
      shutil.copyfile(path, target)
    if run([f'--input_dir={photos}', f'--output_dir={out}',
            f'--image_size={args.image_size}', '--direct_running_mode=in_memory',
            *one_class_flags()]) != 0:
      raise RuntimeError('the job failed')
    shards = [path.read_bytes() for path in sorted(out.glob('*.tfrecord'))]
    side_input = _side_input_rows(out / 'images.jsonl', max(1, args.repeat // 4),
                                  args.side_input_copies)
  frames = [frame for data in shards
            for frame in framing.read_frames(io.BytesIO(data),
                                             length_ok=framing.length_checksum_ok)]
  assert all(framing.data_checksum_ok(frame) for frame in frames)
  count, size = len(frames), sum(len(frame.data) for frame in frames)
  rows = []
  for name, function in (
      ('read frames, length checksums', lambda: [
          None for data in shards
          for _ in framing.read_frames(io.BytesIO(data), length_ok=framing.length_checksum_ok)]),
      ('data checksum', lambda: [framing.data_checksum_ok(frame) for frame in frames]),
      ('image/filename', lambda: [example_filename(frame.data) for frame in frames]),
      ('SHA-256', lambda: [hashlib.sha256(frame.data).digest() for frame in frames])):
    seconds = _best(function, args.repeat)
    rows.append((name, seconds / count * 1e6, size / seconds / 1e6))
  report = machine()
  print(f"machine: {report['nproc']} cores, {report['cpu_model']}, load average "
        f"{report['load_average']}")
  print(f'{count} records of hymenoptera at {args.image_size} px, mean {size / count / 1e3:.1f} '
        f'KB; best of {args.repeat} passes over them in memory')
  print(format_table(('step', 'us/record', 'MB/s'), rows))
  print(f'\nthe {count} files x {args.side_input_copies} as the copy\'s side input, per file')
  print(format_table(('form', 'encode us', 'decode + look-up us', 'state cache size us',
                      'bytes'),
                     side_input))
  return 0


if __name__ == '__main__':
  sys.exit(main())
