"""What checking the shards against the manifest costs: the job's read-back, the reader's checks.

    .venv/bin/python bench/shard_check.py [--records=DIR] [--gigabytes=2] [--shards=16]
                                          [--many=1024]

The job counts each shard's records and digests its bytes while it writes it
(``transforms.outputs.write.copy_shard``: the manifest's ``num_examples`` and ``sha256``); it
used to read each shard back once written (``transforms.outputs.write.summarize_shard``, which
now serves only a shard an earlier attempt wrote), and before that to read the record headers
only (``imagerecords.framing.record_spans``, seeking over the data): both are timed here as the
job's former costs. The reader checks the shards before it reads them
(``imagerecords.metadata.check_shards``): ``verify_shards=True`` one ``stat`` per shard,
``'sha256'`` a digest of every byte.

The shards are real records: ``--records`` (an output directory of the job; by default
../shared/data/hymenoptera converted at the job's defaults into a temporary folder), its shards
concatenated end to end (a valid TFRecord file) into ``--shards`` files of ``--gigabytes`` in
all, listed in a manifest of their own; and ``--many`` copies of its smallest shard, for the cost
of one check per shard. The files are read from the page cache (just written): the figures are
the CPU's; a cold read adds the storage's time on top (this disk: 335 MB/s,
docs/benchmarks.md). Printed: one line per measurement.
"""

import argparse
import hashlib
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'reader'))

from bench.common import REPO, shared_data  # pylint: disable=wrong-import-position
from imagerecords import contract  # pylint: disable=wrong-import-position
from imagerecords.framing import record_spans  # pylint: disable=wrong-import-position
from transforms.outputs.write import summarize_shard  # pylint: disable=wrong-import-position


def _best(function, repeat: int) -> float:
  """The shortest wall time of ``repeat`` calls of ``function``, seconds."""
  times = []
  for _ in range(repeat):
    start = time.perf_counter()
    function()
    times.append(time.perf_counter() - start)
  return min(times)


def _headers_only(path: str) -> int:
  """The job's former count: headers read, data skipped with seek."""
  with open(path, 'rb') as f:
    return sum(1 for _ in record_spans(f))


def _source(records, work: pathlib.Path) -> pathlib.Path:
  if records:
    return pathlib.Path(records)
  out = work / 'hymenoptera'
  subprocess.run([sys.executable, '-m', 'pipeline.run', f'--input_dir={shared_data("hymenoptera")}',
                  f'--output_dir={out}', '--stats=false'], cwd=REPO, check=True,
                 stdout=subprocess.DEVNULL)
  return out


def _output(work: pathlib.Path, name: str, shard_bytes, manifest: dict) -> pathlib.Path:
  """An output directory ``work/name`` holding one split of the given shards (file name ->
  bytes to write, or a path to copy), its manifest made by the job's own read-back of a shard
  (``summarize_shard``, which gives what the writer takes while writing)."""
  out = work / name
  out.mkdir()
  entries = []
  names = sorted(shard_bytes)
  for name_ in names:
    target = out / name_
    content = shard_bytes[name_]
    if isinstance(content, pathlib.Path):
      shutil.copyfile(content, target)
    else:
      with open(target, 'wb') as f:
        for piece in content:
          f.write(piece)
    summary = summarize_shard(str(target))
    entries.append({'file': name_, 'num_examples': summary.num_records,
                    'bytes': target.stat().st_size, 'sha256': summary.sha256})
  manifest = dict(manifest, splits={'train': {
      'num_examples': sum(e['num_examples'] for e in entries), 'num_shards': len(entries),
      'bytes': sum(e['bytes'] for e in entries), 'shards': entries}})
  (out / contract.MANIFEST_FILE).write_text(json.dumps(manifest))
  (out / contract.SUCCESS_FILE).write_text('')
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--records', help='an output directory of the job (default: hymenoptera)')
  parser.add_argument('--gigabytes', type=float, default=2.0)
  parser.add_argument('--shards', type=int, default=16)
  parser.add_argument('--many', type=int, default=1024)
  args = parser.parse_args(argv)
  from imagerecords import metadata  # pylint: disable=import-outside-toplevel

  with tempfile.TemporaryDirectory(dir='/tmp') as tmp:
    work = pathlib.Path(tmp)
    source = _source(args.records, work)
    manifest = json.loads((source / contract.MANIFEST_FILE).read_text())
    paths = sorted(source / e['file'] for info in manifest['splits'].values()
                   for e in info['shards'] if e['num_examples'])
    blob = b''.join(path.read_bytes() for path in paths)
    per_shard = int(args.gigabytes * 2**30 / args.shards)
    copies = max(1, per_shard // len(blob))
    big = _output(work, 'big', {contract.shard_file_name('train', i, args.shards): [blob] * copies
                                for i in range(args.shards)}, manifest)
    shard_paths = [str(big / e['file']) for e in
                   json.loads((big / contract.MANIFEST_FILE).read_text())['splits']['train'][
                       'shards']]
    total = sum(pathlib.Path(p).stat().st_size for p in shard_paths)
    records = sum(_headers_only(p) for p in shard_paths)
    gib = total / 2**30
    print(f'{args.shards} shards, {gib:.2f} GiB, {records} records '
          f'({total / records / 1024:.1f} KiB each) from {source}')

    seconds = _best(lambda: [_headers_only(p) for p in shard_paths], 2)
    print(f'job, count by headers (earlier): {seconds:7.3f} s  {gib / seconds:6.2f} GiB/s')
    seconds = _best(lambda: [summarize_shard(p) for p in shard_paths], 2)
    print(f'job, read back: count + sha256:  {seconds:7.3f} s  {gib / seconds:6.2f} GiB/s '
          '(one thread; before the digest while writing)')

    shards = metadata.split_shards(metadata.read_manifest(str(big)), str(big), 'train')
    seconds = _best(lambda: metadata.check_shards(shards, True), 5)
    print(f'reader, verify_shards=True:      {seconds * 1e3:7.2f} ms for {len(shards)} shards')
    seconds = _best(lambda: metadata.check_shards(shards, 'sha256'), 2)
    print(f"reader, verify_shards='sha256':  {seconds:7.3f} s  {gib / seconds:6.2f} GiB/s")
    piece = blob * max(1, (256 << 20) // len(blob))
    seconds = _best(lambda: hashlib.sha256(piece).digest(), 3)
    print(f'(hashlib.sha256 alone, in memory: {len(piece) / 2**30 / seconds:6.2f} GiB/s, '
          'one thread)')

    smallest = min(paths, key=lambda p: p.stat().st_size)
    many = _output(work, 'many', {contract.shard_file_name('train', i, args.many): smallest
                                  for i in range(args.many)}, manifest)
    shards = metadata.split_shards(metadata.read_manifest(str(many)), str(many), 'train')
    seconds = _best(lambda: metadata.check_shards(shards, True), 5)
    print(f'reader, verify_shards=True:      {seconds * 1e3:7.2f} ms for {len(shards)} shards '
          f'({seconds / len(shards) * 1e6:.0f} us each)')
    build = lambda verify: _best(lambda: metadata.shard_files(str(many), 'train', verify), 5)
    print(f'shard_files, {args.many} shards: {build(False) * 1e3:.1f} ms unchecked, '
          f'{build(True) * 1e3:.1f} ms with sizes')
  return 0


if __name__ == '__main__':
  sys.exit(main())
