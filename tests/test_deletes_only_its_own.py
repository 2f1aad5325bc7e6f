"""Nothing deleted that the job did not write (issue 22, items 1, 3 and 9): real runs on copies
of real photos, beside files the job did not write, which must come out of every run as they
went in; and ``LATEST`` under publishers racing."""

import hashlib
import json
import pathlib
import shutil
import threading

import pytest

from tests.helpers import convert, manifest_of, shared_data
from transforms.files.textfiles import read_text, write_text
from transforms.outputs import authorship, publish

DATE = '2026-01-02'
FLAGS = ('--image_size=32', '--resize_mode=center_crop', '--splits=train=0.75,validation=0.25',
         '--num_shards=1')


def _photos(folder: pathlib.Path, per_class: int = 4) -> pathlib.Path:
  """Copies ``per_class`` real ant and bee photos into ``folder/ants`` and ``folder/bees``."""
  source = shared_data('hymenoptera') / 'train'
  for label in ('ants', 'bees'):
    (folder / label).mkdir(parents=True, exist_ok=True)
    for path in sorted((source / label).glob('*.jpg'))[:per_class]:
      shutil.copyfile(path, folder / label / path.name)
  return folder


def _digests(root: pathlib.Path) -> dict:
  """Relative path -> SHA-256 of every file below ``root``."""
  return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(root.rglob('*')) if p.is_file()}


# --- 1. a dated run deletes only its own runs ------------------------------------------------

def test_a_dated_run_whose_input_is_its_dated_folder_deletes_nothing(tmp_path, caplog):
  """The data lake of the issue: photos land in ROOT/dt=DATE/, the run's output is ROOT."""
  root = tmp_path / 'lake'
  images = _photos(root / f'dt={DATE}')
  before = _digests(root)
  assert convert(images, root, f'--run_date={DATE}', *FLAGS) == 2
  assert _digests(root) == before  # every photo, and nothing written beside them
  assert sorted(p.name for p in root.iterdir()) == [f'dt={DATE}']
  assert f'--input_dir={images} is inside --output_dir' in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize('folder', [f'dt={DATE}', f'_staging/dt={DATE}'])
@pytest.mark.parametrize('overwrite', [(), ('--overwrite',)])
def test_a_dated_folder_holding_files_the_job_did_not_write_is_refused(tmp_path, caplog, folder,
                                                                       overwrite):
  images = _photos(tmp_path / 'images')
  root = tmp_path / 'lake'
  theirs = _photos(root / folder, per_class=2)  # another pipeline's photos, no _SUCCESS
  (theirs / 'notes.txt').write_text('not a run of imagerecords')
  before = _digests(theirs)
  assert convert(images, root, f'--run_date={DATE}', *overwrite, *FLAGS) == 2
  assert _digests(theirs) == before
  refusal = caplog.records[-1].getMessage()
  assert 'not written by imagerecords' in refusal and str(theirs / 'ants') in refusal
  assert not (root / 'LATEST').exists()
  # a run of another date goes on, and leaves them as they are
  assert convert(images, root, '--run_date=2026-01-03', *FLAGS) == 0
  assert _digests(theirs) == before


def test_a_latest_file_that_is_not_the_jobs_is_never_replaced(tmp_path, caplog):
  images, root = _photos(tmp_path / 'images'), tmp_path / 'lake'
  root.mkdir()
  (root / 'LATEST').write_text('current\n')  # a pointer of the user's own, in another form
  assert convert(images, root, f'--run_date={DATE}', *FLAGS) == 2
  assert (root / 'LATEST').read_text() == 'current\n'
  assert f'{root / "LATEST"} holds \'current\'' in caplog.text
  assert not (root / f'dt={DATE}').exists()


@pytest.mark.slow
def test_publication_deletes_nothing_that_came_after_the_launch(tmp_path):
  """Files that appear in dt=DATE/ between the launch's check and the publication: the step
  fails and deletes nothing, neither them nor the earlier run they sit in."""
  root = tmp_path / 'lake'
  images = _photos(tmp_path / 'images')
  assert convert(images, root, f'--run_date={DATE}', *FLAGS) == 0
  published = root / f'dt={DATE}'
  staging = root / '_staging' / f'dt={DATE}'
  shutil.copytree(published, staging)  # the next run, staged
  (staging / '_SUCCESS').unlink()
  photo = _photos(published / 'incoming', per_class=1)
  before = _digests(published)
  step = publish._PublishFn(  # pylint: disable=protected-access
      str(root), str(staging), str(published), run_id='next')
  with pytest.raises(authorship.NotWrittenByThisJob, match=str(photo)):
    list(step.process({}))
  assert _digests(published) == before
  assert (staging / 'manifest.json').exists()  # the new run stays staged, unpublished


# --- 3. --overwrite replaces only its own files ------------------------------------------------

def _user_files(out: pathlib.Path) -> None:
  """A user's own files that share the job's names, and a photo."""
  out.mkdir(parents=True)
  (out / 'manifest.json').write_text(json.dumps({'project': 'field survey', 'photos': 412}))
  (out / 'labels.txt').write_text('oak\nbeech\n')
  (out / 'features.json').write_text('{"leaf": "float32"}')
  (out / 'transformed_metadata').mkdir()
  (out / 'transformed_metadata' / 'schema.pbtxt').write_text('feature { name: "leaf" }')
  shutil.copyfile(sorted((shared_data('hymenoptera') / 'val' / 'ants').glob('*.jpg'))[0],
                  out / 'cover.jpg')


@pytest.mark.parametrize('overwrite', [(), ('--overwrite',)])
def test_files_that_only_share_the_jobs_names_are_refused_not_replaced(tmp_path, caplog,
                                                                        overwrite):
  images, out = _photos(tmp_path / 'images'), tmp_path / 'out'
  _user_files(out)
  before = _digests(out)
  assert convert(images, out, *overwrite, *FLAGS) == 2
  assert _digests(out) == before
  refusal = caplog.records[-1].getMessage()
  for name in ('manifest.json', 'labels.txt', 'features.json', 'transformed_metadata'):
    assert str(out / name) in refusal, name
  assert 'not written by imagerecords' in refusal and 'files of an earlier run' not in refusal


@pytest.mark.slow
def test_overwrite_replaces_the_jobs_earlier_run_and_nothing_beside_it(tmp_path):
  images, out = _photos(tmp_path / 'images'), tmp_path / 'out'
  out.mkdir()
  (out / 'notes.txt').write_text('what these records are for')
  assert convert(images, out, *FLAGS) == 0
  # the record names every entry the run wrote (and its working folders)
  record = json.loads((out / '.imagerecords' / 'output.json').read_text())
  written = {p.name for p in out.iterdir()} - {'.imagerecords', 'notes.txt'}
  assert written <= set(record['entries'])
  assert all(authorship.is_job_name(name) for name in record['entries'])
  assert convert(images, out, *FLAGS[:-1], '--num_shards=2', '--overwrite') == 0
  assert sorted(p.name for p in out.glob('*.tfrecord')) == [
      f'{split}-0000{i}-of-00002.tfrecord' for split in ('train', 'validation') for i in (0, 1)]
  assert (out / 'notes.txt').read_text() == 'what these records are for'
  # an output of a version that wrote no record: its imagerecords manifest proves its files
  (out / '.imagerecords' / 'output.json').unlink()
  assert convert(images, out, *FLAGS, '--overwrite') == 0
  assert sorted(p.name for p in out.glob('*.tfrecord')) == [
      'train-00000-of-00001.tfrecord', 'validation-00000-of-00001.tfrecord']
  assert manifest_of(out)['num_examples'] == 8


# --- 9. one folder inside the other; LATEST only moves forward ---------------------------------

def _nested(tmp_path: pathlib.Path, case: str):
  """(input folder, output folder, extra flags) of a case where one holds the other."""
  images = _photos(tmp_path / 'images')
  if case == 'same folder':
    return images, images, ()
  if case == 'output in a split folder name':
    return images, images / 'train', ()
  if case == 'nightly root inside the input':
    return images, images / 'records', (f'--run_date={DATE}',)
  if case == 'input inside the output':
    return images, tmp_path, ()
  link = tmp_path / 'link-to-images'  # the same folder under another name
  link.symlink_to(images)
  return images, link / 'records', ()


@pytest.mark.parametrize('case', ['same folder', 'output in a split folder name',
                                  'nightly root inside the input', 'input inside the output',
                                  'output through a link into the input'])
def test_an_output_inside_the_input_or_the_reverse_is_refused_at_launch(tmp_path, caplog, case):
  images, out, flags = _nested(tmp_path, case)
  before = _digests(images)
  assert convert(images, out, *flags, *FLAGS) == 2
  assert _digests(images) == before
  assert sorted(p.name for p in images.iterdir()) == ['ants', 'bees']  # nothing created there
  message = caplog.records[-1].getMessage()
  assert 'inside' in message or 'the same folder' in message


@pytest.mark.parametrize('source,target,refused', [
    ('gs://bucket/photos', 'gs://bucket/photos/records', True),
    ('gs://bucket/photos/', 'gs://bucket/photos', True),
    ('s3://bucket/lake/dt=2026-01-02', 's3://bucket/lake', True),
    ('GS://bucket/photos', 'gs://bucket/photos/records', True),
    ('gs://bucket/photos', 'gs://bucket/photos-records', False),
    ('gs://bucket/photos', 's3://bucket/photos/records', False),
    ('gs://bucket/photos', 'gs://other/photos/records', False),
])
def test_nesting_is_judged_on_object_store_urls(source, target, refused):
  from pipeline import outputs  # pylint: disable=import-outside-toplevel
  if refused:
    with pytest.raises(ValueError, match='inside|the same folder'):
      outputs.check_apart(source.rstrip('/'), target)
  else:
    outputs.check_apart(source, target)


def _racing_publishers(monkeypatch, root: str, older: str, newer: str) -> None:
  """Publishes ``older`` and ``newer`` from two threads at once, in the order that moved
  LATEST back: both read it, the newer one writes, then the older one. Each write waits for
  the other thread's (the older one's for the newer one to finish, the newer one's for the
  older one to be about to write), at most 5 s: a publisher holding a lock keeps the other one
  out that long, and then writes."""
  older_writing, newer_done = threading.Event(), threading.Event()

  def held_back(write):
    def wrapper(path, text, *args, **kwargs):
      if text.strip() == older:
        older_writing.set()
        newer_done.wait(timeout=5)
      else:
        older_writing.wait(timeout=5)
      return write(path, text, *args, **kwargs)
    return wrapper

  monkeypatch.setattr(publish, 'replace_text', held_back(publish.replace_text))
  conditional = getattr(publish, 'conditional', None)  # the object stores' compare-and-swap
  if conditional is not None:
    monkeypatch.setattr(conditional, 'write_if_version',
                        held_back(conditional.write_if_version))

  def publish_newer():
    try:
      publish.point_latest(root, newer)
    finally:
      newer_done.set()

  threads = [threading.Thread(target=publish.point_latest, args=(root, older)),
             threading.Thread(target=publish_newer)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join(timeout=60)


@pytest.mark.slow
def test_latest_never_moves_back_when_two_dates_publish_at_once(tmp_path, monkeypatch):
  root = tmp_path / 'lake'
  root.mkdir()
  (root / 'LATEST').write_text('dt=2026-01-01\n')
  _racing_publishers(monkeypatch, str(root), 'dt=2026-01-02', 'dt=2026-01-03')
  assert (root / 'LATEST').read_text() == 'dt=2026-01-03\n'


@pytest.mark.slow
def test_latest_on_s3_never_moves_back_when_two_dates_publish_at_once(s3_bucket, monkeypatch):
  s3_root = s3_bucket  # a nightly root on S3 (moto), through Beam's S3 filesystem
  write_text(f'{s3_root}/LATEST', 'dt=2026-01-01\n')
  _racing_publishers(monkeypatch, s3_root, 'dt=2026-01-02', 'dt=2026-01-03')
  assert read_text(f'{s3_root}/LATEST') == 'dt=2026-01-03\n'
  # a backfill leaves it; a newer night moves it
  assert not publish.point_latest(s3_root, 'dt=2026-01-02')
  assert publish.point_latest(s3_root, 'dt=2026-01-04')
  assert read_text(f'{s3_root}/LATEST') == 'dt=2026-01-04\n'
