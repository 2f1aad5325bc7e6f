"""Near duplicates and quality flags from the measures of the stored pixels, on real photos.

The pipeline-level checks (catdog_filenames' near-identical pairs, leakage, label conflicts,
keep_first_near) are in test_dedup.py; these check the pieces: the hash against known edits
of real photos, the LSH bands, the grouping, and the quality thresholds on the shared data.
"""

import io
import random

import numpy as np
from PIL import Image

from tests.helpers import SAMPLES, shared_data
from transforms.analysis import near_duplicates, quality
from transforms.image import codec, image_measures

SPEC = codec.ImageSpec(image_size=256, resize_mode='shorter_side', image_format='jpeg')


def _measures(data: bytes) -> image_measures.ImageMeasures:
  converted = codec.convert_keeping_pixels(data, SPEC)
  return image_measures.measure(converted.pixels, converted.source_size)


def _jpeg(image: Image.Image, quality_: int = 90) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, 'JPEG', quality=quality_)
  return buffer.getvalue()


def test_edited_copies_hash_close_and_distinct_photos_far():
  photos = sorted(SAMPLES.rglob('*.jpg'))[:12]
  hashes = []
  for photo in photos:
    data = photo.read_bytes()
    original = _measures(data)
    hashes.append(original.phash)
    with Image.open(io.BytesIO(data)) as image:
      image = image.convert('RGB')
      width, height = image.size
      edits = {'q50': _jpeg(image, 50), 'half': _jpeg(image.reduce(2)),
               'crop 4 px': _jpeg(image.crop((4, 4, width - 4, height - 4)))}
      flipped = _jpeg(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    for name, edited in edits.items():
      distance = image_measures.hamming(original.phash, _measures(edited).phash)
      assert distance <= near_duplicates.DEFAULT_DISTANCE, (photo.name, name, distance)
    # a mirror image is another picture for the hash (documented: flips are not found)
    assert image_measures.hamming(original.phash, _measures(flipped).phash) > 16
  for i, a in enumerate(hashes):
    for b in hashes[i + 1:]:
      assert image_measures.hamming(a, b) > near_duplicates.DEFAULT_DISTANCE


def test_hashes_within_three_bits_share_a_band():
  rng = random.Random(14)
  for _ in range(2000):
    a = rng.getrandbits(64)
    b = a
    for bit in rng.sample(range(64), rng.randint(0, 3)):
      b ^= 1 << bit
    assert set(near_duplicates.band_keys(a)) & set(near_duplicates.band_keys(b))
  assert len(near_duplicates.band_keys(0)) == near_duplicates.NUM_BANDS


def _node(name, sha256=None):
  """A graph node: the file, split, class, and its content's digest (one per file unless
  given)."""
  return (name, 'train', 'a', sha256 or f'sha256 of {name}')


def test_bucket_edges_chain_equal_hashes_and_confirm_by_distance():
  members = [(0b0, _node(f'{i}.jpg')) for i in range(4)]  # four equal hashes: one link
  members.append((0b111, _node('near.jpg')))  # 3 bits from them
  members.append((0xFFFF0000FFFF0000, _node('far.jpg')))  # 32 bits away
  edges = list(near_duplicates.bucket_edges(members, distance=3))
  assert len(edges) == 1 + 1
  assert tuple(_node(f'{i}.jpg') for i in range(4)) in edges
  names = {tuple(node[0] for node in link) for link in edges}
  assert ('0.jpg', 'near.jpg') in names and not any('far.jpg' in link for link in names)
  # a later band leaves equal hashes, and pairs that share an earlier band, to that band:
  # 0b0 and 0b111 differ in band 0 only, so band 1 finds them, band 2 leaves them to band 1
  assert list(near_duplicates.bucket_edges(members, distance=3, band=1)) == [
      (_node('0.jpg'), _node('near.jpg'))]
  assert list(near_duplicates.bucket_edges(members, distance=3, band=2)) == []
  assert not [e for e in near_duplicates.bucket_edges(members, distance=2)
              if 'near.jpg' in (e[0][0], e[1][0])]


def test_components_join_through_shared_files_and_skip_exact_only_groups():
  a, b, c, d = (_node(n) for n in ('a.jpg', 'b.jpg', 'c.jpg', 'd.jpg'))
  same1, same2 = _node('x.jpg', sha256='one'), _node('y.jpg', sha256='one')
  e, f, g = (_node(n) for n in ('e.jpg', 'f.jpg', 'g.jpg'))
  edges = [(b, c), (a, b), (d, c), (same1, same2), (a, b), (g, f, e), (e, d)]
  assert near_duplicates.components(edges) == [[a, b, c, d, e, f, g], [same1, same2]]
  edges = edges[:5]
  assert near_duplicates.components(edges) == [[a, b, c, d], [same1, same2]]
  groups = list(near_duplicates.near_groups(edges, keep_first=True))
  assert len(groups) == 1  # x.jpg and y.jpg are byte-identical: an exact group, not near
  assert [f.file for f in groups[0].files] == ['a.jpg', 'b.jpg', 'c.jpg', 'd.jpg']
  assert groups[0].kind == 'near' and groups[0].kept == 'a.jpg'
  dropped = dict(near_duplicates.dropped_files(groups[0]))
  assert set(dropped) == {'b.jpg', 'c.jpg', 'd.jpg'}
  assert dropped['b.jpg'].stage == 'duplicate' and 'near-identical to a.jpg' in dropped['b.jpg'].reason


def test_the_placeholder_is_flagged_and_real_photos_rarely():
  root = shared_data('hymenoptera')
  flagged = {}
  files = sorted(path for path in root.rglob('*') if path.is_file())
  for path in files:
    flags = quality.flags_of(_measures(path.read_bytes()))
    if flags:
      flagged[path.relative_to(root).as_posix()] = flags
  placeholder = flagged.pop('train/ants/imageNotFound.gif')
  assert quality.LOW_INFORMATION in placeholder and quality.BRIGHT in placeholder
  assert len(flagged) <= 0.01 * (len(files) - 1), flagged  # 3 of 397 when measured


def test_measures_of_gray_and_uniform_pixels():
  with Image.open(SAMPLES / 'bees' / sorted(p.name for p in (SAMPLES / 'bees').glob('*.jpg'))[0]
                  ) as image:
    gray = np.asarray(image.convert('L').convert('RGB'))
  measures = image_measures.measure(gray, (gray.shape[1], gray.shape[0]))
  assert measures.colour == 0.0 and quality.GRAYSCALE in quality.flags_of(measures)
  assert quality.GRAYSCALE not in quality.flags_of(measures, channels=1)
  one_channel = image_measures.measure(gray[..., :1], (gray.shape[1], gray.shape[0]))
  assert one_channel.phash == measures.phash and one_channel.colour == 0.0
  blank = np.full((20, 300, 3), 7, np.uint8)  # a dark strip: every flag but colour's
  flags = quality.flags_of(image_measures.measure(blank, (300, 20)))
  assert flags == [quality.LOW_INFORMATION, quality.DARK, quality.GRAYSCALE, quality.SMALL,
                   quality.ODD_ASPECT]


def test_measures_of_a_thumbnail_sized_image_equal_those_through_the_resize(monkeypatch):
  # a 64x64 image is its own thumbnail (cv2.resize to the same size copies it): the measures
  # taken without the resize equal those taken through it, on real 64x64 photos
  photos = sorted((shared_data('tiny_imagenet_val') / 'images').glob('*.JPEG'))[:40]
  spec = codec.ImageSpec(image_size=64)
  converted = [codec.convert_keeping_pixels(path.read_bytes(), spec) for path in photos]
  assert all(item.pixels.shape == (64, 64, 3) for item in converted)
  pixels = [item.pixels for item in converted] + [item.pixels[..., :1] for item in converted]
  direct = [image_measures.measure(item, (64, 64)) for item in pixels]
  monkeypatch.setattr(image_measures, '_THUMBNAIL_SHAPE', None)  # always through cv2.resize
  assert direct == [image_measures.measure(item, (64, 64)) for item in pixels]
  assert all(type(value) is float for measures in direct for value in measures[3:])
