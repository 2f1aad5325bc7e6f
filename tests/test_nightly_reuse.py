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


def _assert_same_as_rebuilt(night: pathlib.Path, rebuilt: pathlib.Path) -> None:
  assert _shards(night) == _shards(rebuilt)
  assert _fingerprints(night) == _fingerprints(rebuilt)
  for name in ('images.jsonl', 'labels.txt', 'failures.jsonl'):
    assert (night / name).read_bytes() == (rebuilt / name).read_bytes(), name


@pytest.mark.slow
def test_an_incremental_night_writes_the_shards_of_a_full_rebuild(nights, tmp_path):
  _, _, rebuilt, kept = nights
  night = _night_2(nights, tmp_path)
  section = manifest_of(night)['incremental']
  assert section['reused'] == len(kept) and section['converted'] == 3
  assert section['reconverted'] == 0 and section['rejected'] == []
  assert len(_shards(night)) == 4
  _assert_same_as_rebuilt(night, rebuilt)


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
  copy = incremental._CopyRecordsFn()  # pylint: disable=protected-access
  out = list(copy.process(gone, reuse={}))
  assert len(out) == 1 and out[0].tag == incremental.CHECKS_TAG
  check = out[0].value
  assert check.shard == gone and check.copied == ()
  assert len(check.rejected) == 1 and 'cannot read the shard' in check.rejected[0].reason
