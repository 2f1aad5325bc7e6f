"""Label sources end to end on real data sets: file names, label files, pinned label maps."""

import collections
import json
import shutil

import pytest

from tests.helpers import SAMPLES, all_records, convert, manifest_of, shared_data


@pytest.mark.slow
def test_labels_from_file_names_catdog(tmp_path):
  out = tmp_path / 'out'
  assert convert(shared_data('catdog_filenames'), out,
                 r'--label_source=filename:^([a-z]+)\.\d+\.jpg$', '--num_shards=2') == 0
  records = [record for _, record in all_records(out)]
  assert len(records) == 300
  for record in records:
    name = record['image/filename'].decode().split('/')[-1]
    assert record['image/class/text'].decode() == name.split('.')[0]
  assert (out / 'labels.txt').read_text() == 'cat\ndog\n'


@pytest.mark.slow
def test_file_name_not_matching_the_regex_is_a_failure(tmp_path):
  out = tmp_path / 'out'
  assert convert(SAMPLES, out, r'--label_source=filename:^(?P<label>\d)\d*_[0-9a-f]+\.jpg$',
                 '--max_failure_fraction=1', '--num_shards=1') == 0
  failures = [json.loads(l) for l in (out / 'failures.jsonl').read_text().splitlines()]
  matched = {r['image/filename'].decode() for r in [record for _, record in all_records(out)]}
  assert failures and all(f['stage'] == 'label' and 'does not match' in f['reason']
                          for f in failures)
  assert len(failures) + len(matched) == 48


@pytest.mark.slow
def test_labels_from_tiny_imagenet_annotation_file(tmp_path):
  source = shared_data('tiny_imagenet_val')
  expected = {}
  for line in (source / 'val_annotations.txt').read_text().splitlines():
    name, wnid = line.split('\t')[:2]
    expected[name] = wnid
  out = tmp_path / 'out'
  assert convert(source, out, f'--label_source=file:{source}/val_annotations.txt',
                 '--resize_mode=none', '--num_shards=2') == 0
  records = [record for _, record in all_records(out)]
  assert len(records) == 1000
  names = (out / 'labels.txt').read_text().split()
  assert names == sorted(set(expected.values()))
  for record in records:
    wnid = expected[record['image/filename'].decode().split('/')[-1]]
    assert record['image/class/text'].decode() == wnid
    assert names[record['image/class/label']] == wnid
  assert manifest_of(out)['failures_by_stage'] == {'list': 2}  # wnids.txt, words.txt


@pytest.mark.slow
def test_label_file_gaps_are_reported_both_ways(tmp_path):
  root = tmp_path / 'in'
  shutil.copytree(SAMPLES, root)
  photos = sorted(p.relative_to(root).as_posix() for p in root.rglob('*.jpg'))
  rows = ['filename,label'] + [f'{p},{p.split("/")[0]}' for p in photos[2:]]
  rows.append('ants/not_there.jpg,ants')
  labels = tmp_path / 'labels.csv'
  labels.write_text('\n'.join(rows) + '\n')
  out = tmp_path / 'out'
  assert convert(root, out, f'--label_source=file:{labels}', '--max_failure_fraction=0.1',
                 '--num_shards=1') == 0
  failures = {(f['relpath'], f['stage']) for f in map(
      json.loads, (out / 'failures.jsonl').read_text().splitlines())}
  assert failures == {(photos[0], 'label'), (photos[1], 'label'),
                      ('ants/not_there.jpg', 'missing')}
  manifest = manifest_of(out)
  assert manifest['num_examples'] == 46 and manifest['num_failures'] == 2


def test_integer_labels_are_kept_as_class_ids(tmp_path):
  root = tmp_path / 'in'
  shutil.copytree(SAMPLES, root)
  lines = [f'{p.name} {3 if p.parent.name == "ants" else 5}' for p in root.rglob('*.jpg')]
  (tmp_path / 'val.txt').write_text('\n'.join(lines) + '\n')
  out = tmp_path / 'out'
  assert convert(root, out, f'--label_source=file:{tmp_path}/val.txt', '--num_shards=1') == 0
  assert (out / 'labels.txt').read_text().split() == ['0', '1', '2', '3', '4', '5']
  for record in [record for _, record in all_records(out)]:
    folder = record['image/filename'].decode().split('/')[0]
    assert record['image/class/label'] == (3 if folder == 'ants' else 5)


@pytest.mark.slow
def test_label_map_pins_ids_and_strict_labels_refuses_new_classes(tmp_path):
  pinned = tmp_path / 'labels.txt'
  pinned.write_text('bees\nwasps\n')
  out = tmp_path / 'out'
  assert convert(SAMPLES, out, f'--label_map={pinned}', '--num_shards=1') == 0
  assert (out / 'labels.txt').read_text() == 'bees\nwasps\nants\n'
  ids = collections.Counter((r['image/class/text'], r['image/class/label'])
                            for r in [record for _, record in all_records(out)])
  assert ids == {(b'bees', 0): 24, (b'ants', 2): 24}

  strict = tmp_path / 'strict'
  assert convert(SAMPLES, strict, f'--label_map={pinned}', '--strict_labels',
                 '--num_shards=1') == 1
  manifest = manifest_of(strict)
  assert manifest['failures_by_stage'] == {'label': 24} and manifest['status'] == 'failed'
  assert (strict / 'labels.txt').read_text() == 'bees\nwasps\n'


def _tiny_imagenet_subset_with_splits(tmp_path, count=60):
  """The first ``count`` Tiny ImageNet val images (copied) and a CSV label file with a
  split column chosen by index: {relpath: (wnid, split)} and the CSV's path."""
  source = shared_data('tiny_imagenet_val')
  root = tmp_path / 'in' / 'images'
  root.mkdir(parents=True)
  expected = {}
  for index, line in enumerate((source / 'val_annotations.txt').read_text().splitlines()[:count]):
    name, wnid = line.split('\t')[:2]
    shutil.copy(source / 'images' / name, root / name)
    expected[f'images/{name}'] = (wnid, ('train', 'val', 'test')[index % 3])
  labels = tmp_path / 'labels.csv'
  labels.write_text('filename,label,split\n' + ''.join(
      f'{relpath},{wnid},{split}\n' for relpath, (wnid, split) in expected.items()))
  return tmp_path / 'in', labels, expected


@pytest.mark.slow
def test_csv_split_column_assigns_each_image_its_split(tmp_path):
  root, labels, expected = _tiny_imagenet_subset_with_splits(tmp_path)
  # two lines with a bad split: each is a failure of its image, at stage split
  rows = labels.read_text().splitlines()
  bad = {rows[1].split(',')[0]: 'bad-name', rows[2].split(',')[0]: ''}
  rows[1] = rows[1].rsplit(',', 1)[0] + ',bad-name'
  rows[2] = rows[2].rsplit(',', 1)[0] + ','
  labels.write_text('\n'.join(rows) + '\n')
  out = tmp_path / 'out'
  assert convert(root, out, f'--label_source=file:{labels}', '--resize_mode=none',
                 '--num_shards=1') == 0

  manifest = manifest_of(out)
  assert manifest['split_source'] == 'label_file'
  assert sorted(manifest['splits']) == ['test', 'train', 'val']
  names = (out / 'labels.txt').read_text().split()
  records = list(all_records(out))
  assert len(records) == len(expected) - len(bad)
  for split, record in records:
    wnid, expected_split = expected[record['image/filename'].decode()]
    assert split == expected_split
    assert record['image/class/text'].decode() == wnid
    assert names[record['image/class/label']] == wnid
  failures = [json.loads(l) for l in (out / 'failures.jsonl').read_text().splitlines()]
  assert {f['relpath']: f['stage'] for f in failures} == {relpath: 'split' for relpath in bad}
  assert any("'bad-name'" in f['reason'] for f in failures)
  assert any('empty' in f['reason'] for f in failures)


def test_csv_split_column_is_checked_at_launch(tmp_path, caplog):
  root, labels, _ = _tiny_imagenet_subset_with_splits(tmp_path, count=6)
  # --splits contradicts the column; --num_shards must name the column's splits
  assert convert(root, tmp_path / 'a', f'--label_source=file:{labels}',
                 '--splits=train=0.5,val=0.5') == 2
  assert 'has a split column' in caplog.text
  assert convert(root, tmp_path / 'b', f'--label_source=file:{labels}',
                 '--num_shards=train=2,val=1') == 2
  assert "missing ['test']" in caplog.text
  assert not (tmp_path / 'a').exists() and not (tmp_path / 'b').exists()


def _last_reason(caplog) -> str:
  """The run's last line, 'run failed: REASON', as REASON."""
  message = caplog.records[-1].getMessage()
  assert message.startswith('run failed: '), message
  return message[len('run failed: '):]


@pytest.mark.slow
def test_a_run_that_ends_with_one_class_fails_and_names_the_flag_to_try(tmp_path, caplog):
  # Tiny ImageNet's layout: every photo in images/, the classes in val_annotations.txt. The
  # default --label_source=directory gives all of them the class 'images'.
  source = shared_data('tiny_imagenet_val')
  root = tmp_path / 'in'
  (root / 'images').mkdir(parents=True)
  lines = (source / 'val_annotations.txt').read_text().splitlines()[:40]
  for line in lines:
    name = line.split('\t')[0]
    shutil.copy(source / 'images' / name, root / 'images' / name)
  (root / 'val_annotations.txt').write_text('\n'.join(lines) + '\n')
  flags = ('--image_size=32', '--num_shards=1')
  out = tmp_path / 'out'
  assert convert(root, out, *flags) == 1
  reason = _last_reason(caplog)
  assert reason.startswith("only one class, 'images' (40 examples)"), reason
  assert '--label_source=file:PATH' in reason and '--allow_single_class' in reason, reason
  manifest = manifest_of(out)
  assert manifest['status'] == 'failed' and manifest['error'] == reason
  assert not (out / '_SUCCESS').exists()
  # the label file, as the reason says, gives the classes; one class on purpose is allowed
  labelled = tmp_path / 'labelled'
  assert convert(root, labelled, f'--label_source=file:{root}/val_annotations.txt', *flags) == 0
  assert len(manifest_of(labelled)['classes']) > 20
  single = tmp_path / 'single'
  assert convert(root, single, '--allow_single_class', *flags) == 0
  assert manifest_of(single)['classes'] == ['images'] and (single / '_SUCCESS').exists()


def test_a_run_whose_every_input_fails_at_the_label_stage_fails_with_the_reasons(tmp_path,
                                                                                 caplog):
  # a regex written for another data set's names (cat.12.jpg) on hymenoptera's photos, under a
  # --max_failure_fraction that lets every input fail: no example, no class
  out = tmp_path / 'out'
  assert convert(shared_data('hymenoptera') / 'val', out,
                 r'--label_source=filename:^([a-z]+)\.\d+\.jpg$', '--max_failure_fraction=1',
                 '--image_size=32', '--num_shards=1') == 1
  reason = _last_reason(caplog)
  assert reason.startswith('no class: none of the 153 image inputs became an example'), reason
  assert 'label: file name does not match --label_source regex' in reason and '(153, e.g. ' in reason
  assert 'check its group' in reason, reason
  assert manifest_of(out)['error'] == reason and not (out / '_SUCCESS').exists()
