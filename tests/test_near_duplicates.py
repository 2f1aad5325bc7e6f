"""Near duplicates and quality flags from the measures of the stored pixels, on real photos.

The pipeline-level checks (catdog_filenames' near-identical pairs, leakage, label conflicts,
keep_first_near) are in test_dedup.py; these check the pieces: the hash against known edits
of real photos, the LSH bands, the grouping, and the quality thresholds on the shared data.
"""

import io
import random
import threading

import numpy as np
from PIL import Image, ImageEnhance

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


def _node(name):
  """A graph node: a content (the job's is its SHA-256 digest; here, its file's name)."""
  return f'content of {name}'


def _photo_pixels():
  """The measured pixels of one real photo and of a different one."""
  photos = sorted(SAMPLES.rglob('*.jpg'))
  return [_measures(photo.read_bytes()).pixels for photo in photos[:2]]


def test_bucket_edges_chain_equal_hashes_and_confirm_by_distance_and_pixels():
  pixels, other = _photo_pixels()
  members = [(0b0, pixels, _node(f'{i}.jpg')) for i in range(4)]  # equal hashes and pixels
  members.append((0b111, pixels, _node('near.jpg')))  # 3 bits from them, the same picture
  members.append((0b1, other, _node('other.jpg')))  # 1 bit from them, another picture
  members.append((0xFFFF0000FFFF0000, pixels, _node('far.jpg')))  # 32 bits away
  edges = list(near_duplicates.bucket_edges(members, distance=3))
  assert edges[0] == (1.0, 0, tuple(_node(f'{i}.jpg') for i in range(4)))  # one link of 4
  assert edges[1:] == [(1.0, 3, (_node('0.jpg'), _node('near.jpg')))]
  # with no least similarity, the other picture is linked by its hash alone
  assert (_node('0.jpg'), _node('other.jpg')) in [
      nodes for _, _, nodes in near_duplicates.bucket_edges(members, 3, 0.0)]
  # a later band leaves equal hashes, and pairs that share an earlier band, to that band:
  # 0b0 and 0b111 differ in band 0 only, so band 1 finds them, band 2 leaves them to band 1
  assert list(near_duplicates.bucket_edges(members, 3, band=1)) == [
      (1.0, 3, (_node('0.jpg'), _node('near.jpg')))]
  assert list(near_duplicates.bucket_edges(members, 3, band=2)) == []
  assert not [e for e in near_duplicates.bucket_edges(members, distance=2)
              if _node('near.jpg') in e[2]]
  # equal hashes but other pixels are compared, not linked as one
  same_hash = [(0b0, pixels, _node('a.jpg')), (0b0, other, _node('b.jpg'))]
  assert list(near_duplicates.bucket_edges(same_hash, 3)) == []
  # copies of one content are one node: a thousand of them make no link at all
  assert list(near_duplicates.bucket_edges([(0b0, pixels, _node('a.jpg'))] * 1000, 3)) == []


def test_components_join_through_shared_pictures_and_groups_list_every_file_once():
  a, b, c, d, e, f, g = (_node(n) for n in 'abcdefg')
  same1, same2 = _node('x'), _node('y')
  edges = [(b, c), (a, b), (d, c), (same1, same2), (a, b), (g, f, e), (e, d)]
  assert near_duplicates.components(edges) == [[a, b, c, d, e, f, g], [same1, same2]]
  edges = edges[:5]
  assert near_duplicates.components(edges) == [[a, b, c, d], [same1, same2]]
  links = [(0.9, 4, (b, c)), (0.97, 2, (a, b)), (0.85, 7, (d, c)), (1.0, 0, (same1, same2))]
  groups = near_duplicates.linked_groups(links)
  # the weakest link and the farthest hashes of each group are kept with it
  assert groups == [((a, b, c, d), 0.85, 7), ((same1, same2), 1.0, 0)]
  # the files of a group's pictures, each once, sorted by path; a re-saved copy of a.jpg too
  files = [('d.jpg', 'val', 'x', b'd'), ('b.jpg', 'train', 'x', b'b'),
           ('a.jpg', 'train', 'x', b'a'), ('c.jpg', 'train', 'x', b'c'),
           ('a copy of a.jpg', 'val', 'x', b'a2'), ('b.jpg', 'train', 'x', b'b')]
  group = near_duplicates.near_group(files, 0.85, 7, keep_first=True)
  assert [f.file for f in group.files] == ['a copy of a.jpg', 'a.jpg', 'b.jpg', 'c.jpg', 'd.jpg']
  assert group.kind == 'near' and group.kept == 'a copy of a.jpg' and group.leaks
  assert (group.similarity, group.hash_distance) == (0.85, 7)
  assert group.to_dict()['similarity'] == 0.85 and group.to_dict()['hash_distance'] == 7
  assert near_duplicates.near_group(files).kept is None
  # byte-identical files alone are an exact group, not a near one
  assert near_duplicates.near_group([('x.jpg', 'train', 'x', b'1'),
                                     ('y.jpg', 'train', 'x', b'1')]) is None
  dropped = dict(near_duplicates.dropped_files(group))
  assert set(dropped) == {'a.jpg', 'b.jpg', 'c.jpg', 'd.jpg'}
  assert dropped['b.jpg'].stage == 'duplicate'
  assert 'near-identical to a copy of a.jpg' in dropped['b.jpg'].reason
  assert 'similarity 0.850 or more' in dropped['b.jpg'].reason


# Different pictures whose hashes (at the job's default size) are within the default distance:
# (file of ../shared/data, file, bits apart); found by bench/near_duplicates.py --parts=precision
DIFFERENT_WITHIN_THE_DISTANCE = [
    ('tiny_imagenet_val/images/val_495.JPEG', 'tiny_imagenet_val/images/val_92.JPEG', 9),
    # chopsticks on pink, a green pepper on white
    ('tiny_imagenet_val/images/val_776.JPEG', 'messy/pillow__12in16bit.tif', 5),
    # a freight car, a black frame
    ('tiny_imagenet_val/images/val_836.JPEG', 'messy/pillow__jfif_unit_cm.jpg', 10),
    # a loaf on white, a black frame
    ('messy/pillow__multipage.tiff', 'messy/pillow__orientation_rectangle.jpg', 0),
    # a green frame, a red frame
    ('messy/pillow__tRNS_null_1x1.png', 'messy/pillow__12in16bit.tif', 0),
    # a white frame, a black frame
]

# The same picture in two files of the shared data (looked at side by side)
COPIES = [('catdog_filenames/train/cat.138.jpg', 'catdog_filenames/train/cat.86.jpg'),
          ('catdog_filenames/train/dog.1021.jpg', 'catdog_filenames/train/dog.1070.jpg'),
          ('catdog_filenames/train/dog.1076.jpg', 'catdog_filenames/train/dog.1098.jpg'),
          ('messy/pillow__hopper.bmp', 'messy/pillow__hopper.webp'),
          ('messy/pillow__hopper.bmp', 'messy/pillow__hopper_orientation_6.jpg'),
          ('messy/pillow__pil_sample_cmyk.jpg', 'messy/pillow__pil_sample_rgb.jpg'),
          ('messy/pillow__transparent.gif', 'messy/pillow__transparent.webp'),
          ('messy/pillow__flower2.jpg', 'messy/pillow__jpeg_ff00_header.jpg')]


def _shared_measures(name):
  data_set, rest = name.split('/', 1)
  return _measures((shared_data(data_set) / rest).read_bytes())


def test_different_pictures_within_the_hash_distance_are_not_confirmed():
  for name_a, name_b, bits in DIFFERENT_WITHIN_THE_DISTANCE:
    a, b = _shared_measures(name_a), _shared_measures(name_b)
    assert image_measures.hamming(a.phash, b.phash) == bits <= near_duplicates.DEFAULT_DISTANCE
    alike = near_duplicates.similarity(a.pixels, b.pixels)
    assert alike < near_duplicates.MIN_SIMILARITY, (name_a, name_b, alike)
    nodes = [((a.phash, a.pixels, _node(name_a))), (b.phash, b.pixels, _node(name_b))]
    assert list(near_duplicates.bucket_edges(nodes, near_duplicates.DEFAULT_DISTANCE)) == []


def test_copies_in_the_shared_data_and_edited_copies_are_confirmed():
  for name_a, name_b in COPIES:
    a, b = _shared_measures(name_a), _shared_measures(name_b)
    assert image_measures.hamming(a.phash, b.phash) <= near_duplicates.DEFAULT_DISTANCE
    assert near_duplicates.similarity(a.pixels, b.pixels) >= near_duplicates.MIN_SIMILARITY, (
        name_a, name_b)
  for photo in sorted(SAMPLES.rglob('*.jpg'))[:8]:
    data = photo.read_bytes()
    original = _measures(data)
    assert near_duplicates.similarity(original.pixels, original.pixels) == 1.0
    with Image.open(io.BytesIO(data)) as image:
      image = image.convert('RGB')
      width, height = image.size
      dx, dy = width // 50, height // 50
      edits = {'q50': _jpeg(image, 50), 'half': _jpeg(image.reduce(2)),
               'crop 2%': _jpeg(image.crop((dx, dy, width - dx, height - dy))),
               'brighter': _jpeg(ImageEnhance.Brightness(image).enhance(1.2))}
    for name, edited in edits.items():
      copy = _measures(edited)
      alike = near_duplicates.similarity(original.pixels, copy.pixels)
      assert alike >= near_duplicates.MIN_SIMILARITY, (photo.name, name, alike)


def test_the_pixels_are_kept_in_the_index_and_read_back():
  measures = _measures(sorted(SAMPLES.rglob('*.jpg'))[0].read_bytes())
  assert len(measures.pixels) == 96
  entry = measures.to_index()
  assert isinstance(entry['pixels'], str) and len(entry['pixels']) == 128  # base64
  assert image_measures.ImageMeasures.from_index(entry) == measures
  del entry['pixels']  # an index written before the pixels were measured
  assert image_measures.ImageMeasures.from_index(entry).pixels is None


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
  assert all(type(value) is float for measures in direct for value in measures[3:7])


def test_phash_gives_each_thread_the_sequential_hashes():
  """An SDK worker runs bundles in several threads (on Flink, two subtasks of the conversion in
  one worker). One img_hash.PHash shared by the process keeps its working images between
  calls: 4 threads hashing 200 real photos 30 times each got other hashes in 116 of 120
  passes, and at 1,000,000 images a worker crashed in cv2 (SIGSEGV). Each thread has its own."""
  photos = sorted((shared_data('tiny_imagenet_val') / 'images').iterdir())[:200]
  lumas = [np.asarray(Image.open(p).convert('L').resize((32, 32))) for p in photos]
  expected = [image_measures.phash(luma) for luma in lumas]
  wrong = []

  def hash_all():
    for _ in range(30):
      got = [image_measures.phash(luma) for luma in lumas]
      wrong.append(sum(a != b for a, b in zip(got, expected)))

  threads = [threading.Thread(target=hash_all) for _ in range(4)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert len(wrong) == 120 and not any(wrong), wrong
