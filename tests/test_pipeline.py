"""End-to-end runs of the job on real photos, on the local runner."""

import collections
import hashlib
import json
import pathlib
import shutil

import pytest
from PIL import Image, ImageOps

from tests.helpers import (SAMPLES, all_records, convert, filename_splits, manifest_of,
                           read_records, shared_data)


def _longest_run(values):
  longest = run = 0
  previous = object()
  for value in values:
    run = run + 1 if value == previous else 1
    previous = value
    longest = max(longest, run)
  return longest


@pytest.fixture(scope='module')
def hymenoptera(tmp_path_factory):
  source = shared_data('hymenoptera')
  out = tmp_path_factory.mktemp('hymenoptera') / 'out'
  assert convert(source, out, '--num_shards=train=4,val=2', '--image_size=96') == 0
  return source, out


@pytest.mark.slow
def test_hymenoptera_every_file_once_in_its_split_with_its_folder_class(hymenoptera):
  source, out = hymenoptera
  expected = {}  # relpath -> (split, class)
  for path in source.rglob('*'):
    if path.is_file():
      relpath = path.relative_to(source).as_posix()
      split, label = relpath.split('/')[:2]
      expected[relpath] = (split, label)
  assert len(expected) == 398
  assert any(p.endswith('.gif') for p in expected) and any(' ' in p for p in expected)

  manifest = manifest_of(out)
  assert manifest['status'] == 'complete' and (out / '_SUCCESS').exists()
  assert (out / 'labels.txt').read_text().split('\n') == ['ants', 'bees', '']
  seen = collections.Counter()
  for split in ('train', 'val'):
    for records in read_records(out, split).values():
      for record in records:
        relpath = record['image/filename'].decode()
        seen[relpath] += 1
        assert expected[relpath] == (split, record['image/class/text'].decode())
        assert record['image/class/label'] == ['ants', 'bees'].index(expected[relpath][1])
  assert seen == collections.Counter(expected.keys())  # each exactly once
  assert manifest['splits']['train']['class_counts'] == {'ants': 124, 'bees': 121}
  assert manifest['splits']['val']['class_counts'] == {'ants': 70, 'bees': 83}


def test_hymenoptera_shards_and_sizes(hymenoptera):
  _, out = hymenoptera
  manifest = manifest_of(out)
  for split, count in (('train', 4), ('val', 2)):
    files = sorted(p.name for p in out.glob(f'{split}-*'))
    assert files == [f'{split}-{i:05d}-of-{count:05d}.tfrecord' for i in range(count)]
    shards = read_records(out, split)
    assert [s['num_examples'] for s in manifest['splits'][split]['shards']] == [
        len(shards[name]) for name in files]
    for records in shards.values():
      labels = [r['image/class/label'] for r in records]
      assert set(labels) == {0, 1}, 'a shard holds one class only'
      assert _longest_run(labels) <= 12, f'a run of {_longest_run(labels)} records of one class'
      for record in records:
        assert min(record['image/height'], record['image/width']) == 96  # shorter_side
        assert record['image/channels'] == 3 and record['image/format'] == b'jpeg'


@pytest.mark.slow
def test_hash_split_fractions_and_stability(tmp_path):
  source = shared_data('tiny_imagenet_val') / 'images'
  images = tmp_path / 'images'
  shutil.copytree(source, images)
  flags = ('--label_source=none', '--splits=train=0.7,validation=0.2,test=0.1',
           '--num_shards=1', '--resize_mode=none')
  assert convert(images, tmp_path / 'night1', *flags) == 0
  first = filename_splits(tmp_path / 'night1')
  assert len(first) == 1000
  counts = collections.Counter(first.values())
  for split, fraction in (('train', 0.7), ('validation', 0.2), ('test', 0.1)):
    assert abs(counts[split] / 1000 - fraction) < 0.04, counts

  removed = sorted(first)[::7]
  for name in removed:
    (images / pathlib.Path(name).name).unlink()
  assert convert(images, tmp_path / 'night2', *flags) == 0
  second = filename_splits(tmp_path / 'night2')
  assert set(second) == set(first) - set(removed)
  assert all(second[name] == first[name] for name in second)


def test_too_many_failures_fail_the_run_without_success(tmp_path):
  out = tmp_path / 'out'
  assert convert(shared_data('messy'), out, '--label_source=none') == 1
  manifest = manifest_of(out)
  assert manifest['status'] == 'failed'
  assert 'more than --max_failure_fraction=0.05' in manifest['error']
  assert not (out / '_SUCCESS').exists()


def test_refuses_an_earlier_runs_output_unless_overwrite(tmp_path, sample_dataset):
  out = tmp_path / 'out'
  shutil.copytree(sample_dataset, out)
  stale = out / 'train-00007-of-00008.tfrecord'  # of an earlier run of 8 shards, which
  stale.write_bytes(b'')                          # named it in the folder's output record
  record = out / '.imagerecords' / 'output.json'
  content = json.loads(record.read_text())
  record.write_text(json.dumps({**content, 'entries': content['entries'] + [stale.name]}))
  assert convert(SAMPLES, out, '--num_shards=2') == 2
  assert (out / '_SUCCESS').exists()  # untouched
  assert convert(SAMPLES, out, '--num_shards=2', '--overwrite') == 0
  assert not stale.exists()
  assert sorted(p.name for p in out.glob('train-*')) == [
      'train-00000-of-00002.tfrecord', 'train-00001-of-00002.tfrecord']


def test_sample_dataset_center_crop_and_manifest(sample_dataset):
  out = pathlib.Path(sample_dataset)
  manifest = manifest_of(out)
  assert manifest['num_examples'] == 48 and manifest['num_failures'] == 0
  assert sum(s['num_examples'] for s in manifest['splits'].values()) == 48
  for _, record in all_records(out):
    assert (record['image/height'], record['image/width']) == (64, 64)
    source = (SAMPLES / record['image/filename'].decode()).read_bytes()
    assert record['image/key/sha256'].decode() == hashlib.sha256(source).hexdigest()
  assert manifest['options']['image_size'] == 64
  assert manifest['tool']['name'] == 'imagerecords'


def test_resize_mode_none_keeps_the_upright_source_size(tmp_path):
  out = tmp_path / 'out'
  assert convert(SAMPLES, out, '--resize_mode=none', '--num_shards=1') == 0
  for _, record in all_records(out):
    with Image.open(SAMPLES / record['image/filename'].decode()) as source:
      upright = ImageOps.exif_transpose(source)
      assert (record['image/width'], record['image/height']) == upright.size


def test_a_file_name_that_is_not_utf8_is_reported_and_the_run_goes_on(tmp_path):
  images = tmp_path / 'images' / 'ants'
  images.mkdir(parents=True)
  photos = sorted((SAMPLES / 'ants').glob('*.jpg'))[:3]
  for photo in photos:
    shutil.copy(photo, images / photo.name)
  # a Latin-1 name, as old archives hold: b'caf\xe9.jpg' is not UTF-8
  with open(bytes(images) + b'/caf\xe9.jpg', 'wb') as handle:
    handle.write(photos[0].read_bytes())
  out = tmp_path / 'out'
  # one class folder: --allow_single_class (a run that ends with one class fails by default)
  assert convert(tmp_path / 'images', out, '--splits=train=1', '--allow_single_class') == 0
  assert {r['image/filename'].decode() for _, r in all_records(out)} == {
      f'ants/{p.name}' for p in photos}
  failures = (out / 'failures.jsonl').read_text().splitlines()
  assert len(failures) == 1 and 'caf\\\\xe9.jpg' in failures[0] and 'UTF-8' in failures[0]


def _working_folders(out: pathlib.Path) -> None:
  for folder in ('.staging-write/train', '.staging-tft/tftransform_tmp', '.staging-sorted'):
    (out / folder).mkdir(parents=True)
    (out / folder / 'records-00000-of-00001').write_bytes(b'half')


def test_a_dead_runs_working_folders_are_replaced_without_overwrite(tmp_path):
  from pipeline import outputs  # pylint: disable=import-outside-toplevel
  from transforms.files import working_folders  # pylint: disable=import-outside-toplevel
  from transforms.outputs import authorship  # pylint: disable=import-outside-toplevel
  # the launch records what it writes before it writes anything; then it is killed: no
  # _SUCCESS, no manifest, so the next run replaces its leftovers without --overwrite
  outputs.prepare_output_dir(str(tmp_path), False, working_folders.WORKING_FOLDERS, 'dead')
  _working_folders(tmp_path)
  outputs.prepare_output_dir(str(tmp_path), overwrite=False)
  assert [p.name for p in tmp_path.iterdir()] == ['.imagerecords']
  # the same folders, named by no record (the last one names nothing): not the job's to delete
  _working_folders(tmp_path)
  with pytest.raises(authorship.NotWrittenByThisJob, match='.staging-write'):
    outputs.prepare_output_dir(str(tmp_path), overwrite=True)
  assert (tmp_path / '.staging-write' / 'train' / 'records-00000-of-00001').exists()
