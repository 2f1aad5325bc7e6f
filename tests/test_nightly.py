"""The nightly job (--run_date): three nights over a growing folder of real photos, then the
ways a night goes wrong (failure, rerun, vanished class, leftovers of a killed run)."""

import collections
import hashlib
import json
import os
import pathlib
import shutil

import pytest

from tests.helpers import all_records, convert, manifest_of, shared_data

NIGHTS = ('2026-11-18', '2026-11-19', '2026-11-20')
FLAGS = ('--image_size=48', '--resize_mode=center_crop', '--splits=train=0.75,validation=0.25',
         '--num_shards=2')


def _link(source: pathlib.Path, target: pathlib.Path) -> None:
  """Puts a copy of ``source`` at ``target`` (a new file: its own size and time)."""
  target.parent.mkdir(parents=True, exist_ok=True)
  if target.is_symlink() or target.exists():
    target.unlink()
  shutil.copyfile(source, target)


def _records(run_dir) -> dict:
  """image/filename -> (split, class id, class name, source sha256) over a run's records."""
  return {r['image/filename'].decode(): (split, r['image/class/label'],
                                          r['image/class/text'].decode(),
                                          r['image/key/sha256'].decode())
          for split, r in all_records(run_dir)}


@pytest.fixture(scope='module')
def nights(tmp_path_factory):
  """Runs three nights; returns (input dir, output root, {date: records}, {date: manifest})."""
  hymenoptera = shared_data('hymenoptera')
  ants = sorted((hymenoptera / 'train' / 'ants').glob('*.jpg'))
  bees = sorted((hymenoptera / 'train' / 'bees').glob('*.jpg'))
  tmp = tmp_path_factory.mktemp('nightly')
  images, root = tmp / 'images', tmp / 'out'
  # night 1: 12 ants, 12 bees
  for path in ants[:12]:
    _link(path, images / 'ants' / path.name)
  for path in bees[:12]:
    _link(path, images / 'bees' / path.name)
  records, manifests, contents = {}, {}, {}

  def night(date):
    assert convert(images, root, f'--run_date={date}', *FLAGS) == 0
    run_dir = root / f'dt={date}'
    records[date], manifests[date] = _records(run_dir), manifest_of(run_dir)
    contents[date] = _digests(run_dir)

  night(NIGHTS[0])
  # night 2: 6 ants added, 3 bees removed, a new class that sorts first ('aphids': its bytes
  # are bee photos, which is fine for a class id test)
  for path in ants[12:18]:
    _link(path, images / 'ants' / path.name)
  for path in bees[:3]:
    (images / 'bees' / path.name).unlink()
  for path in bees[30:34]:
    _link(path, images / 'aphids' / f'aphid_{path.name}')
  night(NIGHTS[1])
  # night 3: two ants change content under the same name, two ants removed, two bees added
  for name, replacement in zip([p.name for p in ants[4:6]], ants[40:42]):
    _link(replacement, images / 'ants' / name)
  for path in ants[6:8]:
    (images / 'ants' / path.name).unlink()
  for path in bees[20:22]:
    _link(path, images / 'bees' / path.name)
  night(NIGHTS[2])
  return images, root, records, manifests, contents


def _digests(run_dir: pathlib.Path) -> dict:
  """Relative path -> SHA-256 of every file of a published run."""
  return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(run_dir.rglob('*')) if p.is_file()}


@pytest.mark.slow
def test_each_night_is_published_and_latest_names_the_newest(nights):
  _, root, records, manifests, _ = nights
  assert (root / 'LATEST').read_text().strip() == f'dt={NIGHTS[-1]}'
  for date in NIGHTS:
    run_dir = root / f'dt={date}'
    assert (run_dir / '_SUCCESS').exists()
    assert manifests[date]['run_date'] == date
    assert manifests[date]['output_dir'] == str(run_dir)
    assert len(records[date]) == manifests[date]['num_examples']
    metrics = manifests[date]['metrics']  # Beam counters, queried when the run ended
    assert metrics['images_converted'] == metrics['images_read']
    assert metrics['images_converted'] + metrics.get('images_reused', 0) == len(records[date])
  assert not list((root / '_staging').rglob('*.tfrecord'))
  import imagerecords  # pylint: disable=import-outside-toplevel
  assert imagerecords.latest_run(str(root)) == str(root / f'dt={NIGHTS[-1]}')


def test_class_ids_never_change_and_new_classes_are_appended(nights):
  _, root, records, _, _ = nights
  labels = [(root / f'dt={d}' / 'labels.txt').read_text().split() for d in NIGHTS]
  assert labels[0] == ['ants', 'bees']
  assert labels[1] == labels[2] == ['ants', 'bees', 'aphids']  # appended, though it sorts first
  for date, names in zip(NIGHTS, labels):
    for _, class_id, name, _ in records[date].values():
      assert names[class_id] == name


def test_no_image_moves_between_splits(nights):
  _, _, records, _, _ = nights
  for before, after in zip(NIGHTS, NIGHTS[1:]):
    common = records[before].keys() & records[after].keys()
    assert len(common) > 20
    assert all(records[before][f][0] == records[after][f][0] for f in common)


def test_manifest_diff_counts_what_changed(nights):
  _, _, records, manifests, _ = nights
  assert manifests[NIGHTS[0]]['diff'] is None  # nothing to compare with on the first night
  for before, after in zip(NIGHTS, NIGHTS[1:]):
    old, new = records[before], records[after]
    diff = manifests[after]['diff']
    assert diff['previous_run'].endswith(f'dt={before}')
    changed = {f for f in old.keys() & new.keys() if old[f][3] != new[f][3]}
    assert diff['added'] == len(new.keys() - old.keys())
    assert diff['removed'] == len(old.keys() - new.keys())
    assert diff['changed'] == len(changed)
    assert diff['unchanged'] == len(old.keys() & new.keys()) - len(changed)
    assert diff['moved_split'] == diff['relabeled'] == 0
  assert manifests[NIGHTS[1]]['diff']['by_class'] == {
      'ants': {'added': 6}, 'bees': {'removed': 3}, 'aphids': {'added': 4}}
  assert manifests[NIGHTS[2]]['diff']['by_class'] == {
      'ants': {'changed': 2, 'removed': 2}, 'bees': {'added': 2}}


@pytest.mark.slow
def test_a_renamed_class_folder_is_reported_as_photos_that_moved_split(tmp_path):
  # the same photos (same SHA-256) under a renamed class folder: their paths, so their hash
  # splits, and their class change; the diff pairs them by digest, not only by path
  hymenoptera = shared_data('hymenoptera') / 'train'
  images, root = tmp_path / 'images', tmp_path / 'out'
  for name in ('ants', 'bees'):
    for path in sorted((hymenoptera / name).glob('*.jpg'))[:12]:
      _link(path, images / name / path.name)
  assert convert(images, root, f'--run_date={NIGHTS[0]}', *FLAGS) == 0
  (images / 'bees').rename(images / 'wasps')
  assert convert(images, root, f'--run_date={NIGHTS[1]}', *FLAGS) == 0
  split_before = {sha: split for split, _, _, sha in _records(root / f'dt={NIGHTS[0]}').values()}
  moved = collections.Counter(
      (split_before[sha], split) for file, (split, _, _, sha) in
      _records(root / f'dt={NIGHTS[1]}').items()
      if file.startswith('wasps/') and split_before[sha] != split)
  assert moved[('validation', 'train')] > 0  # the case as found: validation photos now train
  diff = manifest_of(root / f'dt={NIGHTS[1]}')['diff']
  assert diff['moved_split'] == sum(moved.values())
  assert diff['added'] == diff['removed'] == diff['renamed'] == diff['relabeled'] == 12
  assert diff['changed'] == 0 and diff['unchanged'] == 12
  assert diff['by_class'] == {
      'bees': {'removed': 12},
      'wasps': {'added': 12, 'renamed': 12, 'relabeled': 12,
                    'moved_split': sum(moved.values())}}


def test_published_runs_are_never_touched_by_later_nights(nights):
  _, root, _, _, contents = nights
  for date in NIGHTS:  # every file, byte for byte, as it was when its night ended
    assert _digests(root / f'dt={date}') == contents[date]


def test_later_nights_convert_only_what_changed(nights):
  _, _, _, manifests, _ = nights
  first = manifests[NIGHTS[0]]['incremental']
  assert first['reused'] == 0 and first['reused_from'] is None
  assert 'first night' in first['full_rebuild_reason']
  for before, after in zip(NIGHTS, NIGHTS[1:]):
    diff, night = manifests[after]['diff'], manifests[after]['incremental']
    assert night['reused_from'].endswith(f'dt={before}') and night['full_rebuild_reason'] is None
    assert night['reused'] == diff['unchanged'] > 20
    assert night['converted'] == diff['added'] + diff['changed']
    assert manifests[after]['metrics']['images_read'] == night['converted']


def _comparable(run_dir: pathlib.Path) -> dict:
  """The run's manifest less what two runs of the same input may differ in: timings, run
  times, counters, how the night was made, and the output root's path (the shards, ordered
  on the seeded key of each record, are the same)."""
  text = (run_dir / 'manifest.json').read_text().replace(str(run_dir.parent), 'ROOT')
  manifest = json.loads(text)
  manifest['options'].pop('full_rebuild')
  kept = {k: v for k, v in manifest.items()
          if k not in ('timings', 'created_utc', 'metrics', 'step_msecs', 'incremental')}
  return kept


def _split_records(run_dir) -> dict:
  """split -> sorted serialized records: what a split holds, whatever the shard order."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  manifest = manifest_of(run_dir)
  return {split: sorted(r for shard in info['shards']
                        for r in tf.data.TFRecordDataset(str(run_dir / shard['file'])
                                                         ).as_numpy_iterator())
          for split, info in manifest['splits'].items()}


@pytest.mark.slow
def test_an_incremental_night_holds_what_a_full_rebuild_holds(nights, tmp_path):
  images, root, _, _, _ = nights
  rebuilt_root = tmp_path / 'rebuilt'
  shutil.copytree(root / f'dt={NIGHTS[1]}', rebuilt_root / f'dt={NIGHTS[1]}')
  assert convert(images, rebuilt_root, f'--run_date={NIGHTS[2]}', '--full_rebuild',
                 *FLAGS) == 0
  incremental, rebuilt = root / f'dt={NIGHTS[2]}', rebuilt_root / f'dt={NIGHTS[2]}'
  assert manifest_of(rebuilt)['incremental']['full_rebuild_reason'] == '--full_rebuild'
  assert manifest_of(rebuilt)['incremental']['reused'] == 0
  for name in ('labels.txt', 'images.jsonl', 'failures.jsonl'):
    assert (incremental / name).read_bytes() == (rebuilt / name).read_bytes(), name
  assert _comparable(incremental) == _comparable(rebuilt)
  assert _split_records(incremental) == _split_records(rebuilt)
  # reused records take the place a full rebuild gives them: the same shard files, byte for byte
  shards = [shard['file'] for info in manifest_of(rebuilt)['splits'].values()
            for shard in info['shards']]
  assert len(shards) == 4
  for name in shards:
    assert (incremental / name).read_bytes() == (rebuilt / name).read_bytes(), name


@pytest.mark.slow
def test_a_changed_setting_rebuilds_the_night_fully(nights, tmp_path):
  images, root, _, _, _ = nights
  other = tmp_path / 'out'
  shutil.copytree(root / f'dt={NIGHTS[2]}', other / f'dt={NIGHTS[2]}')
  assert convert(images, other, '--run_date=2026-11-23', '--jpeg_quality=80', *FLAGS) == 0
  night = manifest_of(other / 'dt=2026-11-23')['incremental']
  assert night['reused'] == 0 and night['reused_from'] is None
  assert 'jpeg_quality 90 -> 80' in night['full_rebuild_reason']
  assert night['converted'] == manifest_of(other / 'dt=2026-11-23')['num_examples']


@pytest.mark.slow
def test_statistics_of_an_incremental_night_equal_a_full_rebuilds(nights, tmp_path):
  """--stats: reused training images bring their pixel sums from the previous index."""
  images, _, _, _, _ = nights
  first = tmp_path / 'first'
  assert convert(images, first, '--run_date=2026-11-25', '--stats', *FLAGS) == 0
  ant = sorted((images / 'ants').iterdir())[0]
  shutil.copyfile(ant, images / 'ants' / 'zz_new_ant.jpg')  # one image to convert
  try:
    manifests = {}
    for mode in ('incremental', 'full'):
      root = tmp_path / mode
      shutil.copytree(first, root)
      flags = ['--full_rebuild'] if mode == 'full' else []
      assert convert(images, root, '--run_date=2026-11-26', '--stats', *flags, *FLAGS) == 0
      manifests[mode] = manifest_of(root / 'dt=2026-11-26')
  finally:
    (images / 'ants' / 'zz_new_ant.jpg').unlink()
  assert manifests['incremental']['incremental']['converted'] == 1
  assert manifests['incremental']['incremental']['reused'] == manifests['full']['num_examples'] - 1
  assert manifests['incremental']['statistics'] == manifests['full']['statistics']
  assert manifests['full']['statistics']['num_pixels'] > 0


@pytest.mark.slow
def test_a_changed_mask_converts_its_image_again(tmp_path):
  """--masks: an image is unchanged only while its mask is too; a reused record keeps its
  mask's class counts."""
  voc = tmp_path / 'voc'
  shutil.copytree(shared_data('segmentation/voc_palette'), voc)
  root = tmp_path / 'out'
  flags = ('--masks=voc', '--num_shards=1', '--splits=train=0.5,validation=0.5')
  assert convert(voc, root, '--run_date=2026-11-20', *flags) == 0
  mask = voc / 'SegmentationClass' / '2011_000006.png'
  mask.write_bytes(mask.read_bytes() + b'\0')  # other bytes (after IEND), the same pixels
  assert convert(voc, root, '--run_date=2026-11-21', *flags) == 0
  night = manifest_of(root / 'dt=2026-11-21')
  assert (night['incremental']['reused'], night['incremental']['converted']) == (2, 1)
  assert night['num_examples'] == 3
  # the reused records' mask classes come from images.jsonl: the class counts are night 1's
  # (masks holding 3, 4 and 3 classes)
  first = manifest_of(root / 'dt=2026-11-20')
  assert {name: split['class_counts'] for name, split in night['splits'].items()} == {
      name: split['class_counts'] for name, split in first['splits'].items()}
  assert sum(sum(split['class_counts'].values()) for split in first['splits'].values()) == 10


@pytest.mark.slow
def test_a_failed_night_publishes_nothing_and_keeps_latest(nights, tmp_path):
  images, root, _, _, _ = nights
  broken = tmp_path / 'images'
  shutil.copytree(images, broken, symlinks=True)
  (broken / 'ants' / 'truncated.jpg').write_bytes(
      (images / 'ants' / sorted(os.listdir(images / 'ants'))[0]).read_bytes()[:300])
  assert convert(broken, root, '--run_date=2026-11-21', '--max_failure_fraction=0',
                 *FLAGS) == 1
  assert (root / 'LATEST').read_text().strip() == f'dt={NIGHTS[-1]}'
  assert not (root / 'dt=2026-11-21').exists()
  staged = root / '_staging' / 'dt=2026-11-21'
  assert json.loads((staged / 'manifest.json').read_text())['status'] == 'failed'
  assert not (staged / '_SUCCESS').exists()


@pytest.mark.slow
def test_a_vanished_class_fails_the_night_under_strict_labels(nights, tmp_path):
  images, root, _, _, _ = nights
  fewer = tmp_path / 'images'
  shutil.copytree(images, fewer, symlinks=True)
  shutil.rmtree(fewer / 'aphids')
  assert convert(fewer, root, '--run_date=2026-11-22', '--strict_labels', *FLAGS) == 1
  manifest = json.loads((root / '_staging' / 'dt=2026-11-22' / 'manifest.json').read_text())
  assert 'aphids' in manifest['error'] and 'strict_labels' in manifest['error']
  assert (root / 'LATEST').read_text().strip() == f'dt={NIGHTS[-1]}'


@pytest.mark.slow
def test_rerunning_a_published_date(nights):
  images, root, _, manifests, _ = nights
  date = NIGHTS[-1]
  assert convert(images, root, f'--run_date={date}', *FLAGS) == 2  # refused: published
  # a killed run of the same date left files in staging (named by its output record): the
  # rerun clears them
  _stage(root / '_staging' / f'dt={date}', ['train-00000-of-00009.tfrecord'], 'half a record')
  flags = [f for f in FLAGS if not f.startswith('--num_shards')] + ['--num_shards=1']
  assert convert(images, root, f'--run_date={date}', '--overwrite', *flags) == 0
  run_dir = root / f'dt={date}'
  assert sorted(p.name for p in run_dir.glob('*.tfrecord')) == [
      'train-00000-of-00001.tfrecord', 'validation-00000-of-00001.tfrecord']
  assert manifest_of(run_dir)['num_examples'] == manifests[date]['num_examples']
  assert (root / 'LATEST').read_text().strip() == f'dt={date}'


def _stage(folder: pathlib.Path, names, text='new') -> None:
  """Writes ``names`` into ``folder`` with the output record of the run that wrote them (which
  also names the publication's marker, as a dated run's does)."""
  from transforms.outputs import authorship  # pylint: disable=import-outside-toplevel
  folder.mkdir(parents=True, exist_ok=True)
  for name in names:
    (folder / name).write_text(text)
  authorship.write_record(str(folder), [*names, '_OLD_RUN_DELETED'], text, '0')


def test_publishing_again_after_a_retry_keeps_the_new_run(tmp_path):
  """Runners retry a failed bundle: a second attempt of the publication must not delete what
  the first one published, nor the earlier run's files twice over the new ones."""
  from transforms.outputs.publish import _PublishFn  # pylint: disable=import-outside-toplevel
  staging, published = tmp_path / '_staging' / 'dt=2026-11-21', tmp_path / 'dt=2026-11-21'
  _stage(published, ['train-00000-of-00009.tfrecord', 'manifest.json', '_SUCCESS'], 'old')
  _stage(staging, ['train-00000-of-00002.tfrecord', 'manifest.json'])
  publish = _PublishFn(str(tmp_path), str(staging), str(published))
  for _ in range(2):  # the first attempt, then a retry after it had finished its move
    assert list(publish.process({'run': 1})) == [{'run': 1}]
    assert sorted(os.listdir(published)) == [
        '.imagerecords', '_SUCCESS', 'manifest.json', 'train-00000-of-00002.tfrecord']
    assert (published / 'manifest.json').read_text() == 'new'
  # an attempt that died after deleting the earlier run, before moving anything
  shutil.rmtree(published)
  _stage(staging, ['train-00000-of-00002.tfrecord', 'manifest.json', '_OLD_RUN_DELETED'])
  list(publish.process({}))
  assert sorted(os.listdir(published)) == [
      '.imagerecords', '_SUCCESS', 'manifest.json', 'train-00000-of-00002.tfrecord']
  assert (tmp_path / 'LATEST').read_text().strip() == 'dt=2026-11-21'
