"""What verifying a reused record costs: the checks an incremental night makes on each record it
copies from the previous night's shards (``transforms.outputs.incremental``), per record.

    .venv/bin/python bench/reuse_check.py [--image_size=256] [--repeat=20] [--limit=N]

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
"""

import argparse
import hashlib
import io
import pathlib
import shutil
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.common import (format_table, image_files, machine, one_class_flags,  # noqa: E402
                          shared_data)
from imagerecords import framing  # noqa: E402  # pylint: disable=wrong-import-position
from imagerecords.records import \
    example_filename  # noqa: E402  # pylint: disable=wrong-import-position


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
            '--stats=false', *one_class_flags()]) != 0:
      raise RuntimeError('the job failed')
    shards = [path.read_bytes() for path in sorted(out.glob('*.tfrecord'))]
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
  return 0


if __name__ == '__main__':
  sys.exit(main())
