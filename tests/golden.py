"""The content of a run's output, in a form two runs can compare, and the stored digests of the
output the job wrote before the per-image overhead work of issue 15.

``output_digest(out, input_dir)`` keeps what a change of the graph must not change: the
manifest less what varies from run to run (times, absolute paths, the runner's counters, and
how each split's records are dealt into shards, which ``transforms.outputs.write`` owns), each
split's record count, class counts, bytes and fingerprint (the order-free sum of the records'
SHA-256, so the same set of records), and the SHA-256 of every text output (``images.jsonl``,
``labels.txt``, ``failures.jsonl``, ``duplicates.jsonl``, ``quality.jsonl``, the TFDS files),
with the input folder's absolute path replaced by ``<input>`` and each file's modification time
in ``images.jsonl``'s ``version`` by ``<mtime>`` (a fresh copy or clone of the data has new
times, and the index must still compare equal).

Regenerate the stored digests ONLY for a change meant to change the output (say so in the
commit), with the job of that commit:

    PYTHONPATH=.:reader .venv/bin/python tests/golden.py
"""

import hashlib
import json
import pathlib
import re
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
GOLDEN = HERE / 'golden_outputs.json'

# name -> (data set of ../shared/data, flags of the job); small, each a few seconds in-process
CASES = {
    # file-name labels, split folder, exact and near duplicate groups
    'catdog_filenames': ('catdog_filenames', [r'--label_source=filename:^([a-z]+)\.\d+\.jpg$']),
    # a label file, hash splits (no split folders), 64x64 photos kept at their size
    'tiny_imagenet_val': ('tiny_imagenet_val', [
        '--label_source=file:{input}/val_annotations.txt', '--splits=train=0.8,validation=0.2',
        '--image_size=64']),
    # undecodable and odd files: failures.jsonl, quality flags
    'messy': ('messy', ['--label_source=none', '--splits=train=0.5,test=0.5',
                        '--max_failure_fraction=0.5',
                        '--image_size=128']),
}

_TEXT_FILES = ('images.jsonl', 'labels.txt', 'failures.jsonl', 'duplicates.jsonl',
               'quality.jsonl', 'features.json', 'dataset_info.json',
               'image.class.label.labels.txt')
# "version": "SIZE:MTIME" or "SIZE:MTIME+SIZE:MTIME" (elements.source_version)
_VERSION = re.compile(r'"version": "([^"]*)"')
_MANIFEST_VARIES = ('created_utc', 'input_dir', 'output_dir', 'timings', 'metrics',
                    'step_msecs')


def _without_mtimes(match: re.Match) -> str:
  sizes = (part.split(':', 1)[0] for part in match.group(1).split('+'))
  return '"version": "' + '+'.join(f'{size}:<mtime>' for size in sizes) + '"'


def output_digest(out: pathlib.Path, input_dir: str) -> dict:
  """What the output at ``out`` holds, less what varies between runs (module docstring)."""
  manifest = json.loads((out / 'manifest.json').read_text())
  for key in _MANIFEST_VARIES:
    manifest.pop(key, None)
  for key in ('input_dir', 'output_dir'):
    manifest['options'].pop(key, None)
  manifest['options']['label_source'] = manifest['options']['label_source'].replace(
      input_dir, '<input>')
  for split in manifest['splits'].values():
    split.pop('shards')  # which shard holds a record: transforms.outputs.write's, not this digest's
  files = {}
  for name in _TEXT_FILES:
    path = out / name
    if path.exists():
      text = path.read_text(encoding='utf-8').replace(input_dir, '<input>')
      if name == 'images.jsonl':
        text = _VERSION.sub(_without_mtimes, text)
      files[name] = hashlib.sha256(text.encode('utf-8')).hexdigest()
  return {'manifest': manifest, 'files': files}


def case_digest(name: str, data_root: pathlib.Path, tmp: pathlib.Path) -> dict:
  """Runs the job (in this process, the in-memory runner, the job's defaults otherwise) on
  case ``name``; its ``output_digest``."""
  from pipeline.run import run  # pylint: disable=import-outside-toplevel
  folder, flags = CASES[name]
  source = data_root / folder
  out = tmp / name
  argv = [f'--input_dir={source}', f'--output_dir={out}', '--direct_running_mode=in_memory',
          *(flag.replace('{input}', str(source)) for flag in flags)]
  if run(argv) != 0:
    raise RuntimeError(f'the job failed on {name}')
  return output_digest(out, str(source))


def main():
  data_root = HERE.parents[1] / 'shared' / 'data'
  with tempfile.TemporaryDirectory() as tmp:
    digests = {name: case_digest(name, data_root, pathlib.Path(tmp)) for name in CASES}
  GOLDEN.write_text(json.dumps(digests, indent=1, sort_keys=True) + '\n')
  print(f'wrote {GOLDEN}')


if __name__ == '__main__':
  sys.exit(main())
