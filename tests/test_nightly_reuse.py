"""A night reuses only records it has verified (issue 22, item 2): the previous night's frame
checksums and the record digest its images.jsonl holds. A damaged record is converted again
from its source and reported, never copied, and the night's shards are those a full rebuild
writes, byte for byte."""

import gzip
import hashlib
import io
import json
import pathlib
import shutil
import struct

import pytest
from imagerecords import contract, framing
from imagerecords.records import example_filename

from tests.helpers import convert, manifest_of, shared_data

NIGHT_1, NIGHT_2 = '2026-12-01', '2026-12-02'
FLAGS = ('--image_size=48', '--resize_mode=center_crop', '--splits=train=0.5,validation=0.5',
         '--num_shards=2')
LABEL_KEY = contract.CLASS_LABEL.encode()


def _copy(source: pathlib.Path, target: pathlib.Path) -> None:
  target.parent.mkdir(parents=True, exist_ok=True)
  shutil.copyfile(source, target)


def _frames(shard: pathlib.Path) -> list:
  with open(shard, 'rb') as stream:
    return list(framing.read_frames(stream))


def _shards(run_dir: pathlib.Path) -> dict:
  """Shard file name -> its bytes, for every shard the manifest lists."""
  return {shard['file']: (run_dir / shard['file']).read_bytes()
          for info in manifest_of(run_dir)['splits'].values() for shard in info['shards']}


def _fingerprints(run_dir: pathlib.Path) -> dict:
  return {split: info['fingerprint'] for split, info in manifest_of(run_dir)['splits'].items()}


def _flip(path: pathlib.Path, offset: int, mask: int = 0x01) -> None:
  data = bytearray(path.read_bytes())
  data[offset] ^= mask
  path.write_bytes(bytes(data))


def _label_value_offset(data: bytes) -> int:
  """The offset in a record of its class id's varint: the map entry's key, then its Feature
  (field 2), its Int64List (field 3), its packed values (field 1), each a tag and a length."""
  at = data.index(LABEL_KEY) + len(LABEL_KEY)
  assert data[at] == 0x12 and data[at + 2] == 0x1a and data[at + 4] == 0x0a, data[at:at + 6]
  assert data[at + 6] < 0x80  # a one-byte varint: a small class id
  return at + 6


@pytest.fixture(scope='module')
def nights(tmp_path_factory):
  """Night 1 over 16 photos, then a few inputs change (two added, one rewritten, one removed);
  night 2 as a full rebuild into its own root. Returns (input dir, night 1's root, the
  rebuilt root, the files night 2 keeps unchanged)."""
  hymenoptera = shared_data('hymenoptera')
  ants = sorted((hymenoptera / 'train' / 'ants').glob('*.jpg'))
  bees = sorted((hymenoptera / 'train' / 'bees').glob('*.jpg'))
  tmp = tmp_path_factory.mktemp('reuse')
  images, first = tmp / 'images', tmp / 'night1'
  for path in ants[:8] + bees[:8]:
    _copy(path, images / path.parent.name / path.name)
  assert convert(images, first, f'--run_date={NIGHT_1}', *FLAGS) == 0
  _copy(ants[20], images / 'ants' / ants[20].name)  # added
  _copy(bees[20], images / 'bees' / bees[20].name)  # added
  _copy(ants[21], images / 'ants' / ants[0].name)  # other bytes under the same name
  (images / 'bees' / bees[0].name).unlink()  # removed
  changed = {f'ants/{ants[0].name}', f'bees/{bees[0].name}'}
  rebuilt = tmp / 'rebuilt'
  shutil.copytree(first, rebuilt)
  assert convert(images, rebuilt, f'--run_date={NIGHT_2}', '--full_rebuild', *FLAGS) == 0
  assert manifest_of(rebuilt / f'dt={NIGHT_2}')['incremental']['reused'] == 0
  kept = {f'{p.parent.name}/{p.name}' for p in ants[:8] + bees[:8]} - changed
  return images, first, rebuilt / f'dt={NIGHT_2}', kept


def _night_2(nights, tmp_path, damage=None):
  """Night 2, incremental, over a copy of night 1's root that ``damage(night 1's run dir)``
  may change first; returns night 2's run dir."""
  images, first, _, _ = nights
  root = tmp_path / 'root'
  shutil.copytree(first, root)
  if damage is not None:
    damage(root / f'dt={NIGHT_1}')
  assert convert(images, root, f'--run_date={NIGHT_2}', *FLAGS) == 0
  return root / f'dt={NIGHT_2}'


def _diff(run_dir: pathlib.Path) -> dict:
  """The manifest's diff, less the previous run's path (each night has its own copy)."""
  diff = dict(manifest_of(run_dir)['diff'])
  assert diff.pop('previous_run').endswith(f'dt={NIGHT_1}')
  return diff


def _assert_same_as_rebuilt(night: pathlib.Path, rebuilt: pathlib.Path) -> None:
  assert _shards(night) == _shards(rebuilt)
  assert _fingerprints(night) == _fingerprints(rebuilt)
  for name in ('images.jsonl', 'labels.txt', 'failures.jsonl'):
    assert (night / name).read_bytes() == (rebuilt / name).read_bytes(), name
  # the reuse step's pairing with the previous index gives the diff of a whole pairing
  assert _diff(night) == _diff(rebuilt)


@pytest.mark.slow
def test_an_incremental_night_writes_the_shards_of_a_full_rebuild(nights, tmp_path):
  _, _, rebuilt, kept = nights
  night = _night_2(nights, tmp_path)
  section = manifest_of(night)['incremental']
  assert section['reused'] == len(kept) and section['converted'] == 3
  assert section['reconverted'] == 0 and section['rejected'] == []
  assert len(_shards(night)) == 4
  _assert_same_as_rebuilt(night, rebuilt)
  metrics = manifest_of(night)['metrics']
  assert metrics['images_reused'] == len(kept)
  # the reused records went from night 1's shards straight into night 2's: only the three
  # converted ones passed through a staging file
  assert metrics['staging_records_written'] == 3
  assert manifest_of(rebuilt)['metrics']['staging_records_written'] == 3 + len(kept)
  assert _diff(night)['unchanged'] == len(kept)


def test_the_index_records_each_record_s_digest(nights):
  _, _, rebuilt, _ = nights
  digests = {}
  for data in _shards(rebuilt).values():
    for record in framing.read_records(io.BytesIO(data)):
      digests[example_filename(record)] = hashlib.sha256(record).hexdigest()
  index = [json.loads(line) for line in (rebuilt / 'images.jsonl').read_text().splitlines()]
  assert {entry['file']: entry['record_sha256'] for entry in index} == digests


@pytest.mark.slow
def test_damaged_records_are_converted_again_never_copied(nights, tmp_path):
  """Night 1's shards damaged four ways, one per shard: a flipped byte in a record's image
  bytes; in its class id; in its image bytes with the frame's checksum written afresh (only
  images.jsonl's digest tells); in a record's length field (the rest of that shard cannot be
  located). Night 2 converts each of those images again, reports them, and writes what a full
  rebuild writes."""
  _, _, rebuilt, kept = nights
  expected, problems = set(), {}

  def damage(run_dir):
    shards = sorted(run_dir.glob('*.tfrecord'))
    assert len(shards) == 4
    for number, shard in enumerate(shards):
      frames = _frames(shard)
      # the first record of a kept image, not the shard's first (the length flip keeps one)
      index, frame = next((i, f) for i, f in enumerate(frames)
                          if i > 0 and example_filename(f.data) in kept)
      name = example_filename(frame.data)
      data_at = frame.offset + framing.HEADER_BYTES
      if number == 0:  # a bit of the JPEG's bytes
        _flip(shard, data_at + frame.data.index(b'\xff\xd8\xff') + 300)
        problems[name] = (shard.name, 'checksum')
      elif number == 1:  # the class id: 0 <-> 1, ants <-> bees
        _flip(shard, data_at + _label_value_offset(frame.data))
        problems[name] = (shard.name, 'checksum')
      elif number == 2:  # a JPEG byte, and the data's checksum made to match it
        _flip(shard, data_at + frame.data.index(b'\xff\xd8\xff') + 300)
        data = bytearray(shard.read_bytes())
        body_end = data_at + len(frame.data)
        damaged = bytes(data[data_at:body_end])
        data[body_end:body_end + 4] = struct.pack('<I', framing.masked_crc32c(damaged))
        shard.write_bytes(bytes(data))
        problems[name] = (shard.name, 'images.jsonl')
      else:  # the length field: nothing from this record on can be located
        _flip(shard, frame.offset, 0x40)
        lost = {example_filename(f.data) for f in frames[index:]} & kept
        assert lost
        expected.update(lost)
        problems[name] = (shard.name, 'length')
      expected.add(name)

  night = _night_2(nights, tmp_path, damage)
  _assert_same_as_rebuilt(night, rebuilt)
  # converted again for want of a verified record, its file is unchanged all the same
  assert _diff(night)['unchanged'] == len(kept) and _diff(night)['added'] == 2
  section = manifest_of(night)['incremental']
  assert section['reconverted'] == len(expected)
  assert section['reused'] == len(kept) - len(expected)
  assert section['converted'] == 3 + len(expected)
  assert manifest_of(night)['metrics']['images_read'] == 3 + len(expected)
  rejected = {(entry['file'], entry['shard'] and pathlib.Path(entry['shard']).name): entry['reason']
              for entry in section['rejected']}
  for name, (shard, word) in problems.items():
    if word == 'length':  # no record to name: the shard's problem, and each image lost
      shard_level = [reason for (file, at), reason in rejected.items()
                     if file is None and at == shard]
      assert len(shard_level) == 1 and 'length field' in shard_level[0], rejected
    else:
      assert word in rejected[(name, shard)], rejected
  lost = {file for (file, _), reason in rejected.items() if 'no intact record' in reason}
  assert lost == expected - {name for name, (_, word) in problems.items() if word != 'length'}


@pytest.mark.slow
def test_an_index_without_record_digests_converts_those_images_again(nights, tmp_path):
  """A previous night written before images.jsonl held record digests has nothing to check a
  record against: its images are converted again, not copied unverified."""
  _, _, rebuilt, kept = nights
  dropped = sorted(kept)[:3]

  def forget_digests(run_dir):
    index = run_dir / 'images.jsonl'
    lines = []
    for line in index.read_text().splitlines():
      entry = json.loads(line)
      if entry['file'] in dropped:
        del entry['record_sha256']
      lines.append(json.dumps(entry, ensure_ascii=False, sort_keys=True))
    index.write_text(''.join(line + '\n' for line in lines))

  night = _night_2(nights, tmp_path, forget_digests)
  section = manifest_of(night)['incremental']
  assert (section['reused'], section['converted']) == (len(kept) - 3, 3 + 3)
  _assert_same_as_rebuilt(night, rebuilt)


def test_a_damaged_gzip_shard_ends_in_a_framing_error(nights, tmp_path):
  """--compression=gzip: a shard whose gzip stream does not inflate whole is damage (the
  images of its records not yet verified are converted again), not an error that fails the
  night."""
  from transforms.outputs import incremental  # pylint: disable=import-outside-toplevel
  _, _, rebuilt, _ = nights
  packed = bytearray(gzip.compress((rebuilt / 'train-00000-of-00002.tfrecord').read_bytes()))
  packed[len(packed) // 2] ^= 0x10
  shard = tmp_path / 'train-00000-of-00001.tfrecord.gz'
  shard.write_bytes(bytes(packed))
  with pytest.raises(framing.FramingError, match='gzip'):  # inflated bytes fail gzip's CRC-32
    list(incremental.shard_frames(str(shard)))


def test_a_vanished_previous_shard_is_reported_not_fatal(tmp_path):
  from transforms.outputs import incremental  # pylint: disable=import-outside-toplevel
  gone = str(tmp_path / 'train-00000-of-00001.tfrecord')
  copy = incremental._CopyRecordsFn(str(tmp_path / 'staging'))  # pylint: disable=protected-access
  out = list(copy.process(gone, index=[]))
  assert len(out) == 1 and out[0].tag == incremental.CHECKS_TAG
  check = out[0].value
  assert check.shard == gone and check.copied_files() == []
  assert len(check.rejected) == 1 and 'cannot read the shard' in check.rejected[0].reason


def test_a_shard_s_reused_records_leave_the_copy_as_one_keys_file(nights, tmp_path):
  """The copy of an uncompressed previous shard hands on its verified records to reuse as one
  keys file in the writer's staging folder that names the shard itself: no record is written
  anywhere, and none is an element of its own. The files to reuse reach it packed; their
  examples leave the reuse step in lists, without record bytes, less the files not copied."""
  from transforms import batches  # pylint: disable=import-outside-toplevel
  from transforms.elements import LabeledImage  # pylint: disable=import-outside-toplevel
  from transforms.inputs.splits import shuffle_key  # pylint: disable=import-outside-toplevel
  from transforms.outputs import incremental, write  # pylint: disable=import-outside-toplevel
  _, _, rebuilt, _ = nights
  shard = rebuilt / 'train-00000-of-00002.tfrecord'
  frames = _frames(shard)
  index = {entry['file']: entry for entry in map(
      json.loads, (rebuilt / 'images.jsonl').read_text().splitlines())}
  names = [example_filename(frame.data) for frame in frames]
  rows = [incremental.reuse_row(LabeledImage(
      f'/in/{name}', name, index[name]['label'], index[name]['split'],
      version=index[name].get('version')), index[name]) for name in names[1:]]
  packed = [batches.encode_entries([(row[8], row[1], row[3]) for row in rows])]
  staging = tmp_path / 'out' / '.staging-write'
  copy = incremental._CopyRecordsFn  # pylint: disable=protected-access
  outputs = list(copy(str(staging), shuffle_seed=7).process(str(shard), index=packed))
  assert [output.tag for output in outputs] == [incremental.STAGED_TAG, incremental.CHECKS_TAG]
  (split, keys_path), check = outputs[0].value, outputs[1].value
  assert check.copied_files() == names[1:] and check.rejected == ()
  assert split == 'train'
  assert sorted(p.name for p in (staging / 'train').iterdir()) == [pathlib.Path(keys_path).name]
  listed = write.read_staging_keys(keys_path)
  assert listed.path == str(shard) and listed.version == write.file_version(str(shard))
  assert list(listed.numbers) == list(range(1, len(frames)))
  assert list(listed.offsets) == [frame.offset for frame in frames[1:]]
  assert listed.keys == b''.join(shuffle_key(name, 7) for name in names[1:])
  # the examples: one list per packed list of rows, less the files whose record was not copied
  keep = incremental._KeepCopiedFn()  # pylint: disable=protected-access
  outputs = list(keep.process(batches.encode_entries(rows), missing=[names[1]]))
  again = [output.value for output in outputs if getattr(output, 'tag', None) == 'again']
  assert again == [LabeledImage(f'/in/{names[1]}', names[1], index[names[1]]['label'], 'train',
                                version=index[names[1]].get('version'))]
  (examples,) = [output for output in outputs if isinstance(output, list)]
  assert [example.relpath for example in examples] == names[2:]
  assert {example.serialized for example in examples} == {b''}
  assert [example.record_sha256 for example in examples] == [
      hashlib.sha256(frame.data).digest() for frame in frames[2:]]


def _with_comment(data: bytes, text: str) -> bytes:
  """The JPEG ``data`` with a COM segment holding ``text`` after SOI: other bytes, the same
  pixels."""
  payload = text.encode()
  return data[:2] + b'\xff\xfe' + struct.pack('>H', len(payload) + 2) + payload + data[2:]


def _two_nights(tmp_path: pathlib.Path, flags, change=None, first=None):
  """Night 1 over 16 real photos (``first(images)`` may add to them), ``change(images)`` (by
  default: two added, one rewritten, one removed), then night 2 from copies of night 1 twice:
  a full rebuild and an incremental night. Returns (the incremental run dir, the rebuilt one).
  """
  hymenoptera = shared_data('hymenoptera')
  ants = sorted((hymenoptera / 'train' / 'ants').glob('*.jpg'))
  bees = sorted((hymenoptera / 'train' / 'bees').glob('*.jpg'))
  images, night_1 = tmp_path / 'images', tmp_path / 'night1'
  for path in ants[:8] + bees[:8]:
    _copy(path, images / path.parent.name / path.name)
  if first is not None:
    first(images)
  assert convert(images, night_1, f'--run_date={NIGHT_1}', *flags) == 0
  if change is None:
    _copy(ants[20], images / 'ants' / ants[20].name)
    _copy(bees[20], images / 'bees' / bees[20].name)
    _copy(ants[21], images / 'ants' / ants[0].name)
    (images / 'bees' / bees[0].name).unlink()
  else:
    change(images)
  runs = {}
  for mode in ('full', 'incremental'):
    root = tmp_path / mode
    shutil.copytree(night_1, root)
    more = ['--full_rebuild'] if mode == 'full' else []
    assert convert(images, root, f'--run_date={NIGHT_2}', *more, *flags) == 0
    runs[mode] = root / f'dt={NIGHT_2}'
  return runs['incremental'], runs['full']


@pytest.mark.slow
@pytest.mark.parametrize('flag', ['--compression=gzip', '--dali_index'])
def test_gzip_and_dali_nights_write_the_files_of_a_full_rebuild(tmp_path, flag):
  """--compression=gzip: the previous shards are .gz, read whole (no seek): their verified
  records go through one staging file per shard. --dali_index: the reused records are read in
  place, and each shard's DALI index is the rebuild's."""
  night, rebuilt = _two_nights(tmp_path, (*FLAGS, flag))
  _assert_same_as_rebuilt(night, rebuilt)
  section = manifest_of(night)['incremental']
  assert (section['reused'], section['converted'], section['reconverted']) == (14, 3, 0)
  staged = manifest_of(night)['metrics']['staging_records_written']
  assert staged == (3 + 14 if flag == '--compression=gzip' else 3)
  if flag == '--dali_index':
    indexes = sorted(night.glob('*.idx'))
    assert len(indexes) == 4
    for index in indexes:
      assert index.read_bytes() == (rebuilt / index.name).read_bytes(), index.name


@pytest.mark.slow
def test_a_reused_record_dropped_as_a_near_duplicate_is_not_written(tmp_path):
  """--dedup=keep_first_near: night 2 adds a copy of a reused photo (other bytes, the same
  pixels) whose path sorts first: the reused record is dropped from the lists and from its keys
  file, and the night writes what a full rebuild writes."""
  ant = sorted((shared_data('hymenoptera') / 'train' / 'ants').glob('*.jpg'))[3]

  def add_copy(images):
    (images / 'ants' / f'0_{ant.name}').write_bytes(_with_comment(ant.read_bytes(), 'copy'))

  night, rebuilt = _two_nights(tmp_path, (*FLAGS, '--dedup=keep_first_near'), change=add_copy)
  _assert_same_as_rebuilt(night, rebuilt)
  failures = (night / 'failures.jsonl').read_text()
  assert f'ants/{ant.name}' in failures and 'keep_first_near' in failures
  section = manifest_of(night)['incremental']
  assert (section['reused'], section['converted']) == (16, 1)
  assert manifest_of(night)['metrics']['near_duplicates_dropped'] == 1
  assert _diff(night)['removed'] == 1 and _diff(night)['added'] == 1


@pytest.mark.slow
def test_a_relabelled_and_a_moved_image_are_converted_and_reported(tmp_path):
  """A label file with a split column relabels one image and moves another to the other split,
  under the same paths: both are converted again, and the diff (relabeled, moved_split) is a
  full rebuild's, the reused images unchanged."""
  labels = tmp_path / 'labels.csv'

  def write_labels(images, relabel=(), move=()):
    lines = ['filename,label,split']
    for number, path in enumerate(sorted(images.rglob('*.jpg'))):
      relpath = path.relative_to(images).as_posix()
      label = path.parent.name
      split = ('train', 'validation')[number % 2]
      if relpath in relabel:
        label = 'bees' if label == 'ants' else 'ants'
      if relpath in move:
        split = 'validation' if split == 'train' else 'train'
      lines.append(f'{relpath},{label},{split}')
    labels.write_text('\n'.join(lines) + '\n')

  def change(images):
    ants = sorted(p.relative_to(images).as_posix() for p in (images / 'ants').glob('*.jpg'))
    write_labels(images, relabel={ants[1]}, move={ants[2]})

  night, rebuilt = _two_nights(
      tmp_path, ('--image_size=48', '--resize_mode=center_crop', '--num_shards=2',
                 f'--label_source=file:{labels}'), change=change, first=write_labels)
  _assert_same_as_rebuilt(night, rebuilt)
  diff = _diff(night)
  assert (diff['relabeled'], diff['moved_split'], diff['unchanged']) == (1, 1, 16)
  section = manifest_of(night)['incremental']
  assert (section['reused'], section['converted']) == (14, 2)
