"""Byte-identical duplicates and train/test leakage (--dedup), on real photos.

``catdog_filenames`` holds byte-identical JPEGs under different names; the expected groups are
computed here with hashlib over the files themselves, independently of the job.
"""

import collections
import hashlib
import json
import shutil

from pipeline import outputs
from transforms import dedup
from tests.helpers import SAMPLES, all_records, convert, manifest_of, shared_data

CATDOG_REGEX = r'--label_source=filename:^([a-z]+)\.\d+\.jpg$'


def _sha256(path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


def _expected_groups(root):
  """{sha256: sorted relpaths} of every content held by two or more files under ``root``."""
  by_digest = collections.defaultdict(list)
  for path in root.rglob('*'):
    if path.is_file():
      by_digest[_sha256(path)].append(path.relative_to(root).as_posix())
  return {digest: sorted(files) for digest, files in by_digest.items() if len(files) > 1}


def _failures(out):
  return [json.loads(line) for line in (out / 'failures.jsonl').read_text().splitlines()]


def test_keep_all_finds_the_catdog_duplicates_and_writes_every_file(tmp_path, capsys):
  source = shared_data('catdog_filenames')
  expected = _expected_groups(source)
  assert expected  # the data set is known to hold duplicates
  out = tmp_path / 'out'
  assert convert(source, out, CATDOG_REGEX, '--num_shards=2') == 0

  duplicates = manifest_of(out)['duplicates']
  assert {g['sha256']: g['files'] for g in duplicates['groups']} == expected
  assert duplicates['num_groups'] == len(expected)
  assert duplicates['num_files'] == sum(len(files) for files in expected.values())
  assert duplicates['num_dropped'] == 0 and duplicates['num_leaking_groups'] == 0
  assert all(g['splits'] == ['train'] * len(g['files']) and not g['leaks'] and 'kept' not in g
             for g in duplicates['groups'])
  records = [record for _, record in all_records(out)]
  assert len(records) == 300
  for record in records:
    assert record['image/key/sha256'].decode() == _sha256(
        source / record['image/filename'].decode())
  summary = capsys.readouterr().err
  assert f'{len(expected)} groups of byte-identical files' in summary
  assert 'LEAKAGE' not in summary


def test_keep_first_writes_one_file_per_group_and_reports_the_others(tmp_path):
  source = shared_data('catdog_filenames')
  expected = _expected_groups(source)
  dropped = {name: files[0] for files in expected.values() for name in files[1:]}
  out = tmp_path / 'out'
  # dropped copies are not failures: even a zero failure budget passes
  assert convert(source, out, CATDOG_REGEX, '--num_shards=2', '--dedup=keep_first',
                 '--max_failure_fraction=0') == 0

  records = [record for _, record in all_records(out)]
  written = {record['image/filename'].decode() for record in records}
  assert len(records) == len(written) == 300 - len(dropped)
  assert not written & set(dropped)
  assert all(files[0] in written for files in expected.values())
  for record in records:  # the digest hashed before the conversion is the record's
    assert record['image/key/sha256'].decode() == _sha256(
        source / record['image/filename'].decode())
  failures = _failures(out)
  assert {f['relpath'] for f in failures} == set(dropped)
  for failure in failures:
    assert failure['stage'] == 'duplicate'
    assert f'byte-identical to {dropped[failure["relpath"]]}' in failure['reason']
  manifest = manifest_of(out)
  assert manifest['status'] == 'complete' and manifest['num_failures'] == 0
  assert manifest['num_skipped'] == len(dropped)
  assert manifest['failures_by_stage'] == {'duplicate': len(dropped)}
  duplicates = manifest['duplicates']
  assert duplicates['num_dropped'] == len(dropped)
  assert {g['kept']: g['files'] for g in duplicates['groups']} == {
      files[0]: files for files in expected.values()}


def _leaking_input(tmp_path):
  """Real photos in split folders, one identical pair across train/ and val/."""
  source = shared_data('catdog_filenames') / 'train'
  pair = next(files for files in _expected_groups(source).values())
  root = tmp_path / 'in'
  for split in ('train', 'val'):
    for klass in ('ants', 'bees'):
      (root / split / klass).mkdir(parents=True)
      photos = sorted((SAMPLES / klass).glob('*.jpg'))
      for photo in photos[:3] if split == 'train' else photos[3:4]:
        shutil.copy(photo, root / split / klass / photo.name)
    (root / split / 'x').mkdir()
  shutil.copy(source / pair[0], root / 'train' / 'x' / pair[0])
  shutil.copy(source / pair[1], root / 'val' / 'x' / pair[1])
  return root, [f'train/x/{pair[0]}', f'val/x/{pair[1]}']


def test_duplicates_across_splits_are_flagged_as_leakage(tmp_path, capsys):
  root, leaking = _leaking_input(tmp_path)
  out = tmp_path / 'all'
  assert convert(root, out, '--num_shards=1') == 0
  summary = capsys.readouterr().err
  manifest = manifest_of(out)
  duplicates = manifest['duplicates']
  assert duplicates['num_groups'] == 1 and duplicates['num_leaking_groups'] == 1
  group = duplicates['groups'][0]
  assert group['files'] == leaking and group['splits'] == ['train', 'val'] and group['leaks']
  assert 'LEAKAGE: 1 group of identical files in two or more splits' in summary
  assert f'{leaking[0]} (train) = {leaking[1]} (val)' in summary
  assert summary.count('LEAKAGE') == outputs.summary(manifest).count('LEAKAGE') == 1
  assert manifest['splits']['val']['class_counts']['x'] == 1

  # keep_first writes the copy first by path (train/...): the source still leaks, and says so
  out = tmp_path / 'first'
  assert convert(root, out, '--num_shards=1', '--dedup=keep_first') == 0
  summary = capsys.readouterr().err
  manifest = manifest_of(out)
  group = manifest['duplicates']['groups'][0]
  assert group['leaks'] and group['kept'] == leaking[0]
  assert f'{leaking[0]} (train) = {leaking[1]} (val)  [kept {leaking[0]}]' in summary
  assert 'x' not in manifest['splits']['val']['class_counts']
  assert [(f['relpath'], f['stage']) for f in _failures(out)] == [(leaking[1], 'duplicate')]


def test_summary_lists_the_first_leaking_groups_and_counts_the_rest():
  groups = [dedup.DuplicateGroup(f'{i:064x}', (f'train/{i}.jpg', f'val/{i}.jpg'), ('train', 'val'))
            for i in range(12)]
  groups.append(dedup.DuplicateGroup('f' * 64, ('train/a.jpg', 'train/b.jpg'), ('train', 'train')))
  section = dedup.duplicates_section(groups)
  assert section['num_groups'] == 13 and section['num_files'] == 26
  assert section['num_leaking_groups'] == 12 and section['num_dropped'] == 0
  lines = dedup.summary_lines(section, max_groups=10)
  assert lines[1] == '  LEAKAGE: 12 groups of identical files in two or more splits:'
  assert len([line for line in lines if ' (train) = ' in line]) == 10
  assert lines[-1] == '    ... 2 more: see manifest.json "duplicates"'
  assert dedup.summary_lines(dedup.duplicates_section([])) == []
