"""Byte-identical duplicates and train/test leakage (--dedup), on real photos.

``catdog_filenames`` holds byte-identical JPEGs under different names; the expected groups are
computed here with hashlib over the files themselves, independently of the job.
"""

import collections
import hashlib
import json
import pathlib
import shutil

from imagerecords import inspect, manifest_schema, pictures
import pytest
from PIL import Image, ImageEnhance

from pipeline import outputs
from tests.helpers import SAMPLES, all_records, convert, manifest_of, shared_data
from transforms.analysis import dedup, near_duplicates

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


def _duplicates(out):
  """The lines of duplicates.jsonl."""
  return [json.loads(line) for line in (out / 'duplicates.jsonl').read_text().splitlines()]


def _names(group):
  return [f['file'] for f in group['files']]


# Near-identical pairs of catdog_filenames, looked at side by side: the same photo cropped or
# letterboxed by a few rows, or rescaled, under two names (different bytes, different sizes).
# dog.1006 = dog.1149 (cropped) is 13 bits apart: found from the default distance 14 on; the
# set's one more such pair, cat.124 = cat.15 (13 bits), shares no band and is not found.
CATDOG_NEAR_PAIRS = [['train/cat.138.jpg', 'train/cat.86.jpg'],
                     ['train/dog.1006.jpg', 'train/dog.1149.jpg'],
                     ['train/dog.1021.jpg', 'train/dog.1070.jpg'],
                     ['train/dog.1076.jpg', 'train/dog.1098.jpg']]


def test_keep_all_finds_the_catdog_duplicates_and_writes_every_file(tmp_path, capsys):
  source = shared_data('catdog_filenames')
  expected = _expected_groups(source)
  assert expected  # the data set is known to hold duplicates
  out = tmp_path / 'out'
  assert convert(source, out, CATDOG_REGEX, '--num_shards=2') == 0

  groups = _duplicates(out)
  exact = [g for g in groups if g['kind'] == 'exact']
  near = [g for g in groups if g['kind'] == 'near']
  assert {g['sha256']: _names(g) for g in exact} == expected
  assert all(not g['leaks_across_splits'] and not g['label_conflict'] and 'kept' not in g
             and {f['split'] for f in g['files']} == {'train'} for g in groups)
  # the known pairs, and nothing else: every other photo of the set is a distinct picture
  assert sorted(_names(g) for g in near) == CATDOG_NEAR_PAIRS
  assert [json.dumps(g, sort_keys=True) for g in groups] == sorted(
      json.dumps(g, sort_keys=True) for g in groups)  # the file is sorted
  duplicates = manifest_of(out)['duplicates']
  assert duplicates['exact'] == {
      'num_groups': len(expected), 'num_files': sum(len(f) for f in expected.values()),
      'num_dropped': 0, 'num_leaking_groups': 0, 'num_label_conflicts': 0}
  assert duplicates['near'] == {'num_groups': 4, 'num_files': 8, 'num_dropped': 0,
                                'num_leaking_groups': 0, 'num_label_conflicts': 0}
  assert 'groups' not in duplicates and len(duplicates['examples']) <= 5
  records = [record for _, record in all_records(out)]
  assert len(records) == 300
  for record in records:
    assert record['image/key/sha256'].decode() == _sha256(
        source / record['image/filename'].decode())
  summary = capsys.readouterr().err
  assert f'{len(expected)} groups of byte-identical files' in summary
  assert '4 groups of near-identical pictures (8 files): all written' in summary
  assert 'LEAKAGE' not in summary and 'CONFLICT' not in summary


@pytest.mark.slow
def test_keep_first_near_writes_one_file_per_near_group(tmp_path):
  source = shared_data('catdog_filenames')
  expected = _expected_groups(source)
  out = tmp_path / 'out'
  assert convert(source, out, CATDOG_REGEX, '--num_shards=1', '--dedup=keep_first_near',
                 '--max_failure_fraction=0') == 0
  dropped_exact = {name for files in expected.values() for name in files[1:]}
  dropped_near = {pair[1] for pair in CATDOG_NEAR_PAIRS}
  written = {record['image/filename'].decode() for _, record in all_records(out)}
  assert len(written) == 300 - len(dropped_exact) - len(dropped_near)
  assert not written & (dropped_exact | dropped_near)
  assert {pair[0] for pair in CATDOG_NEAR_PAIRS} <= written
  failures = {f['relpath']: f for f in _failures(out)}
  assert set(failures) == dropped_exact | dropped_near
  for name in dropped_near:
    assert failures[name]['stage'] == 'duplicate'
    assert 'near-identical to train/' in failures[name]['reason']
  manifest = manifest_of(out)
  assert manifest['num_examples'] == len(written) and manifest['num_failures'] == 0
  assert manifest['duplicates']['near']['num_dropped'] == len(CATDOG_NEAR_PAIRS)
  assert manifest['duplicates']['exact']['num_dropped'] == len(dropped_exact)
  # each file dropped counted once (not once for its record and again for the analysis)
  assert manifest['metrics']['near_duplicates_dropped'] == len(CATDOG_NEAR_PAIRS)
  assert {g['kept'] for g in _duplicates(out) if g['kind'] == 'near'} == {
      pair[0] for pair in CATDOG_NEAR_PAIRS}
  index = [json.loads(line)['file'] for line in (out / 'images.jsonl').read_text().splitlines()]
  assert set(index) == written


@pytest.mark.slow
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
  assert manifest['duplicates']['exact']['num_dropped'] == len(dropped)
  assert {g['kept']: _names(g) for g in _duplicates(out) if g['kind'] == 'exact'} == {
      files[0]: files for files in expected.values()}


def _leaking_input(tmp_path):
  """Real photos in split folders, with: one byte-identical pair across train/ and val/
  (x/); one photo copied under both classes of train/ (an exact label conflict); one photo in
  train/ants and, re-encoded at half size, in val/bees (a near duplicate that leaks and
  conflicts); the hymenoptera "image not found" placeholder GIF."""
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
  # the same bytes under two labels
  twice = sorted((SAMPLES / 'bees').glob('*.jpg'))[5]
  shutil.copy(twice, root / 'train' / 'ants' / 'twice.jpg')
  shutil.copy(twice, root / 'train' / 'bees' / 'twice.jpg')
  # a photo and its half-size re-encoding, under two labels in two splits
  photo = sorted((SAMPLES / 'ants').glob('*.jpg'))[6]
  shutil.copy(photo, root / 'train' / 'ants' / 'original.jpg')
  with Image.open(photo) as image:
    image.reduce(2).save(root / 'val' / 'bees' / 'smaller.jpg', quality=70)
  placeholder = shared_data('hymenoptera') / 'train' / 'ants' / 'imageNotFound.gif'
  shutil.copy(placeholder, root / 'train' / 'ants' / placeholder.name)
  return root, [f'train/x/{pair[0]}', f'val/x/{pair[1]}']


@pytest.mark.slow
def test_leakage_and_label_conflicts_are_reported(tmp_path, capsys):
  root, leaking = _leaking_input(tmp_path)
  out = tmp_path / 'all'
  assert convert(root, out, '--num_shards=1') == 0
  summary = capsys.readouterr().err
  manifest = manifest_of(out)
  groups = {tuple(_names(g)): g for g in _duplicates(out)}
  assert set(groups) == {tuple(leaking), ('train/ants/twice.jpg', 'train/bees/twice.jpg'),
                         ('train/ants/original.jpg', 'val/bees/smaller.jpg')}
  cross = groups[tuple(leaking)]
  assert cross['kind'] == 'exact' and cross['leaks_across_splits'] and not cross['label_conflict']
  assert [f['split'] for f in cross['files']] == ['train', 'val']
  twice = groups[('train/ants/twice.jpg', 'train/bees/twice.jpg')]
  assert twice['kind'] == 'exact' and twice['label_conflict'] and not twice['leaks_across_splits']
  near = groups[('train/ants/original.jpg', 'val/bees/smaller.jpg')]
  assert near['kind'] == 'near' and near['label_conflict'] and near['leaks_across_splits']
  assert [(f['split'], f['label']) for f in near['files']] == [('train', 'ants'), ('val', 'bees')]
  duplicates = manifest['duplicates']
  assert duplicates['exact']['num_groups'] == 2 and duplicates['near']['num_groups'] == 1
  assert duplicates['exact']['num_leaking_groups'] == 1
  assert duplicates['exact']['num_label_conflicts'] == 1
  assert duplicates['near']['num_leaking_groups'] == duplicates['near']['num_label_conflicts'] == 1
  # the examples: conflicts first (the near group conflicts and leaks), then the leaks
  assert [tuple(_names(g)) for g in duplicates['examples']] == [
      ('train/ants/original.jpg', 'val/bees/smaller.jpg'),
      ('train/ants/twice.jpg', 'train/bees/twice.jpg'), tuple(leaking)]
  assert ('1 group across splits (LEAKAGE); 1 group with two labels (LABEL CONFLICT)'
          in summary)
  assert (f'    exact group of 2 files:\n      {leaking[0]} (train, x)\n'
          f'      {leaking[1]} (val, x)\n') in summary
  assert (f'    near group of 2 files, similarity {near["similarity"]:.3f}:\n'
          '      train/ants/original.jpg (train, ants)\n'
          '      val/bees/smaller.jpg (val, bees)\n') in summary
  assert (summary.count('LEAKAGE')
          == outputs.summary(manifest_schema.Manifest.from_json(manifest)).count('LEAKAGE') == 2)
  assert manifest['splits']['val']['class_counts']['x'] == 1
  # the placeholder is flagged, the real photos are not
  flagged = [json.loads(line) for line in (out / 'quality.jsonl').read_text().splitlines()]
  assert [f['file'] for f in flagged] == ['train/ants/imageNotFound.gif']
  assert 'low_information' in flagged[0]['flags'] and flagged[0]['split'] == 'train'
  assert manifest['quality']['num_flagged'] == 1
  assert manifest['quality']['num_measured'] == manifest['num_examples']
  assert f'1 of {manifest["num_examples"]} images flagged' in summary
  # inspect draws the near group (its records) and the placeholder's flags
  report = inspect.inspect(str(out), verify=False, samples=4)
  assert [[f.file for f in g.files] for g in report.duplicate_groups] == [
      ['train/ants/original.jpg', 'val/bees/smaller.jpg']]
  assert {'train/ants/original.jpg', 'val/bees/smaller.jpg',
          'train/ants/imageNotFound.gif'} <= set(report.images)
  written = pictures.render(report, str(tmp_path / 'pictures'), thumb=64, samples=4)
  names = sorted(pathlib.Path(path).name for path in written)
  assert 'near_duplicates.png' in names
  assert {f'quality_{flag}.png' for flag in flagged[0]['flags']} <= set(names)
  with Image.open(tmp_path / 'pictures' / 'near_duplicates.png') as sheet:
    assert sheet.height < 200  # one group: one row

  # keep_first writes the copy first by path (train/...): the source still leaks, and says so
  out = tmp_path / 'first'
  assert convert(root, out, '--num_shards=1', '--dedup=keep_first') == 0
  summary = capsys.readouterr().err
  manifest = manifest_of(out)
  cross = next(g for g in _duplicates(out) if _names(g) == leaking)
  assert cross['leaks_across_splits'] and cross['kept'] == leaking[0]
  assert (f'    exact group of 2 files, kept {leaking[0]}:\n      {leaking[0]} (train, x)\n'
          f'      {leaking[1]} (val, x)\n') in summary
  assert 'x' not in manifest['splits']['val']['class_counts']
  assert sorted((f['relpath'], f['stage']) for f in _failures(out)) == [
      ('train/bees/twice.jpg', 'duplicate'), (leaking[1], 'duplicate')]


def _group(*names, split=('train', 'val'), label=('a', 'a'), kind='exact'):
  files = [dedup.DuplicateFile(name, s, l) for name, s, l in zip(names, split, label)]
  return dedup.group_of(kind, files, 'f' * 64 if kind == 'exact' else None)


def test_manifest_section_holds_counts_and_a_few_examples():
  groups = [_group(f'train/{i:02}.jpg', f'val/{i:02}.jpg') for i in range(12)]
  groups.append(_group('train/a.jpg', 'train/b.jpg', split=('train', 'train')))
  groups.append(_group('train/c.jpg', 'train/d.jpg', split=('train', 'train'), label=('a', 'b'),
                       kind='near'))
  fn = dedup._SectionFn()  # pylint: disable=protected-access
  halves = [fn.create_accumulator(), fn.create_accumulator()]
  for i, group in enumerate(groups):
    fn.add_input(halves[i % 2], group)
  section = fn.extract_output(fn.merge_accumulators(halves))
  assert section.exact == manifest_schema.DuplicateCounts(
      num_groups=13, num_files=26, num_dropped=0, num_leaking_groups=12, num_label_conflicts=0)
  assert section.near.num_groups == section.near.num_label_conflicts == 1
  assert [[f.file for f in g.files] for g in section.examples] == [
      ['train/c.jpg', 'train/d.jpg'], *[[f'train/{i:02}.jpg', f'val/{i:02}.jpg'] for i in range(4)]]
  lines = dedup.summary_lines(section)
  assert lines[:4] == ['  13 groups of byte-identical files (26 files): all written',
                       '    12 groups across splits (LEAKAGE)',
                       '  1 group of near-identical pictures (2 files): all written',
                       '    1 group with two labels (LABEL CONFLICT)']
  assert len(lines) == 4 + 3 * 3 + 1
  assert lines[-1] == '  every group (2 more leaking or conflicting shown there): duplicates.jsonl'
  assert max(len(line) for line in lines) <= 80
  empty = dedup.duplicates_section({})
  assert dedup.summary_lines(empty) == [] and empty.examples == []


# Different pictures of the shared data whose perceptual hashes lie within the default distance
# (bits apart at the job's defaults, bench/near_duplicates.py --parts=precision), under two
# class names: the hash alone grouped them (the flat frames at the old default, 10 bits; the
# photos at 14), as near-identical pictures with a LABEL CONFLICT.
DIFFERENT_PICTURES = {
    'a/ant_2019439677.jpg': 'hymenoptera/train/ants/2019439677_2db655d361.jpg',
    'b/ant_212100470.jpg': 'hymenoptera/val/ants/212100470_b485e7b7b9.jpg',  # 13 bits
    'a/chopsticks.JPEG': 'tiny_imagenet_val/images/val_495.JPEG',
    'b/freight_car.JPEG': 'tiny_imagenet_val/images/val_776.JPEG',  # 12 bits
    'a/green.tiff': 'messy/pillow__multipage.tiff',  # a flat green frame
    'b/red.jpg': 'messy/pillow__orientation_rectangle.jpg',  # flat red: 0 bits from green
    'a/white.png': 'messy/pillow__tRNS_null_1x1.png',  # flat white: 0 bits
    'b/gradient.jpg': 'messy/pillow__invalid-exif.jpg',  # a gray blur on black: 4 bits
}
# Copies: (file, its source in the shared data), the same picture in each group
COPIES = [
    {'black/frame.tif': 'messy/pillow__12in16bit.tif',  # two black frames: 0 bits
     'black/frame.jpg': 'messy/pillow__jfif_unit_cm.jpg'},
    {'dog/dog.1006.jpg': 'catdog_filenames/train/dog.1006.jpg',  # cropped: 13 bits
     'dog/dog.1149.jpg': 'catdog_filenames/train/dog.1149.jpg'},
    {'dog/dog.1076.jpg': 'catdog_filenames/train/dog.1076.jpg',  # rescaled: 2 bits
     'dog/dog.1098.jpg': 'catdog_filenames/train/dog.1098.jpg'},
]


def _confirming_input(tmp_path):
  """DIFFERENT_PICTURES and COPIES under one folder, and a sample photo with a copy 20% brighter
  and one at half size (re-encoded); returns (root, the groups of copies by path)."""
  root = tmp_path / 'in'
  for relpath, source in [*DIFFERENT_PICTURES.items(),
                          *(item for group in COPIES for item in group.items())]:
    data_set, rest = source.split('/', 1)
    (root / relpath).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(shared_data(data_set) / rest, root / relpath)
  photo = sorted((SAMPLES / 'bees').glob('*.jpg'))[2]
  (root / 'bee').mkdir()
  shutil.copy(photo, root / 'bee' / 'bee.jpg')
  with Image.open(photo) as image:
    ImageEnhance.Brightness(image).enhance(1.2).save(root / 'bee' / 'brighter.jpg', quality=90)
    image.reduce(2).save(root / 'bee' / 'smaller.jpg', quality=80)
  groups = [sorted(group) for group in COPIES]
  groups.append(['bee/bee.jpg', 'bee/brighter.jpg', 'bee/smaller.jpg'])
  return root, sorted(groups)


def test_keep_first_near_drops_only_copies_confirmed_on_the_pixels(tmp_path, capsys):
  root, copies = _confirming_input(tmp_path)
  out = tmp_path / 'out'
  assert convert(root, out, '--num_shards=1', '--dedup=keep_first_near',
                 '--max_failure_fraction=0') == 0
  summary = capsys.readouterr().err
  near = [g for g in _duplicates(out) if g['kind'] == 'near']
  assert sorted(_names(g) for g in near) == copies
  for group in near:  # the confirmation is kept with the group
    assert near_duplicates.MIN_SIMILARITY <= group['similarity'] <= 1
    assert 0 <= group['hash_distance'] <= near_duplicates.DEFAULT_DISTANCE
    assert group['kept'] == group['files'][0]['file'] and not group['label_conflict']
  # every different picture is written; of each group of copies, the first by path only
  written = {record['image/filename'].decode() for _, record in all_records(out)}
  dropped = {name for group in copies for name in group[1:]}
  assert written == set(DIFFERENT_PICTURES) | {group[0] for group in copies}
  failures = {f['relpath']: f for f in _failures(out)}
  assert set(failures) == dropped
  assert all(f['stage'] == 'duplicate' and 'confirmed on the pixels' in f['reason']
             for f in failures.values())
  section = manifest_of(out)['duplicates']['near']
  assert section['num_groups'] == len(copies) and section['num_label_conflicts'] == 0
  assert section['num_dropped'] == len(dropped)
  assert 'LABEL CONFLICT' not in summary


@pytest.mark.slow
def test_a_night_converts_again_a_record_whose_measures_lack_the_pixels(tmp_path):
  root, copies = _confirming_input(tmp_path)
  for relpath in DIFFERENT_PICTURES:  # the photos and copies are enough here
    (root / relpath).unlink()
  out = tmp_path / 'out'
  images = sum(1 for path in root.rglob('*') if path.is_file())
  assert convert(root, out, '--run_date=2026-11-18', '--num_shards=1') == 0
  # an index of a version that kept no pixels with the measures
  index = out / 'dt=2026-11-18' / 'images.jsonl'
  entries = [json.loads(line) for line in index.read_text().splitlines()]
  for entry in entries:
    del entry['measures']['pixels']
  index.write_text(''.join(json.dumps(entry, sort_keys=True) + '\n' for entry in entries))
  assert convert(root, out, '--run_date=2026-11-19', '--num_shards=1') == 0
  night = manifest_of(out / 'dt=2026-11-19')['incremental']
  assert night['converted'] == images and night['reused'] == 0
  # the next night reuses every record with its pixels, and finds the same groups from them
  assert convert(root, out, '--run_date=2026-11-20', '--num_shards=1') == 0
  night = manifest_of(out / 'dt=2026-11-20')['incremental']
  assert night['reused'] == images and night['converted'] == 0
  for date in ('2026-11-19', '2026-11-20'):
    near = [g for g in _duplicates(out / f'dt={date}') if g['kind'] == 'near']
    assert sorted(_names(g) for g in near) == copies, date
