"""Every file of ../shared/data/messy, as its MANIFEST.txt describes it, through the whole job.

MANIFEST.txt has one line per file: ``name | bytes | Pillow header | Pillow full-decode result |
what it is``, where the header is ``FORMAT MODE WxH frames=N`` (``-`` when Pillow cannot open
the file) and the result is ``decodes``, ``OPEN-FAILS: ...`` or ``LOAD-FAILS: ...``. Each file
that decodes must become an example with the upright size, 3 (or 1) channels and the pixels of
its first frame; each other file must be reported with a reason naming what is wrong.
"""

import io
import json
import re
from typing import Dict, NamedTuple, Optional, Tuple

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.helpers import all_records, convert, manifest_of, shared_data

_HEADER_RE = re.compile(r'^(?P<format>\w+) (?P<mode>[\w;]+) (?P<w>\d+)x(?P<h>\d+) '
                        r'frames=(?P<frames>\d+)$')

# What the MANIFEST says is wrong with a file -> what the failure's reason must say. The first
# rule whose pattern is found in the entry's decode result or description applies; a failing
# entry that no rule covers fails the test, so a new kind of bad file needs a rule here.
_FAILURE_RULES = (
    (r'0-BYTE', r'^empty file \(0 bytes\)$'),
    (r'\bHTML\b', r'HTML content'),
    (r'\bSVG\b', r'\.svg is not an image file extension'),
    (r'12-bit', r'12-bit'),
    (r'stray text file', r'\.txt is not an image file extension'),
    (r'\.DS_Store', r'\.ds_store is not an image file extension'),
    (r'truncat|too short', r'^truncated image data'),
    (r'BROKEN|corrupt|unidentifiable|cannot be identified', r'corrupt'),
)


class Entry(NamedTuple):
  """One line of MANIFEST.txt."""
  name: str
  size: int  # bytes
  header: Optional[Tuple[str, str, int, int, int]]  # format, mode, width, height, frames
  decodes: bool
  text: str  # the decode result and the description, for the failure rules


def _manifest() -> Dict[str, Entry]:
  entries = {}
  for line in (shared_data('messy') / 'MANIFEST.txt').read_text().splitlines():
    parts = [part.strip() for part in line.split(' | ')]
    if len(parts) != 5 or not parts[1].isdigit():
      continue  # the title and source lines
    name, size, header, result, description = parts
    match = _HEADER_RE.match(header)
    assert match or header == '-', line
    entries[name] = Entry(
        name, int(size),
        match and (match['format'], match['mode'], int(match['w']), int(match['h']),
                   int(match['frames'])),
        result == 'decodes', f'{result} | {description}')
  return entries


@pytest.fixture(scope='module')
def manifest():
  entries = _manifest()
  assert len(entries) == 89
  for entry in entries.values():
    assert (shared_data('messy') / entry.name).stat().st_size == entry.size, entry.name
  return entries


def _run(tmp_path_factory, *flags):
  out = tmp_path_factory.mktemp('messy') / 'out'
  assert convert(shared_data('messy'), out, '--label_source=none', '--max_failure_fraction=1',
                 '--num_shards=1', *flags) == 0
  records = {r['image/filename'].decode(): r for _, r in all_records(out)}
  failures = {}
  for line in (out / 'failures.jsonl').read_text().splitlines():
    failure = json.loads(line)
    assert failure['relpath'] not in failures
    failures[failure['relpath']] = failure
  assert not set(records) & set(failures), 'a file is both an example and a failure'
  return out, records, failures


@pytest.fixture(scope='module')
def lossless(tmp_path_factory):
  """The messy folder at its source size, stored as raw pixels (lossless), 3 channels."""
  return _run(tmp_path_factory, '--resize_mode=none', '--image_format=raw')


def _pixels(record) -> np.ndarray:
  """A raw record's pixels, uint8 [height, width, channels]."""
  shape = record['image/height'], record['image/width'], record['image/channels']
  assert len(record['image/encoded']) == shape[0] * shape[1] * shape[2]
  return np.frombuffer(record['image/encoded'], np.uint8).reshape(shape)


def _reference(path) -> np.ndarray:
  """What the file should become, straight from Pillow: first frame, upright, transparency
  composited on white, 16-bit samples scaled to 8 bits, as uint8 [H, W, 3]."""
  with Image.open(path) as image:
    image.seek(0)
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith('I'):
      samples = np.asarray(image, dtype=np.float64)
      gray = np.rint(samples * 255 / 65535).astype(np.uint8)
      opaque = (np.asarray(image) != image.info['transparency']
                if 'transparency' in image.info else np.ones(gray.shape, bool))
      return np.where(opaque[..., None], gray[..., None], 255).repeat(3, axis=-1)
    rgba = image.convert('RGBA')
    white = Image.new('RGBA', rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert('RGB'))


def _upright_size(entry: Entry, path) -> Tuple[int, int]:
  """(width, height) after EXIF orientation: 5-8 swap the header's width and height."""
  _, _, width, height, _ = entry.header
  with Image.open(path) as image:
    orientation = image.getexif().get(0x0112, 1)
  stated = re.search(r'Orientation=(\d)', entry.text)
  if stated:  # where the MANIFEST names the orientation, the file must agree
    assert int(stated[1]) == orientation, entry.name
  return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


@pytest.mark.slow
def test_every_decodable_file_is_an_upright_first_frame_example(manifest, lossless):
  _, records, failures = lossless
  messy = shared_data('messy')
  decodable = [entry for entry in manifest.values() if entry.decodes]
  assert len(decodable) == 72
  for entry in decodable:
    assert entry.name in records, (entry.name, failures.get(entry.name))
    record = records[entry.name]
    upright = _upright_size(entry, messy / entry.name)
    assert (record['image/width'], record['image/height']) == upright, entry.name
    assert record['image/channels'] == 3 and record['image/format'] == b'raw'
    pixels = _pixels(record).astype(int)
    # CMYK and L*a*b* go through colour management, JPEGs through another IDCT: a level or two
    difference = np.abs(pixels - _reference(messy / entry.name)).mean()
    assert difference < 2.0, (entry.name, difference)


def test_manifest_claims_that_can_be_checked_on_the_records(manifest, lossless):
  _, records, _ = lossless
  checked = {'grayscale': 0, 'non-square orientation': 0, 'first frame': 0}
  for entry in manifest.values():
    if not entry.decodes:
      continue
    _, mode, width, height, frames = entry.header
    pixels = _pixels(records[entry.name])
    if mode in ('L', '1', 'I', 'I;16') and 'trns' not in entry.name.lower():
      assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
      checked['grayscale'] += 1
    if re.search(r'Orientation=[5-8]', entry.text) and width != height:
      assert pixels.shape[:2] == (width, height), entry.name  # W/H swapped
      checked['non-square orientation'] += 1
    if frames > 1:
      with Image.open(shared_data('messy') / entry.name) as source:
        source.seek(frames - 1)
        last = np.asarray(source.convert('RGB')).astype(int)
      first = _reference(shared_data('messy') / entry.name).astype(int)
      if first.shape != last.shape:  # frames of different sizes: ours has the first's
        assert pixels.shape == first.shape != last.shape, entry.name
        checked['first frame'] += 1
      elif np.abs(first - last).mean() > 5:  # frames that differ: ours is the first
        assert np.abs(pixels.astype(int) - first).mean() < np.abs(pixels.astype(int) - last).mean()
        checked['first frame'] += 1
  assert checked['grayscale'] >= 6 and checked['non-square orientation'] == 1
  assert checked['first frame'] >= 2, checked


def test_every_bad_file_is_reported_with_a_reason_naming_what_is_wrong(manifest, lossless):
  out, records, failures = lossless
  bad = [entry for entry in manifest.values() if not entry.decodes]
  assert len(bad) == 17
  for entry in bad:
    assert entry.name not in records, entry.name
    assert entry.name in failures, f'{entry.name} is neither an example nor a failure'
    rule = next((reason for pattern, reason in _FAILURE_RULES if re.search(pattern, entry.text)),
                None)
    assert rule, f'no rule for what is wrong with {entry.name}: {entry.text}'
    assert re.search(rule, failures[entry.name]['reason'], re.IGNORECASE), (
        entry.name, failures[entry.name]['reason'], rule)
    assert failures[entry.name]['stage'] in ('list', 'decode')
  assert set(records) | set(failures) == set(manifest) | {'MANIFEST.txt'}
  summary = manifest_of(out)
  assert summary['num_examples'] == 72


@pytest.mark.slow
def test_channels_1_keeps_every_file_gray(manifest, tmp_path_factory):
  out, records, failures = _run(tmp_path_factory, '--channels=1', '--resize_mode=center_crop',
                                '--image_size=24')
  assert manifest_of(out)['image']['channels'] == 1
  assert set(records) == {entry.name for entry in manifest.values() if entry.decodes}
  assert set(failures) == {entry.name for entry in manifest.values() if not entry.decodes} | {
      'MANIFEST.txt'}
  for name, record in records.items():
    assert record['image/channels'] == 1
    with Image.open(io.BytesIO(record['image/encoded'])) as stored:
      assert stored.mode == 'L' and stored.size == (24, 24), name
