"""The shard writer's planning step at scale: time and memory of ordering a split's records.

    .venv/bin/python bench/shard_plan.py [--records=1000000] [--files=20] [--num_shards=1024]

``transforms.outputs.write.plan_shards`` orders every record of a split on its seeded key and cuts
the shards; it runs once per split, on one worker, over references only (24 bytes per record).
This times it, and measures its peak Python/NumPy memory with ``tracemalloc`` (in a second
call: tracing slows allocation), for ``--records`` records spread over ``--files`` staging files
in two layouts:

* ``key-sorted runs``: runs of 256 records, each a stretch of the key order, dealt to the files
  in random order: how ``ShuffleOrder``'s buckets reach the writer in the job;
* ``no order``: the records dealt to the files at random: a writer fed in no order (each record
  then becomes its own staging read).

The keys are the job's own (``transforms.inputs.splits.shuffle_key``) of paths ``c<k>/img<i>.jpg``;
no image is involved, only the references the plan sees. Printed: one line per layout.
"""

import argparse
import array
import pathlib
import random
import sys
import time
import tracemalloc

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from transforms.inputs.splits import shuffle_key  # pylint: disable=wrong-import-position
from transforms.outputs.staging import StagingFile  # pylint: disable=wrong-import-position
from transforms.outputs.write import plan_shards  # pylint: disable=wrong-import-position

_FRAME_BYTES = 100_000  # a typical record's frame: only the offsets depend on it
_RUN = 256  # ShuffleOrder's images per bucket


def _files(runs, num_files, rng):
  """StagingFiles holding ``runs`` (lists of keys), each run kept whole in one random file."""
  per_file = [[] for _ in range(num_files)]
  for run in runs:
    per_file[rng.randrange(num_files)].extend(run)
  return [StagingFile(f'/staging/records-{number:032x}.tfrecord',
                      array.array('q', range(0, len(keys) * _FRAME_BYTES, _FRAME_BYTES)),
                      b''.join(keys))
          for number, keys in enumerate(per_file)]


def _measure(name, files, num_shards, records):
  start = time.perf_counter()
  plans = plan_shards(files, num_shards)
  seconds = time.perf_counter() - start
  del plans
  tracemalloc.start()
  plans = plan_shards(files, num_shards)
  held, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  print(f'{name}: {records:,} records in {len(files)} staging files, {num_shards} shards: '
        f'{seconds:.2f} s, peak {peak / 2**20:.0f} MiB ({peak / records:.0f} B/record), '
        f'{sum(map(len, plans)):,} ShardRanges (staging reads) holding {held / 2**20:.0f} MiB')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--records', type=int, default=1_000_000, help='Records of the split.')
  parser.add_argument('--files', type=int, default=20, help='Staging files (bundles).')
  parser.add_argument('--num_shards', type=int, default=1024, help='Shards of the split.')
  args = parser.parse_args(argv)
  rng = random.Random(0)
  keys = sorted(shuffle_key(f'c{i % 1000}/img{i}.jpg', 0) for i in range(args.records))
  runs = [keys[i:i + _RUN] for i in range(0, len(keys), _RUN)]
  _measure('key-sorted runs', _files(runs, args.files, rng), args.num_shards, args.records)
  del runs
  _measure('no order', _files([[key] for key in keys], args.files, rng), args.num_shards,
           args.records)
  return 0


if __name__ == '__main__':
  sys.exit(main())
