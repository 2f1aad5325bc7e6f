"""Bad luck is retried, bad data is reported: faults injected into the job's real reads of real
photos (local files; the S3 variant is in test_s3.py). A connection reset or a time-out on the
first read of a file costs a retry, never an image; a file that keeps failing fails the run
without publishing; a file deleted after the listing is a per-image failure with its reason."""

import json

import pytest
from apache_beam.io.filesystems import FileSystems

from tests.helpers import convert, copy_photos, manifest_of
from transforms.files import reads

FLAGS = ('--image_size=48', '--resize_mode=center_crop', '--num_shards=2',
         '--splits=train=0.75,validation=0.25')


@pytest.fixture
def photos(tmp_path):
  """A copy of 24 sample photos (12 ants, 12 bees)."""
  return copy_photos(tmp_path / 'images', 12)


class _Faults:
  """Wraps FileSystems.open: raises ``errors`` on the first opens of the chosen paths."""

  def __init__(self, monkeypatch, first=(), always=(), delete=()):
    self.first = {str(p): error for p, error in first}
    self.always = {str(p) for p in always}
    self.delete = {str(p) for p in delete}
    self.injected = []
    real_open = FileSystems.open

    def faulty_open(path, *args, **kwargs):
      if path in self.always:
        self.injected.append(path)
        raise ConnectionResetError(104, 'Connection reset by peer')
      if path in self.first:
        self.injected.append(path)
        raise self.first.pop(path)
      if path in self.delete:  # gone between the listing and this read
        self.delete.discard(path)
        FileSystems.delete([path])
      return real_open(path, *args, **kwargs)

    monkeypatch.setattr(FileSystems, 'open', faulty_open)
    monkeypatch.setattr(reads, 'FIRST_DELAY_S', 0.01)


def _fingerprints(run_dir) -> dict:
  return {split: info['fingerprint'] for split, info in manifest_of(run_dir)['splits'].items()}


@pytest.mark.slow
def test_transient_errors_cost_a_retry_not_an_image(photos, tmp_path, monkeypatch):
  assert convert(photos, tmp_path / 'clean', *FLAGS) == 0
  every_third = sorted(photos.rglob('*.jpg'))[::3]
  faults = _Faults(monkeypatch, first=[
      (path, ConnectionResetError(104, 'Connection reset by peer') if i % 2 else
       TimeoutError('The read operation timed out')) for i, path in enumerate(every_third)])
  assert convert(photos, tmp_path / 'faulty', *FLAGS) == 0
  assert len(faults.injected) == len(every_third) == 8
  manifest = manifest_of(tmp_path / 'faulty')
  assert manifest['num_examples'] == 24 and manifest['num_failures'] == 0
  assert (tmp_path / 'faulty' / 'failures.jsonl').read_text() == ''
  assert _fingerprints(tmp_path / 'faulty') == _fingerprints(tmp_path / 'clean')


@pytest.mark.slow
def test_a_file_that_keeps_failing_fails_the_night_and_publishes_nothing(photos, tmp_path,
                                                                          monkeypatch, caplog):
  root = tmp_path / 'out'
  assert convert(photos, root, '--run_date=2026-11-20', *FLAGS) == 0
  stuck = sorted(photos.rglob('*.jpg'))[5]
  faults = _Faults(monkeypatch, always=[stuck])
  (photos / 'ants' / 'new.jpg').write_bytes(stuck.read_bytes())  # something to convert
  stuck.write_bytes(stuck.read_bytes() + b'\0')  # changed: it must be read again
  assert convert(photos, root, '--run_date=2026-11-21', *FLAGS) == 1
  assert faults.injected.count(str(stuck)) == reads.ATTEMPTS
  verdict = caplog.records[-1]  # the console's last line: why, in one line, naming the file
  assert verdict.levelname == 'ERROR' and 'ReadFailed' in verdict.getMessage()
  assert f'{stuck}: still failing after {reads.ATTEMPTS} attempts' in verdict.getMessage()
  assert not (root / 'dt=2026-11-21').exists()
  assert (root / 'LATEST').read_text().strip() == 'dt=2026-11-20'


def test_a_file_deleted_after_the_listing_is_a_failure_with_its_reason(photos, tmp_path,
                                                                        monkeypatch):
  gone = sorted(photos.rglob('*.jpg'))[7]
  _Faults(monkeypatch, delete=[gone])
  assert convert(photos, tmp_path / 'out', *FLAGS) == 0
  failures = [json.loads(line) for line in
              (tmp_path / 'out' / 'failures.jsonl').read_text().splitlines()]
  assert [(f['relpath'], f['stage']) for f in failures] == [
      (gone.relative_to(photos).as_posix(), 'read')]
  assert failures[0]['reason'].startswith('cannot read: not found: ')
  assert manifest_of(tmp_path / 'out')['num_examples'] == 23


@pytest.mark.slow
def test_the_previous_nights_shards_are_read_again_after_a_reset(photos, tmp_path,
                                                                 monkeypatch):
  root = tmp_path / 'out'
  assert convert(photos, root, '--run_date=2026-11-20', *FLAGS) == 0
  shards = sorted((root / 'dt=2026-11-20').glob('*.tfrecord'))
  faults = _Faults(monkeypatch, first=[
      (path, ConnectionResetError(104, 'Connection reset by peer')) for path in shards])
  assert convert(photos, root, '--run_date=2026-11-21', *FLAGS) == 0
  assert sorted(faults.injected) == [str(p) for p in shards]
  night = manifest_of(root / 'dt=2026-11-21')
  assert night['incremental']['reused'] == night['num_examples'] == 24
  assert _fingerprints(root / 'dt=2026-11-21') == _fingerprints(root / 'dt=2026-11-20')


@pytest.mark.slow
def test_a_previous_shard_is_read_once_across_retries_and_a_cut_one_is_refused(
    photos, tmp_path, monkeypatch):
  from imagerecords.framing import FramingError, read_records  # pylint: disable=import-outside-toplevel
  from transforms.outputs import previous_records  # pylint: disable=import-outside-toplevel
  assert convert(photos, tmp_path / 'out', *FLAGS) == 0
  shard = sorted((tmp_path / 'out').glob('train-*.tfrecord'))[0]
  with open(shard, 'rb') as handle:
    expected = list(read_records(handle))
  assert len(expected) > 3
  monkeypatch.setattr(previous_records, '_BATCH_BYTES', 1)  # one record per attempt's batch
  monkeypatch.setattr(reads, 'FIRST_DELAY_S', 0.01)
  real_open, opens = FileSystems.open, []

  def reset_on_the_third_open(path, *args, **kwargs):
    opens.append(path)
    if len(opens) == 3:  # mid-shard: two batches already yielded
      raise ConnectionResetError(104, 'Connection reset by peer')
    return real_open(path, *args, **kwargs)

  monkeypatch.setattr(FileSystems, 'open', reset_on_the_third_open)
  # each record once, in order
  assert [frame.data for frame in previous_records.shard_frames(str(shard))] == expected
  cut = tmp_path / 'cut.tfrecord'
  cut.write_bytes(shard.read_bytes()[:-10])
  with pytest.raises(FramingError, match='truncated'):
    list(previous_records.shard_frames(str(cut)))
