"""The PTransforms one by one, on TestPipeline(runner='FnApiRunner'), and option parsing."""

import pathlib
import shutil

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline import options as opts
from tests.helpers import SAMPLES
from transforms.batches import encode_entries
from transforms.elements import FAILURES_TAG, LabeledImage, SourceFile
from transforms.files.working_folders import SORTED_LINES_FOLDER
from transforms.inputs.labels import AssignLabels, ClassNames
from transforms.inputs.listing import ListImageFiles
from transforms.inputs import splits
from transforms.inputs.splits import (AssignSplits, ShuffleOrder, bucket_count, hash_split,
                                      key_range, shuffle_bucket, shuffle_key,
                                      unit_interval_hash)


def _pipeline():
  return TestPipeline(runner='FnApiRunner')


def test_list_image_files_recursive_case_insensitive_hidden_ignored(tmp_path):
  root = tmp_path / 'in'
  (root / 'ants' / 'deep').mkdir(parents=True)
  photo = next(SAMPLES.glob('ants/*.jpg'))
  shutil.copy(photo, root / 'ants' / 'UPPER.JPG')
  shutil.copy(photo, root / 'ants' / 'deep' / 'a b.jpeg')
  shutil.copy(photo, root / 'ants' / '.hidden.jpg')
  (root / '.DS_Store').write_bytes(b'\0\0\0\1Bud1')
  (root / 'ants' / 'notes.txt').write_text('not an image')
  with _pipeline() as p:
    listed = p | ListImageFiles(str(root))
    assert_that(listed.files | beam.Map(lambda f: f.relpath),
                equal_to(['ants/UPPER.JPG', 'ants/deep/a b.jpeg']), label='files')
    assert_that(listed[FAILURES_TAG] | beam.Map(lambda f: (f.relpath, f.stage)),
                equal_to([('ants/notes.txt', 'list')]), label='skipped')


def test_labels_and_splits_from_folders():
  sources = [SourceFile(f'/in/{r}', r) for r in (
      'train/ants/1.jpg', 'val/bees/2.jpg', 'train/3.jpg', 'other/ants/4.jpg')]
  with _pipeline() as p:
    labeled = p | beam.Create(sources) | AssignLabels('directory', ('train', 'val'))
    split = labeled.labeled | AssignSplits(split_folders=('train', 'val'))
    assert_that(split.split | beam.Map(lambda i: (i.relpath, i.label, i.split)), equal_to([
        ('train/ants/1.jpg', 'ants', 'train'), ('val/bees/2.jpg', 'bees', 'val')]),
                label='images')
    assert_that(labeled[FAILURES_TAG] | beam.Map(lambda f: (f.relpath, f.stage)),
                equal_to([('train/3.jpg', 'label')]), label='label failures')
    assert_that(split[FAILURES_TAG] | beam.Map(lambda f: (f.relpath, f.stage)),
                equal_to([('other/ants/4.jpg', 'split')]), label='split failures')
    assert_that(labeled.labeled | ClassNames(), equal_to([['ants', 'bees']]), label='classes')


def test_shuffle_order_keeps_every_element():
  images = [LabeledImage(f'/in/{i}', f'c{i % 2}/{i}.jpg', f'c{i % 2}', 'train')
            for i in range(200)]
  with _pipeline() as p:
    one_bucket = p | 'one' >> beam.Create(images) | 'shuffle in one' >> ShuffleOrder(seed=3)
    assert_that(one_bucket, equal_to(images), label='one bucket')
    # 200 images, 16 per bucket: 13 buckets, each emitted in hash order
    many = p | 'many' >> beam.Create(images) | 'shuffle in 13' >> ShuffleOrder(
        seed=3, images_per_bucket=16)
    assert_that(many, equal_to(images), label='13 buckets')


def test_shuffle_buckets_are_stretches_of_the_seeded_key_order():
  paths = [f'c{i % 3}/{i}.jpg' for i in range(500)]
  keys = sorted(shuffle_key(path, 5) for path in paths)
  assert len(set(keys)) == 500 and all(len(key) == 16 for key in keys)
  buckets = [shuffle_bucket(key, 7) for key in keys]
  assert buckets == sorted(buckets) and set(buckets) == set(range(7))  # each a stretch
  assert shuffle_bucket(bytes(16), 7) == 0 and shuffle_bucket(b'\xff' * 16, 7) == 6
  # the key's first 8 bytes are unit_interval_hash's; another seed, another order
  path = paths[0]
  assert int.from_bytes(shuffle_key(path, 5)[:8], 'big') / 2**64 == unit_interval_hash(
      path, 'shuffle:5:')
  assert sorted(paths, key=lambda p: shuffle_key(p, 5)) != sorted(
      paths, key=lambda p: shuffle_key(p, 6))


def test_shuffle_key_ranges_are_regrouped_into_sorted_buckets():
  # what ShuffleOrder's steps do, bundle by bundle: key ranges first (the count unknown), then
  # the count splits each range's lists into buckets, each emitted in key order
  images = [LabeledImage(f'/in/{i}', f'c{i % 3}/{i}.jpg', f'c{i % 3}', 'train')
            for i in range(499)]
  images.append(LabeledImage('/in/m.jpg', 'm.jpg', None, 'train', 'ab' * 32,  # travels too
                             SourceFile('/in/m.png', 'm.png', None, 12, 1.5), '9:2.5+12:1.5'))
  entries_of = splits._RangeEntries(5)
  ranges = {}
  for bundle in (images[:200], images[200:]):  # each bundle sends one list per range
    per_range = {}
    for image in bundle:
      for kr, entry in entries_of(image):
        per_range.setdefault(kr, []).append(entry)
    for kr, entries in per_range.items():
      ranges.setdefault(kr, []).append(encode_entries(entries))
  buckets = {}
  for kr, lists in ranges.items():
    for bucket, entries in splits._by_bucket((kr, lists), len(images), 16, 16384):
      buckets.setdefault(bucket, []).append(entries)
  assert sorted(buckets) == list(range(bucket_count(500, 16, 16384)))  # 32 buckets
  emitted = []
  for bucket, lists in buckets.items():
    out = list(splits._in_key_order((bucket, lists)))
    keys = [shuffle_key(image.relpath, 5) for image in out]
    assert keys == sorted(keys)
    assert {shuffle_bucket(key, 32) for key in keys} == {bucket}
    emitted += out
  assert sorted(emitted) == sorted(images)
  assert [type(image.mask) for image in emitted if image.mask] == [SourceFile]  # not a tuple
  keys = sorted(shuffle_key(image.relpath, 5) for image in images)
  assert [key_range(key) for key in keys] == sorted(key_range(key) for key in keys)
  assert key_range(bytes(16)) == 0 and key_range(b'\xff' * 16) == splits.KEY_RANGES - 1


def test_shuffle_bucket_count_grows_with_the_images():
  assert bucket_count(0, 256, 16384) == 1
  assert bucket_count(48, 256, 16384) == 1  # a small run: one bucket, a full shuffle
  assert bucket_count(257, 256, 16384) == 2
  assert bucket_count(1_281_167, 256, 16384) == 5005  # ImageNet: 5,005 parallel work items
  assert bucket_count(10**9, 256, 16384) == 16384


def test_hash_split_depends_only_on_the_path():
  fractions = [('train', 0.5), ('test', 0.5)]
  assert hash_split('a/b.jpg', fractions) == hash_split('a/b.jpg', list(fractions))
  assert {hash_split(f'{i}.jpg', fractions) for i in range(50)} == {'train', 'test'}


def test_split_and_shard_options():
  assert opts.parse_fractions('train=0.8,validation=0.2') == [('train', 0.8),
                                                              ('validation', 0.2)]
  for bad, words in (('train=0.8,val=0.3', 'sum to 1'), ('train', 'NAME=FRACTION'),
                     ('a-b=1', 'letters, digits'), ('t=x', 'not a number')):
    with pytest.raises(ValueError, match=words):
      opts.parse_fractions(bad)
  assert opts.parse_num_shards('3', ['train', 'val']) == {'train': 3, 'val': 3}
  assert opts.parse_num_shards('train=8,val=2', ['train', 'val']) == {'train': 8, 'val': 2}
  with pytest.raises(ValueError, match=r"missing \['val'\]"):
    opts.parse_num_shards('train=8', ['train', 'val'])
  with pytest.raises(ValueError, match='at least 1'):
    opts.parse_num_shards('0', ['train'])
  assert opts.resolve_splits('auto', ('train', 'val')) == (('train', 'val'), [])
  assert opts.resolve_splits('auto', ())[1] == [('train', 0.8), ('validation', 0.2)]
  with pytest.raises(ValueError, match='none of the split folders'):
    opts.resolve_splits('folders', ())


def test_bad_flags_exit_with_status_2_before_running(tmp_path, capsys):
  from pipeline.run import run  # pylint: disable=import-outside-toplevel
  assert run([f'--input_dir={SAMPLES}', f'--output_dir={tmp_path}/o', '--splits=a=0.5']) == 2
  assert run([f'--input_dir={SAMPLES}', f'--output_dir={tmp_path}/o', '--jpeg_quality=0']) == 2
  for source in ('dir', 'file', 'filename:^no_group$', 'filename:('):
    assert run([f'--input_dir={SAMPLES}', f'--output_dir={tmp_path}/o',
                f'--label_source={source}']) == 2
  assert not (tmp_path / 'o').exists()


def test_missing_input_dir_is_refused_at_launch(tmp_path):
  from pipeline.run import run  # pylint: disable=import-outside-toplevel
  assert run([f'--input_dir={tmp_path}/nothing', f'--output_dir={tmp_path}/o']) == 2
  assert not (tmp_path / 'o').exists()


def test_write_lines_streams_blocks_and_writes_empty_files(tmp_path):
  from transforms.files.textfiles import (read_text,  # pylint: disable=import-outside-toplevel
                                          write_lines)
  lines = [f'{i:07d} ' + 'é' * 200 for i in range(8000)]  # about 3 MiB: several blocks
  write_lines(str(tmp_path / 'many.jsonl'), iter(lines))
  assert read_text(str(tmp_path / 'many.jsonl')) == ''.join(line + '\n' for line in lines)
  write_lines(str(tmp_path / 'none.jsonl'), [])
  assert (tmp_path / 'none.jsonl').read_bytes() == b''


def test_write_sorted_lines_merges_runs_in_rounds_and_cleans_up(tmp_path):
  from transforms.files.sorted_lines import (  # pylint: disable=import-outside-toplevel
      WriteSortedLines)
  lines = [f'{{"file": "c{i % 7}/{(i * 7919) % 1000:04d} é.jpg"}}' for i in range(1000)]
  with _pipeline() as p:
    # 1,000 lines in runs of 30: 34 or more runs, merged 4 at a time: three rounds
    written = (p | beam.Create(lines) | WriteSortedLines(
        str(tmp_path / 'index.jsonl'), run_lines=30, fan_in=4))
    assert_that(written, equal_to([str(tmp_path / 'index.jsonl')]))
  assert (tmp_path / 'index.jsonl').read_text('utf-8') == ''.join(
      line + '\n' for line in sorted(lines))
  assert not (tmp_path / SORTED_LINES_FOLDER).exists()
  with _pipeline() as p:
    _ = p | beam.Create([]) | WriteSortedLines(str(tmp_path / 'empty.jsonl'))
  assert (tmp_path / 'empty.jsonl').read_bytes() == b''


def test_a_merge_run_again_after_it_completed_keeps_its_file(tmp_path):
  """The merge deletes its runs only once the file is whole: run again after that (a Flink
  region restart), it keeps the file; runs gone and no file is an error that says so."""
  from transforms.files import sorted_lines  # pylint: disable=import-outside-toplevel
  from transforms.files.textfiles import (read_text,  # pylint: disable=import-outside-toplevel
                                          write_lines)
  staging = tmp_path / SORTED_LINES_FOLDER / 'index.jsonl'
  staging.mkdir(parents=True)
  runs = []
  for number, lines in enumerate([['a', 'c'], ['b', 'd'], ['e']]):
    runs.append(str(staging / f'run-{number}'))
    write_lines(runs[-1], lines)
  path = str(tmp_path / 'index.jsonl')
  merge = sorted_lines._merge_and_tidy  # pylint: disable=protected-access
  assert merge(runs, path, str(staging), 2) == path
  assert read_text(path) == 'a\nb\nc\nd\ne\n' and not staging.exists()
  assert merge(runs, path, str(staging), 2) == path
  assert read_text(path) == 'a\nb\nc\nd\ne\n'
  pathlib.Path(path).unlink()
  with pytest.raises(FileNotFoundError, match='never written'):
    merge(runs, path, str(staging), 2)
