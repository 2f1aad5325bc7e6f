"""What real folders contain besides photos, on real photos (issue 12, cases 1-5): folder names
that are glob patterns, symlinks in and out of the input, files that are not regular files,
folders that cannot be listed, and names with backslashes and line breaks. Every entry is
converted or reported; nothing outside the named folders is read or deleted."""

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from imagerecords import contract

from tests.helpers import (REPO, SAMPLES, all_records, convert, manifest_of, many_scan_jpeg,
                           shared_data)

ANTS = sorted((SAMPLES / 'ants').glob('*.jpg'))
BEES = sorted((SAMPLES / 'bees').glob('*.jpg'))
FLAGS = ('--image_size=32', '--resize_mode=center_crop', '--num_shards=1', '--splits=train=1')


def _copy(photos, folder: pathlib.Path, names=None):
  """Copies ``photos`` into ``folder`` (as ``names`` when given); returns the copies."""
  folder.mkdir(parents=True, exist_ok=True)
  copies = []
  for index, photo in enumerate(photos):
    copies.append(folder / (names[index] if names else photo.name))
    shutil.copy(photo, copies[-1])
  return copies


def _digests(root: pathlib.Path) -> dict:
  """relpath -> SHA-256 of every file below ``root`` (the whole tree, to prove it untouched)."""
  return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(root.rglob('*')) if p.is_file()}


def _failures(out: pathlib.Path) -> dict:
  """relpath -> (stage, reason) of failures.jsonl."""
  lines = (out / contract.FAILURES_FILE).read_text().splitlines()
  return {f['relpath']: (f['stage'], f['reason']) for f in map(json.loads, lines)}


def _records(out: pathlib.Path) -> dict:
  """image/filename -> record, over every split."""
  return {r['image/filename'].decode(): r for _, r in all_records(out)}


# --- 1. folder names are paths, not patterns --------------------------------------------------

@pytest.fixture(scope='module')
def earlier_run(tmp_path_factory) -> pathlib.Path:
  """A complete run of the samples with FLAGS, converted once for the module."""
  out = tmp_path_factory.mktemp('earlier') / 'out'
  assert convert(SAMPLES, out, *FLAGS) == 0
  return out


@pytest.mark.parametrize('name,sibling', [
    ('out[1]', 'out1'),  # a bracket: one character of a set
    ('out*', 'out-b'),  # a star: anything
    ('ou?', 'oux'),  # a question mark: one character
])
@pytest.mark.slow
def test_overwrite_deletes_only_inside_the_named_output(tmp_path, earlier_run, name, sibling):
  # the sibling holds a complete earlier run (a copy of one), which the name as a pattern
  # would match
  shutil.copytree(earlier_run, tmp_path / sibling)
  before = _digests(tmp_path / sibling)
  out = tmp_path / name
  assert convert(SAMPLES, out, *FLAGS) == 0
  assert convert(SAMPLES, out, *FLAGS) == 2  # its own earlier run, refused without --overwrite
  assert convert(SAMPLES, out, *FLAGS[:-2], '--num_shards=2', '--splits=train=1',
                 '--overwrite') == 0
  assert _digests(tmp_path / sibling) == before  # not one file touched
  assert sorted(p.name for p in out.glob('*.tfrecord')) == [
      'train-00000-of-00002.tfrecord', 'train-00001-of-00002.tfrecord']
  assert len(_records(out)) == len(ANTS) + len(BEES)
  assert manifest_of(out)['output_dir'] == str(out)


def test_stats_tft_is_refused_for_an_output_tensorflow_would_glob(tmp_path, caplog):
  out = tmp_path / 'out[1]'
  assert convert(SAMPLES, out, '--stats=tft', *FLAGS) == 2
  assert 'pass --stats (the default)' in caplog.text and not out.exists()
  # the default statistics are Beam's, written with Beam's filesystems: no glob involved
  assert convert(SAMPLES, out, '--stats', *FLAGS) == 0
  assert manifest_of(out)['statistics']['num_examples'] > 0


def test_an_input_folder_named_like_a_pattern_is_read_alone(tmp_path):
  name = 'dataset[v2]*?'  # matches 'datasetv' + anything + one more character as a pattern
  _copy(ANTS[:3], tmp_path / name / 'ants')
  _copy(BEES[:2], tmp_path / name / 'bees')
  _copy(BEES[2:6], tmp_path / 'datasetv2xy' / 'bees')  # a sibling the pattern matches
  out = tmp_path / 'out'
  assert convert(tmp_path / name, out, *FLAGS) == 0
  assert sorted(_records(out)) == sorted(
      [f'ants/{p.name}' for p in ANTS[:3]] + [f'bees/{p.name}' for p in BEES[:2]])
  assert manifest_of(out)['input_dir'] == str(tmp_path / name)


@pytest.mark.slow
def test_a_dated_run_under_a_pattern_named_root_ignores_its_siblings_runs(tmp_path):
  root, sibling = tmp_path / 'nightly[1]', tmp_path / 'nightly1'
  assert convert(SAMPLES, sibling, '--run_date=2026-01-01', *FLAGS) == 0
  before = _digests(sibling)
  assert convert(SAMPLES, root, '--run_date=2026-01-02', *FLAGS) == 0
  manifest = manifest_of(root / 'dt=2026-01-02')
  assert manifest['diff'] is None  # the sibling's dt=2026-01-01 is not this root's previous run
  assert convert(SAMPLES, root, '--run_date=2026-01-02', '--overwrite', *FLAGS) == 0
  assert _digests(sibling) == before
  assert (root / 'LATEST').read_text().strip() == 'dt=2026-01-02'


# --- 2. symlinks ------------------------------------------------------------------------------

def _linked_input(tmp_path: pathlib.Path) -> pathlib.Path:
  """A class folder input with every kind of link (see the test below); returns the root."""
  root, elsewhere = tmp_path / 'in', tmp_path / 'elsewhere'
  _copy(ANTS[:4], root / 'ants')
  _copy(BEES[:3], root / 'bees')
  _copy(BEES[3:6], elsewhere / 'wasps')
  _copy(ANTS[4:5], elsewhere, ['lone.jpg'])
  (root / 'wasps').symlink_to(elsewhere / 'wasps')  # a class folder linked in from outside
  (root / 'termites').symlink_to('ants')  # a folder link inside the root
  (root / 'bees' / 'outside.jpg').symlink_to(elsewhere / 'lone.jpg')  # a file leaving the root
  (root / 'bees' / 'inside.jpg').symlink_to(root / 'ants' / ANTS[0].name)  # one staying in
  (root / 'ants' / 'passwd.jpg').symlink_to('/etc/passwd')
  (root / 'ants' / 'ls.jpg').symlink_to('/bin/ls')
  (root / 'ants' / 'gone.jpg').symlink_to(root / 'no-such-photo.jpg')  # dangling
  (root / 'ants' / 'self.jpg').symlink_to('self.jpg')  # a link to itself
  (root / 'bees' / 'up').symlink_to('..')  # a folder loop
  return root


@pytest.mark.slow
def test_links_inside_the_root_are_followed_and_the_others_reported(tmp_path):
  root = _linked_input(tmp_path)
  out = tmp_path / 'out'
  assert convert(root, out, *FLAGS[:-1], '--splits=train=1', '--label_source=directory') == 0
  records = _records(out)
  expected = ({f'ants/{p.name}' for p in ANTS[:4]} | {f'termites/{p.name}' for p in ANTS[:4]}
              | {f'bees/{p.name}' for p in BEES[:3]} | {'bees/inside.jpg'})
  assert set(records) == expected
  assert records['bees/inside.jpg']['image/key/sha256'].decode() == hashlib.sha256(
      ANTS[0].read_bytes()).hexdigest()
  assert records[f'termites/{ANTS[0].name}']['image/class/text'] == b'termites'
  failures = _failures(out)
  for relpath in ('wasps', 'bees/outside.jpg', 'ants/passwd.jpg', 'ants/ls.jpg'):
    stage, reason = failures[relpath]
    assert stage == 'list' and 'outside the input root' in reason, relpath
    assert '--follow_external_symlinks' in reason
  assert 'dangling' in failures['ants/gone.jpg'][1]
  assert 'loop' in failures['ants/self.jpg'][1]
  assert 'loop' in failures['bees/up/'][1]
  text = (out / contract.FAILURES_FILE).read_text()
  passwd = pathlib.Path('/etc/passwd').read_text().splitlines()[0]
  assert passwd not in text and 'ELF' not in text  # nothing of /etc/passwd or /bin/ls read
  assert manifest_of(out)['metrics']['images_read'] == len(expected)
  # every entry is an example or a reported failure (ants/'s links once more under termites/)
  in_ants = {f'{folder}/{name}' for folder in ('ants', 'termites')
             for name in ('passwd.jpg', 'ls.jpg', 'gone.jpg', 'self.jpg')}
  assert set(failures) == {'wasps', 'bees/outside.jpg', 'bees/up/', *in_ants}


def test_follow_external_symlinks_takes_links_that_leave_the_root(tmp_path):
  root = _linked_input(tmp_path)
  for name in ('passwd.jpg', 'ls.jpg'):  # a user who follows links keeps such links out
    (root / 'ants' / name).unlink()
  out = tmp_path / 'out'
  assert convert(root, out, *FLAGS[:-1], '--splits=train=1', '--follow_external_symlinks',
                 '--image_format=original') == 0
  records = _records(out)
  wasps = {f'wasps/{p.name}' for p in BEES[3:6]}
  assert wasps <= set(records)
  assert all(records[name]['image/class/text'] == b'wasps' for name in wasps)
  # --image_format=original: the linked file's bytes, unchanged
  lone = (tmp_path / 'elsewhere' / 'lone.jpg').read_bytes()
  assert records['bees/outside.jpg']['image/encoded'] == lone
  assert set(_failures(out)) == {'ants/gone.jpg', 'ants/self.jpg', 'termites/gone.jpg',
                                 'termites/self.jpg', 'bees/up/'}


# --- 3. files that are not regular files, and files too large to read -------------------------

@pytest.mark.slow
def test_special_files_and_huge_files_are_reported_without_being_read(tmp_path):
  root = tmp_path / 'in'
  _copy(ANTS[:3], root / 'ants')
  _copy(BEES[:3], root / 'bees')
  os.mkfifo(root / 'ants' / 'pipe.jpg')  # opening it would block for ever
  (root / 'bees' / 'zero.jpg').symlink_to('/dev/zero')  # reading it would never end
  with open(root / 'bees' / 'huge.jpg', 'wb') as handle:  # 600 MB, sparse: no disk used
    handle.write(ANTS[3].read_bytes())
    handle.truncate(600 * 10**6)
  out = tmp_path / 'out'
  # a subprocess, so that a regression (a worker blocked in open) fails instead of hanging
  command = [sys.executable, '-m', 'pipeline.run', f'--input_dir={root}', f'--output_dir={out}',
             '--follow_external_symlinks', '--stats=false', *FLAGS]
  env = dict(os.environ, PYTHONPATH=f'{REPO}{os.pathsep}{REPO / "reader"}')
  result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  failures = _failures(out)
  assert 'FIFO' in failures['ants/pipe.jpg'][1]
  assert 'character device' in failures['bees/zero.jpg'][1]
  assert 'more than --max_file_bytes=536,870,912' in failures['bees/huge.jpg'][1]
  assert all(stage == 'list' for stage, _ in failures.values())
  assert set(_records(out)) == {f'ants/{p.name}' for p in ANTS[:3]} | {
      f'bees/{p.name}' for p in BEES[:3]}
  metrics = manifest_of(out)['metrics']
  photos = sum(p.stat().st_size for p in ANTS[:3] + BEES[:3])
  assert metrics['images_read'] == 6 and metrics['source_bytes_read'] == photos


def test_max_file_bytes_refuses_larger_photos_at_listing(tmp_path):
  limit = 60_000
  photos = ANTS[:6]
  out = tmp_path / 'out'
  root = tmp_path / 'in'
  _copy(photos, root / 'ants')
  assert convert(root, out, *FLAGS, f'--max_file_bytes={limit}',
                 '--max_failure_fraction=1', '--allow_single_class') == 0  # ants only
  small = {f'ants/{p.name}' for p in photos if p.stat().st_size <= limit}
  large = {f'ants/{p.name}' for p in photos if p.stat().st_size > limit}
  assert small and large
  assert set(_records(out)) == small
  assert set(_failures(out)) == large
  assert manifest_of(out)['metrics']['images_read'] == len(small)


@pytest.mark.slow
def test_a_jpeg_of_thousands_of_scans_fails_alone_and_fast(tmp_path):
  # issue 22, item 6: a real photo saved progressive, its scans repeated to 2,000 (a 64x64 one,
  # so that the old code's decode of it stayed short); the job refuses it before decoding
  root = tmp_path / 'in'
  photos = _copy(ANTS[:10], root / 'ants') + _copy(BEES[:9], root / 'bees')
  photo = shared_data('tiny_imagenet_val') / 'images' / 'val_0.JPEG'
  (root / 'bees' / 'scans.jpg').write_bytes(many_scan_jpeg(photo, 2000))
  out = tmp_path / 'out'
  assert convert(root, out, *FLAGS, '--max_failure_fraction=0.1') == 0
  assert _failures(out) == {'bees/scans.jpg': (
      'decode', 'progressive JPEG with 2000 scans (limit 100, --max_jpeg_scans): each scan is '
      'a pass over the whole image')}
  converted = {p.relative_to(root).as_posix() for p in photos}
  assert set(_records(out)) == converted
  assert manifest_of(out)['options']['max_jpeg_scans'] == 100
  # the limit is the flag's: raised to 2,000, the file converts with the others
  assert convert(root, tmp_path / 'raised', *FLAGS, '--max_jpeg_scans=2000') == 0
  assert set(_records(tmp_path / 'raised')) == converted | {'bees/scans.jpg'}


# --- 4. folders that cannot be listed ---------------------------------------------------------

@pytest.mark.slow
def test_a_folder_that_cannot_be_listed_is_reported(tmp_path, monkeypatch):
  root = tmp_path / 'in'
  _copy(ANTS[:3], root / 'ants')
  _copy(BEES[:3], root / 'bees')
  locked = root / 'bees' / 'locked'
  _copy(BEES[3:5], locked)
  locked.chmod(0)
  if os.geteuid() == 0:  # root lists any folder: refuse it as the kernel does everyone else
    scandir = os.scandir

    def refusing_scandir(path='.'):
      if not isinstance(path, int) and os.fspath(path) == str(locked):
        raise PermissionError(13, 'Permission denied', os.fspath(path))
      return scandir(path)
    monkeypatch.setattr(os, 'scandir', refusing_scandir)
  out = tmp_path / 'out'
  try:
    assert convert(root, out, *FLAGS) == 0
  finally:
    locked.chmod(0o755)
  failures = _failures(out)
  assert list(failures) == ['bees/locked/']
  stage, reason = failures['bees/locked/']
  assert stage == 'list' and 'cannot list this folder' in reason and 'denied' in reason
  assert manifest_of(out)['failures_by_stage'] == {'list': 1}
  assert len(_records(out)) == 6


# --- 5. names are literal ---------------------------------------------------------------------

def test_backslashes_and_line_breaks_are_part_of_names(tmp_path):
  root = tmp_path / 'in'
  names = ['back\\slash.jpg', 'new\nline.jpg', 'tab\there.jpg', 'a\\b\\c.jpg']
  _copy(ANTS[:4], root / 'ants', names)
  _copy(BEES[:2], root / 'dir\\name')  # a class folder with a backslash
  _copy(BEES[2:3], root / 'two\nlines')  # a class folder with a line break: no class
  out = tmp_path / 'out'
  assert convert(root, out, *FLAGS, '--max_failure_fraction=0.5') == 0
  records = _records(out)
  expected = {f'ants/{n}' for n in names} | {f'dir\\name/{p.name}' for p in BEES[:2]}
  assert set(records) == expected
  assert {r['image/class/text'].decode() for r in records.values()} == {'ants', 'dir\\name'}
  assert (out / 'labels.txt').read_text().splitlines() == ['ants', 'dir\\name']
  failures = _failures(out)
  assert list(failures) == [f'two\nlines/{BEES[2].name}']
  assert 'line break' in failures[f'two\nlines/{BEES[2].name}'][1]
  index = [json.loads(line) for line in (out / contract.IMAGES_INDEX_FILE).read_text().splitlines()]
  assert {entry['file'] for entry in index} == expected
  for record in records.values():  # the bytes of the file the name names
    source = root.joinpath(*record['image/filename'].decode().split('/'))
    assert record['image/key/sha256'].decode() == hashlib.sha256(source.read_bytes()).hexdigest()

