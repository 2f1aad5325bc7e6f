"""``python -m imagerecords.inspect``: passes sound output, names and locates each problem of
damaged output, and draws its pictures.

Most tests work on a copy of ``sample_dataset`` (tests/conftest.py: the bundled photos
converted by the job at 64 x 64, splits train (4 shards) and validation (2 shards)) and damage
it the way disks, copies and people do; the last two use real segmentation pairs from
../shared/data. Expected record indices come from the TFRecord framing
(``imagerecords.framing``), not from inspect itself.
"""

import collections
import io
import json
import pathlib
import shutil

import pytest
import tensorflow as tf
from PIL import Image

from imagerecords import contract
from imagerecords import framing
from imagerecords import inspect as inspect_lib
from imagerecords import pictures
from tests.helpers import convert, manifest_of, read_records, shared_data


@pytest.fixture
def dataset(sample_dataset, tmp_path) -> pathlib.Path:
  """A private copy of the converted sample photos, free to damage."""
  return pathlib.Path(shutil.copytree(sample_dataset, tmp_path / 'data'))


def _run(data_dir, tmp_path, capsys, *flags):
  """Runs the command line in-process; (exit status, stdout lines)."""
  status = inspect_lib.main([str(data_dir), '--out', str(tmp_path / 'pictures'), *flags])
  return status, capsys.readouterr().out.splitlines()


def _shard(data_dir, split, index):
  manifest = manifest_of(data_dir)
  return data_dir / manifest['splits'][split]['shards'][index]['file']


def _spans(path):
  with open(path, 'rb') as f:
    return list(framing.record_spans(f))


def test_sound_output_passes_with_table_and_pictures(dataset, tmp_path, capsys):
  status, lines = _run(dataset, tmp_path, capsys)
  assert status == 0, lines
  assert lines[-1] == 'OK'
  manifest = manifest_of(dataset)
  table = {line.split()[0]: line.split() for line in lines[:4]}
  assert table['split'][:4] == ['split', 'shards', 'examples', 'classes']
  for split, info in manifest['splits'].items():
    assert table[split][1:4] == [str(info['num_shards']), str(info['num_examples']), '2']
    assert table[split][-3:] == ['64', 'x', '64']  # center_crop at 64 px
  total = sum(info['num_examples'] for info in manifest['splits'].values())
  assert table['total'][2] == str(total)

  pictures = tmp_path / 'pictures'
  assert sorted(p.name for p in pictures.iterdir()) == [
      'class_counts.png', 'contact_sheet_train.png', 'contact_sheet_validation.png']
  for png in pictures.iterdir():
    with Image.open(png) as image:
      assert image.format == 'PNG' and image.width >= 300 and image.height >= 150


def test_contact_sheet_samples_come_from_every_shard(dataset):
  report = inspect_lib.inspect(str(dataset), samples=32)
  assert report.ok, report.problems
  names = report.class_names
  assert names == ['ants', 'bees']
  for split, info in manifest_of(dataset)['splits'].items():
    samples = report.splits[split].samples
    assert len(samples) == min(32, info['num_examples'])
    assert len({r.filename for r in samples}) == len(samples)
    # the first record of every shard is among the samples (round-robin over the shards)
    firsts = set()
    for shard in info['shards']:
      raw = next(iter(tf.data.TFRecordDataset(str(dataset / shard['file']))))
      firsts.add(inspect_lib.parse_record(raw.numpy()).filename)
    assert firsts <= {r.filename for r in samples}
    for record in samples:
      assert record.class_text == names[record.label]
      assert record.filename.split('/')[-2] == record.class_text  # class folders


def test_flipped_byte_is_located(dataset, tmp_path, capsys):
  shard = _shard(dataset, 'train', 1)
  data = bytearray(shard.read_bytes())
  middle = len(data) // 2
  data[middle] ^= 0x10
  shard.write_bytes(bytes(data))
  index = next(i for i, s in enumerate(_spans(shard))
               if s.offset <= middle < s.offset + s.frame_bytes)
  with pytest.raises(tf.errors.DataLossError):  # TensorFlow agrees the shard is damaged
    list(tf.data.TFRecordDataset(str(shard)))

  status, lines = _run(dataset, tmp_path, capsys)
  assert status == 1
  problems = lines[lines.index(next(l for l in lines if 'problem(s)' in l)) + 1:]
  assert len(problems) == 1, problems
  assert problems[0].startswith(f'{shard.name}: record {index} (byte ')
  assert 'checksum' in problems[0]


def test_corrupt_length_field_stops_the_walk_before_reading_a_body(dataset, tmp_path, capsys):
  shard = _shard(dataset, 'train', 3)
  spans = _spans(shard)
  data = bytearray(shard.read_bytes())
  data[spans[1].offset + 5] ^= 0x40  # record 1 now announces 2^46 more bytes than it holds
  shard.write_bytes(bytes(data))
  status, lines = _run(dataset, tmp_path, capsys)
  assert status == 1
  assert f'{shard.name}: record 1 (byte {spans[1].offset}): corrupt: the length field fails ' \
         'its checksum; the records after it cannot be located' in lines, lines


def test_truncated_shard_is_located(dataset, tmp_path, capsys):
  shard = _shard(dataset, 'validation', 0)
  spans = _spans(shard)
  shard.write_bytes(shard.read_bytes()[:-10])
  status, lines = _run(dataset, tmp_path, capsys)
  assert status == 1
  assert any(l.startswith(f'{shard.name}: record {len(spans) - 1} (byte '
                          f'{spans[-1].offset}): truncated') for l in lines), lines
  assert f'{shard.name}: {len(spans) - 1} records read before the damage; the manifest says ' \
         f'{len(spans)}' in lines


def test_missing_success_fails_even_without_verify(dataset, tmp_path, capsys):
  (dataset / contract.SUCCESS_FILE).unlink()
  for flags in ((), ('--no-verify',)):
    status, lines = _run(dataset, tmp_path, capsys, *flags)
    assert status == 1
    assert [l for l in lines if l.startswith('_SUCCESS')] == [
        '_SUCCESS: missing: the job that writes this directory is still running or failed; '
        'readers refuse it']


def test_no_verify_draws_and_reports_manifest_counts(dataset, tmp_path, capsys):
  status, lines = _run(dataset, tmp_path, capsys, '--no-verify', '--samples', '5')
  assert status == 0
  assert lines[-1] == 'OK (not verified: --no-verify)'
  report = inspect_lib.inspect(str(dataset), verify=False, samples=5)
  for split, info in manifest_of(dataset)['splits'].items():
    assert report.splits[split].num_examples == info['num_examples']
    assert len(report.splits[split].samples) == 5


def test_records_that_lie_are_named(dataset, tmp_path, capsys):
  """A wrong stored height and a class id outside labels.txt, in records whose checksums hold
  (rewritten by TensorFlow's own TFRecordWriter)."""
  shard = _shard(dataset, 'train', 2)
  records = [r.numpy() for r in tf.data.TFRecordDataset(str(shard))]
  tall = tf.train.Example.FromString(records[1])
  tall.features.feature[contract.IMAGE_HEIGHT].int64_list.value[0] = 65
  records[1] = tall.SerializeToString()
  stranger = tf.train.Example.FromString(records[2])
  stranger.features.feature[contract.CLASS_LABEL].int64_list.value[0] = 7
  records[2] = stranger.SerializeToString()
  records[3] = b'not a tf.train.Example at all'
  for index, cut in ((4, 0), (5, 1)):  # raw pixels: whole, then one byte short
    raw = tf.train.Example.FromString(records[index])
    feature = raw.features.feature
    pixels = tf.io.decode_jpeg(feature[contract.IMAGE_ENCODED].bytes_list.value[0]).numpy()
    feature[contract.IMAGE_ENCODED].bytes_list.value[0] = pixels.tobytes()[cut:]
    feature[contract.IMAGE_FORMAT].bytes_list.value[0] = contract.RAW_FORMAT.encode()
    records[index] = raw.SerializeToString()
  with tf.io.TFRecordWriter(str(shard)) as writer:
    for record in records:
      writer.write(record)
  spans = _spans(shard)

  status, lines = _run(dataset, tmp_path, capsys)
  assert status == 1
  mine = [l for l in lines if l.startswith(shard.name)]
  assert len(mine) == 4, lines
  assert mine[0].startswith(f'{shard.name}: record 1 (byte {spans[1].offset}) (')
  assert mine[0].endswith('): image decodes to 64x64x3, the record says 65x64x3')
  assert mine[1].startswith(f'{shard.name}: record 2 (byte {spans[2].offset}) (')
  assert mine[1].endswith('): class id 7 is not in labels.txt (2 classes, ids 0-1)')
  assert mine[2].startswith(f'{shard.name}: record 3 (byte {spans[3].offset}): not a '
                            'tf.train.Example')
  assert mine[3].startswith(f'{shard.name}: record 5 (byte {spans[5].offset}) (')
  assert mine[3].endswith('): raw image holds 12287 bytes, 64x64x3 needs 12288')


def test_counts_and_stray_shards_are_checked(dataset, tmp_path, capsys):
  manifest = manifest_of(dataset)
  manifest['splits']['train']['shards'][0]['num_examples'] += 1
  manifest['splits']['validation']['class_counts']['ants'] += 2
  (dataset / contract.MANIFEST_FILE).write_text(json.dumps(manifest))
  first = manifest['splits']['train']['shards'][0]
  shutil.copy(dataset / first['file'], dataset / 'train-00000-of-00008.tfrecord')

  status, lines = _run(dataset, tmp_path, capsys)
  assert status == 1
  count = first['num_examples']
  train = manifest['splits']['train']
  validation = manifest['splits']['validation']['class_counts']
  expected = [
      'train-00000-of-00008.tfrecord: a shard file the manifest does not list (left by another '
      'run?)',
      f'{first["file"]}: {count - 1} records, the manifest says {count}',
      f'manifest.json: split train: its shards list {train["num_examples"] + 1} records, '
      f'num_examples is {train["num_examples"]}',
      f'manifest.json: split validation: class counts differ (ants: {validation["ants"] - 2} '
      f'read, {validation["ants"]} listed)',
  ]
  assert lines[-len(expected):] == expected


def test_mask_overlay_on_a_real_voc_pair(tmp_path):
  """Colour per class index at half opacity, void (255) left as it was: a PASCAL VOC photo and
  its palette mask."""
  voc = shared_data('segmentation/voc_palette')
  jpeg = sorted((voc / 'JPEGImages').glob('*.jpg'))[0]
  png = voc / 'SegmentationClass' / (jpeg.stem + '.png')
  image = Image.open(jpeg).convert('RGB')
  mask = Image.open(png)
  assert mask.mode == 'P'
  blended = pictures.overlay_mask(image, mask)
  indices = mask.tobytes()
  colours = pictures.voc_colour_map()
  classes = sorted(set(indices) - {255})
  assert 255 in indices and len(classes) >= 2
  width = image.width
  for value in (255, *classes):
    position = indices.index(value)
    xy = (position % width, position // width)
    before, after = image.getpixel(xy), blended.getpixel(xy)
    if value == 255:
      assert after == before
    else:
      for b, c, a in zip(before, colours[value], after):
        assert abs(a - (b + (c - b) * 127 / 255)) <= 1

  # the record check: a palette PNG decodes to colours in TensorFlow, an 8-bit one to indices
  record = inspect_lib.Record(
      encoded=jpeg.read_bytes(), image_format='jpeg', height=image.height, width=image.width,
      channels=3, label=None, class_text=None, filename=f'JPEGImages/{jpeg.name}',
      mask=png.read_bytes())
  (problem,) = inspect_lib.check_record(record, [])
  assert problem.startswith(f'segmentation mask decodes to {image.height}x{image.width}x3, '
                            f'expected {image.height}x{image.width}x1 (a palette')
  indices_png = io.BytesIO()
  Image.frombytes('L', mask.size, indices).save(indices_png, 'PNG')
  record.mask = indices_png.getvalue()
  assert inspect_lib.check_record(record, []) == []

  # and the sheet that inspect draws for records holding masks
  split = inspect_lib.SplitReport('train', num_shards=1, num_examples=1, samples=[record])
  sheet = pictures.segmentation_sheet(split, thumb=64)
  buffer = io.BytesIO()
  sheet.save(buffer, 'PNG')
  assert sheet.width >= 64 and sheet.height >= 64


@pytest.mark.slow
def test_segmentation_output_is_checked_and_overlaid(tmp_path, capsys):
  """Twelve image/mask pairs of the rock VOC data converted with --masks=voc: inspect passes,
  counts per mask class the examples whose mask holds it, draws the overlays, and names a mask
  of the wrong size."""
  rock = shared_data('segmentation/rock_voc') / 'VOC2007'
  source = tmp_path / 'voc'
  for folder in ('JPEGImages', 'SegmentationClass'):
    (source / folder).mkdir(parents=True)
  for jpeg in sorted((rock / 'JPEGImages').glob('*.jpg'))[:12]:
    shutil.copy(jpeg, source / 'JPEGImages')
    shutil.copy(rock / 'SegmentationClass' / (jpeg.stem + '.png'), source / 'SegmentationClass')
  out = tmp_path / 'out'
  assert convert(source, out, '--masks=voc', '--image_size=64', '--stats=false',
                 '--num_shards=1') == 0

  report = inspect_lib.inspect(str(out))
  assert report.ok, report.problems
  assert report.segmentation
  for split in manifest_of(out)['splits']:
    expected = collections.Counter()
    for records in read_records(out, split).values():
      for record in records:
        with Image.open(io.BytesIO(record[contract.MASK_ENCODED])) as mask:
          expected.update(f'class {i}' for i in set(mask.tobytes()) - {255})
    assert report.splits[split].class_counts == expected
  assert sum(report.splits['train'].class_counts.values()) > 0
  written = pictures.render(report, str(tmp_path / 'pictures'), thumb=48)
  assert {pathlib.Path(p).name for p in written} >= {
      'segmentation_train.png', 'contact_sheet_train.png', 'class_counts.png'}

  shard = out / manifest_of(out)['splits']['train']['shards'][0]['file']
  records = [r.numpy() for r in tf.data.TFRecordDataset(str(shard))]
  small = tf.train.Example.FromString(records[0])
  mask_feature = small.features.feature[contract.MASK_ENCODED].bytes_list
  with Image.open(io.BytesIO(mask_feature.value[0])) as mask:
    buffer = io.BytesIO()
    mask.resize((mask.width // 2, mask.height // 2), Image.Resampling.NEAREST).save(buffer, 'PNG')
    height, width = mask.height, mask.width
  mask_feature.value[0] = buffer.getvalue()
  records[0] = small.SerializeToString()
  with tf.io.TFRecordWriter(str(shard)) as writer:
    for record in records:
      writer.write(record)
  status, lines = _run(out, tmp_path, capsys)
  assert status == 1
  assert lines[-1].startswith(f'{shard.name}: record 0 (byte 0) (')
  assert lines[-1].endswith(f'): segmentation mask decodes to {height // 2}x{width // 2}x1, '
                            f'expected {height}x{width}x1')


def test_record_spans_of_a_gzip_shard_decompress_it_once(dataset, tmp_path):
  """A gzip.GzipFile says it is seekable, but its seeks decompress: the spans of a .gz shard
  come from one front-to-back read of its compressed bytes (issue 25: it was 2.00x)."""
  import gzip  # pylint: disable=import-outside-toplevel
  import io  # pylint: disable=import-outside-toplevel
  shard = _shard(dataset, 'train', 0)
  packed = tmp_path / 'shard.tfrecord.gz'
  packed.write_bytes(gzip.compress(shard.read_bytes()))

  class Counting(io.FileIO):
    read_bytes = 0

    def read(self, size=-1):
      data = super().read(size)
      Counting.read_bytes += len(data)
      return data

    def readinto(self, buffer):
      count = super().readinto(buffer)
      Counting.read_bytes += count or 0
      return count

  with Counting(packed) as raw, gzip.GzipFile(fileobj=raw) as stream:
    spans = list(framing.record_spans(stream))
  assert spans == _spans(shard) and spans
  assert Counting.read_bytes <= packed.stat().st_size, (Counting.read_bytes,
                                                        packed.stat().st_size)


def test_a_duplicates_line_not_of_the_contract_is_a_problem_named_by_its_line(
    dataset, tmp_path, capsys):
  """duplicates.jsonl is read as the contract's groups (manifest_schema.DuplicateGroupEntry):
  sound groups are drawn; a line that is not one, or not JSON, fails the check, naming its line
  (and the key)."""
  indexed = [json.loads(line) for line in
             (dataset / contract.IMAGES_INDEX_FILE).read_text().splitlines()[:2]]
  group = {'kind': 'near', 'leaks_across_splits': False, 'label_conflict': False,
           'files': [{key: entry[key] for key in ('file', 'split', 'label')}
                     for entry in indexed]}
  path = dataset / contract.DUPLICATES_FILE
  path.write_text(json.dumps(group) + '\n')
  report = inspect_lib.inspect(str(dataset), verify=False, samples=2)
  assert [[entry.file for entry in g.files] for g in report.duplicate_groups] == [
      [entry['file'] for entry in indexed]]
  assert not report.problems

  del group['files'][1]['split']
  path.write_text(path.read_text() + json.dumps(group) + '\n')
  status, lines = _run(dataset, tmp_path, capsys, '--no-verify')
  assert status == 1
  assert [line for line in lines if line.startswith(contract.DUPLICATES_FILE)] == [
      'duplicates.jsonl: line 2.files[1] has no "split"']
  path.write_text('{"kind": "near", "files": [\n')
  status, lines = _run(dataset, tmp_path, capsys, '--no-verify')
  assert status == 1
  assert [line for line in lines if line.startswith(contract.DUPLICATES_FILE)] == [
      'duplicates.jsonl: line 1 is not JSON: Expecting value at column 28']
