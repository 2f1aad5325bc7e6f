"""The per-image conversion on real files: orientation, resize modes, errors, serialization."""

import io
import pathlib
import re
import struct
import subprocess
import sys
import threading
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.helpers import REPO, SAMPLES, many_scan_jpeg, shared_data
from transforms.image import codec, jpeg_markers, masks, resizing
from transforms.image.example import build_example

NONE = codec.ImageSpec(resize_mode='none')


def _pillow_upright(path):
  with Image.open(path) as image:
    return np.asarray(ImageOps.exif_transpose(image).convert('RGB'))


@pytest.mark.parametrize('orientation', [2, 3, 5, 6, 8])
def test_exif_orientation_matches_pillow(orientation):
  path = shared_data('messy') / f'pillow__hopper_orientation_{orientation}.jpg'
  ours = codec.decode(path.read_bytes(), NONE)
  expected = _pillow_upright(path)
  assert ours.shape == expected.shape
  # both decode with libjpeg-turbo; the IDCT/upsampling settings may differ by a level or two
  assert np.abs(ours.astype(int) - expected.astype(int)).mean() < 2.0


def test_non_square_orientation_swaps_width_and_height():
  data = (shared_data('messy') / 'pillow__orientation_rectangle.jpg').read_bytes()
  with Image.open(io.BytesIO(data)) as raw:
    assert raw.size == (2, 1)
  assert codec.decode(data, NONE).shape == (2, 1, 3)


def test_resize_modes_on_a_real_photo():
  data = next(SAMPLES.glob('ants/*.jpg')).read_bytes()
  height, width = codec.decode(data, NONE).shape[:2]
  crop = codec.convert(data, codec.ImageSpec(image_size=100, resize_mode='center_crop'))
  assert (crop.height, crop.width) == (100, 100)
  shorter = codec.convert(data, codec.ImageSpec(image_size=100, resize_mode='shorter_side'))
  assert min(shorter.height, shorter.width) == 100
  assert abs(shorter.width / shorter.height - width / height) < 0.02
  with Image.open(io.BytesIO(crop.data)) as stored:
    assert stored.format == 'JPEG' and stored.size == (100, 100) and stored.mode == 'RGB'


def test_dct_downscaled_decode_matches_a_full_decode():
  path = shared_data('messy') / 'debian_ukui__rhythm_8.9MB_3840px.jpg'  # 3840x2400
  spec = codec.ImageSpec(image_size=256, resize_mode='center_crop')
  fast = resizing.resize(codec.decode(path.read_bytes(), spec), 256, 'center_crop')
  full = resizing.resize(codec.decode(path.read_bytes(), NONE), 256, 'center_crop')
  assert fast.shape == full.shape == (256, 256, 3)
  assert np.abs(fast.astype(int) - full.astype(int)).mean() < 3.0


def test_png_output_is_lossless():
  data = next(SAMPLES.glob('bees/*.jpg')).read_bytes()
  spec = codec.ImageSpec(image_size=64, resize_mode='center_crop', image_format='png')
  encoded = codec.convert(data, spec)
  expected = resizing.resize(codec.decode(data, spec), 64, 'center_crop')
  with Image.open(io.BytesIO(encoded.data)) as stored:
    assert np.array_equal(np.asarray(stored.convert('RGB')), expected)


@pytest.mark.parametrize('name, words', [
    ('constructed__zero_bytes.jpg', 'empty file'),
    ('constructed__html_error_page_saved_as.jpg', 'HTML'),
    ('gnome__blobs-d.svg', 'SVG'),
    ('pillow__truncated_image.png', 'truncated'),
    ('pillow__broken_data_stream.png', 'corrupt'),
    ('ljt__monkey12.jpg', '12-bit'),
])
def test_bad_files_fail_with_a_reason_naming_what_is_wrong(name, words):
  with pytest.raises(codec.ImageError, match=words):
    codec.convert((shared_data('messy') / name).read_bytes(), codec.ImageSpec())


def test_decompression_bomb_is_refused_from_the_header():
  data = next(SAMPLES.glob('ants/*.jpg')).read_bytes()
  with pytest.raises(codec.ImageError, match='decompression bomb'):
    codec.convert(data, codec.ImageSpec(max_pixels=1000))


TINY_PHOTO = ('tiny_imagenet_val', 'images', 'val_0.JPEG')  # a real 64x64 photo


def test_jpeg_scans_are_counted_from_the_markers():
  messy = shared_data('messy')
  assert jpeg_markers.jpeg_scans(next(SAMPLES.glob('ants/*.jpg')).read_bytes()) == (1, False)
  progressive = (messy / 'debian_mate__FreshFlower_progressive.jpg').read_bytes()
  assert jpeg_markers.jpeg_scans(progressive) == (10, True)
  # markers inside segments are stepped over: a 400 KB ICC profile over many APP2 segments
  # (0xFFDA 53 times in the file), and an MPO's second picture after the first one's EOI
  icc = (messy / 'pillow__icc_profile_big.jpg').read_bytes()
  assert icc.count(b'\xff\xda') == 53 and jpeg_markers.jpeg_scans(icc) == (10, True)
  assert jpeg_markers.jpeg_scans((messy / 'pillow__sugarshack.mpo').read_bytes()) == (1, False)
  assert jpeg_markers.jpeg_scans((messy / 'ljt__testorig.png').read_bytes()) == (0, False)
  hostile = many_scan_jpeg(shared_data('tiny_imagenet_val').joinpath(*TINY_PHOTO[1:]), 2000)
  assert jpeg_markers.jpeg_scans(hostile) == (2000, True)


def test_a_jpeg_of_too_many_scans_is_refused_before_any_decoding(monkeypatch):
  hostile = many_scan_jpeg(shared_data('tiny_imagenet_val').joinpath(*TINY_PHOTO[1:]), 2000)

  def decoded(*args, **kwargs):
    raise AssertionError('decoded a JPEG the scan limit refuses')
  monkeypatch.setattr(codec.simplejpeg, 'decode_jpeg', decoded)
  monkeypatch.setattr(codec.ImageFile.ImageFile, 'load', decoded)
  reason = re.escape('progressive JPEG with 2000 scans (limit 100, --max_jpeg_scans)')
  for image_format in ('jpeg', 'original'):  # the reader would decode the kept bytes too
    with pytest.raises(codec.ImageError, match=reason):
      codec.convert(hostile, codec.ImageSpec(image_format=image_format))


def test_max_jpeg_scans_is_the_most_scans_accepted():
  data = (shared_data('messy') / 'pillow__app13-multiple.jpg').read_bytes()  # 11 scans
  assert codec.convert(data, codec.ImageSpec(max_jpeg_scans=11)).height == 256  # 256x160
  with pytest.raises(codec.ImageError, match=re.escape('with 11 scans (limit 10,')):
    codec.convert(data, codec.ImageSpec(max_jpeg_scans=10))
  with pytest.raises(ValueError, match='max_jpeg_scans must be at least 1'):
    codec.ImageSpec(max_jpeg_scans=0)


def test_example_bytes_parse_with_tensorflow():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  data = next(SAMPLES.glob('ants/*.jpg')).read_bytes()
  image = codec.convert(data, codec.ImageSpec(image_size=32, resize_mode='center_crop'))
  serialized = build_example(image, 'ants/été 1.jpg', 'ab' * 32, 'ants', 300)
  example = tf.train.Example.FromString(serialized)
  feature = example.features.feature
  assert feature['image/encoded'].bytes_list.value == [image.data]
  assert feature['image/class/label'].int64_list.value == [300]
  assert feature['image/filename'].bytes_list.value == ['ants/été 1.jpg'.encode()]
  assert feature['image/height'].int64_list.value == [32]
  assert example.SerializeToString(deterministic=True) == serialized
  unlabeled = tf.train.Example.FromString(build_example(image, 'x.jpg', 'cd' * 32))
  assert 'image/class/label' not in unlabeled.features.feature


def test_build_example_gives_the_bytes_of_serialize_example_every_time():
  # the same features give the same bytes, whatever record came before
  # pylint: disable=import-outside-toplevel
  from imagerecords import contract
  from imagerecords.records import serialize_example
  spec = codec.ImageSpec(image_size=48)  # shorter side: not square
  images = [codec.convert(path.read_bytes(), spec) for path in sorted(SAMPLES.glob('*/*.jpg'))[:4]]
  assert any(image.height != image.width for image in images)
  for image in images * 2:  # the second time round, from the cache
    for label, class_id, mask in (('ants', 1, None), ('bees', 0, b'\x89PNG mask'),
                                  (None, None, None), ('été', 2**40, None)):
      features = {contract.IMAGE_ENCODED: image.data, contract.IMAGE_FORMAT: b'jpeg',
                  contract.IMAGE_HEIGHT: image.height, contract.IMAGE_WIDTH: image.width,
                  contract.IMAGE_CHANNELS: image.channels,
                  contract.FILENAME: 'a/b c.jpg'.encode(), contract.SOURCE_SHA256: b'ef' * 32}
      if label is not None:
        features.update({contract.CLASS_LABEL: class_id, contract.CLASS_TEXT: label.encode()})
      if mask is not None:
        features.update({contract.MASK_ENCODED: mask, contract.MASK_FORMAT: b'png'})
      assert build_example(image, 'a/b c.jpg', 'ef' * 32, label, class_id,
                           mask=mask) == serialize_example(features)
  # a bool feature is written as the int it is
  assert serialize_example({'x': True}) == serialize_example({'x': 1})
  with pytest.raises(ValueError, match='negative'):
    build_example(images[0], 'a.jpg', 'ef' * 32, 'ants', -1)


def _tf_features(example) -> dict:
  """tf.train.Example -> {key: list of values}, as imagerecords.records.parse_example returns."""
  parsed = {}
  for key, feature in example.features.feature.items():
    kind = feature.WhichOneof('kind')
    parsed[key] = list(getattr(feature, kind).value) if kind else []
  return parsed


@pytest.mark.slow
def test_records_parse_reads_what_tensorflow_reads(sample_dataset):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from imagerecords import framing, records  # pylint: disable=import-outside-toplevel
  shard = sorted(pathlib.Path(sample_dataset).glob('train-*.tfrecord'))[0]
  with shard.open('rb') as stream:
    written = list(framing.read_records(stream))
  assert written
  for record in written:  # the job's own records: real photos, labels, sha256, filenames
    expected = _tf_features(tf.train.Example.FromString(record))
    assert records.parse_example(record) == expected
    assert records.example_filename(record) == expected['image/filename'][0].decode()
    assert records.parse_example(record, keys=['image/class/label']) == {
        'image/class/label': expected['image/class/label']}
  # What this job never writes but TensorFlow does: negative and unpacked ints, float lists
  # (float32 values), several values, an empty feature.
  example = tf.train.Example(features=tf.train.Features(feature={
      'ints': tf.train.Feature(int64_list=tf.train.Int64List(value=[-3, 0, 2**40, -(2**63)])),
      'floats': tf.train.Feature(float_list=tf.train.FloatList(value=[0.1, -2.5, 1e30])),
      'many': tf.train.Feature(bytes_list=tf.train.BytesList(value=[b'a', b'', b'\xff' * 300])),
      'empty': tf.train.Feature()}))
  serialized = example.SerializeToString()
  assert records.parse_example(serialized) == _tf_features(example)
  with pytest.raises(records.RecordError, match='not a tf.train.Example'):
    records.parse_example(written[0][:len(written[0]) // 2])


# --- resize geometry (shared with segmentation masks) ------------------------------------------

@pytest.mark.parametrize('mode, crop_box, size, pad', [
    ('center_crop', (62, 0, 437, 375), (100, 100), (0, 0, 0, 0)),
    ('shorter_side', (0, 0, 500, 375), (133, 100), (0, 0, 0, 0)),
    ('pad', (0, 0, 500, 375), (100, 75), (0, 12, 0, 13)),
    ('stretch', (0, 0, 500, 375), (100, 100), (0, 0, 0, 0)),
    ('none', (0, 0, 500, 375), (500, 375), (0, 0, 0, 0)),
])
def test_resize_geometry_of_each_mode(mode, crop_box, size, pad):
  geometry = resizing.resize_geometry(500, 375, codec.ImageSpec(image_size=100, resize_mode=mode))
  assert geometry == (crop_box, size, pad)
  expected = (100, 100) if mode in ('center_crop', 'pad', 'stretch') else size
  assert geometry.output_size == expected


@pytest.mark.parametrize('mode', ['center_crop', 'pad', 'stretch', 'shorter_side'])
def test_a_mask_given_the_same_geometry_lines_up_with_its_image(mode):
  """A 'mask' whose value is the source column index, cropped and resized by the job's mask
  resizer (masks.resize_mask: nearest-neighbour) with resize_geometry's geometry, stays aligned
  with the image's own crop of a column ramp; its padding is void."""
  spec = codec.ImageSpec(image_size=64, resize_mode=mode, image_format='png')
  width, height = 500, 375
  ramp = np.tile(np.linspace(0, 255, width).round().astype(np.uint8), (height, 1))
  image = resizing.resize(np.repeat(ramp[..., None], 3, axis=-1), 64, mode, background=(0, 0, 0))
  geometry = resizing.resize_geometry(width, height, spec)
  mask = masks.resize_mask(ramp, geometry)
  assert mask.shape == image.shape[:2] and mask.dtype == np.uint8
  inside = np.zeros(mask.shape, bool)
  left, top, right, bottom = geometry.pad
  inside[top:mask.shape[0] - bottom, left:mask.shape[1] - right] = True
  assert np.abs(mask[inside].astype(int) - image[..., 0][inside].astype(int)).mean() < 3
  assert (image[~inside] == 0).all() and (mask[~inside] == masks.VOID).all()


def test_pad_and_stretch_on_a_real_photo():
  data = next(SAMPLES.glob('ants/*.jpg')).read_bytes()
  height, width = codec.decode(data, NONE).shape[:2]
  assert width != height
  red = (255, 0, 0)
  padded = codec.decode(codec.convert(data, codec.ImageSpec(
      image_size=80, resize_mode='pad', image_format='png', background=red)).data, NONE)
  assert padded.shape == (80, 80, 3)
  geometry = resizing.resize_geometry(width, height, codec.ImageSpec(80, 'pad'))
  band = padded[:geometry.pad[1]] if geometry.pad[1] else padded[:, :geometry.pad[0]]
  assert band.size and (band == red).all()
  stretched = codec.convert(data, codec.ImageSpec(image_size=80, resize_mode='stretch'))
  assert (stretched.height, stretched.width) == (80, 80)
  gray = codec.convert(data, codec.ImageSpec(image_size=80, resize_mode='pad', channels=1,
                                             image_format='raw', background=red))
  pixels = np.frombuffer(gray.data, np.uint8).reshape(80, 80, 1)
  band = pixels[:geometry.pad[1]] if geometry.pad[1] else pixels[:, :geometry.pad[0]]
  assert (band == codec.luma(red)).all() and codec.luma(red) == 76


# --- encoding options ---------------------------------------------------------------------------

def test_chroma_subsampling_444_keeps_colour_edges():
  import simplejpeg  # pylint: disable=import-outside-toplevel
  # a lossless source with sharp colour edges (a JPEG source has lost its colour detail already)
  data = (shared_data('messy') / 'pillow__pil123rgba.png').read_bytes()
  truth = codec.decode(data, NONE).astype(int)
  errors = {}
  for subsampling in ('420', '444'):
    spec = codec.ImageSpec(resize_mode='none', chroma_subsampling=subsampling, jpeg_quality=95)
    encoded = codec.convert(data, spec)
    assert simplejpeg.decode_jpeg_header(encoded.data)[3] == subsampling
    stored = codec.decode(encoded.data, NONE).astype(int)
    errors[subsampling] = np.abs(stored - truth).mean()
  assert errors['444'] < errors['420'] * 0.7, errors


def test_channels_1_is_luma_and_channels_3_repeats_gray():
  color = next(SAMPLES.glob('bees/*.jpg')).read_bytes()
  gray = codec.decode(color, codec.ImageSpec(resize_mode='none', channels=1))
  with Image.open(io.BytesIO(color)) as image:
    expected = np.asarray(ImageOps.exif_transpose(image).convert('L')).astype(int)
  assert gray.shape == expected.shape + (1,)
  assert np.abs(gray[..., 0].astype(int) - expected).mean() < 1.5
  encoded = codec.convert(
      color, codec.ImageSpec(image_size=48, resize_mode='center_crop', channels=1))
  assert encoded.channels == 1
  with Image.open(io.BytesIO(encoded.data)) as stored:
    assert stored.mode == 'L' and stored.size == (48, 48)
  source = (shared_data('messy') / 'pillow__hopper_gray.jpg').read_bytes()
  rgb = codec.decode(source, NONE)
  assert rgb.shape == (128, 128, 3) and (rgb == rgb[..., :1]).all()
  assert np.array_equal(codec.decode(source, codec.ImageSpec(resize_mode='none', channels=1)),
                        rgb[..., :1])


def test_raw_format_is_the_pixels_row_major():
  data = next(SAMPLES.glob('ants/*.jpg')).read_bytes()
  spec = codec.ImageSpec(image_size=40, resize_mode='shorter_side', image_format='raw')
  encoded = codec.convert(data, spec)
  full = codec.decode(data, NONE)  # the geometry is the full-size source's (a DCT-scaled
  source_size = full.shape[1], full.shape[0]  # decode is smaller)
  expected = resizing.resize(codec.decode(data, spec), 40, 'shorter_side', source_size=source_size)
  assert expected.shape[:2] == resizing.resize(full, 40, 'shorter_side').shape[:2]
  assert encoded.format == 'raw' and len(encoded.data) == expected.size
  assert (encoded.height, encoded.width, encoded.channels) == expected.shape
  assert np.array_equal(np.frombuffer(encoded.data, np.uint8).reshape(expected.shape), expected)


@pytest.mark.parametrize('text, rgb', [
    ('255,255,255', (255, 255, 255)), ('0, 128,255', (0, 128, 255)), ('#FF8000', (255, 128, 0)),
])
def test_background_forms(text, rgb):
  assert codec.parse_background(text) == rgb


@pytest.mark.parametrize('text', ['255,255', '256,0,0', '#12345', 'red', '#ff00zz'])
def test_background_errors(text):
  with pytest.raises(ValueError, match='R,G,B'):
    codec.parse_background(text)


# --- odd sources ---------------------------------------------------------------------------------

def test_transparency_is_composited_on_the_background():
  data = (shared_data('messy') / 'pillow__transparent.png').read_bytes()
  with Image.open(io.BytesIO(data)) as image:
    alpha = np.asarray(image)[..., 3]
  assert (alpha == 0).any()
  for background in ((255, 255, 255), (0, 0, 255)):
    pixels = codec.decode(data, codec.ImageSpec(resize_mode='none', background=background))
    assert (pixels[alpha == 0] == background).all()


def test_cmyk_jpeg_has_the_colours_of_its_rgb_twin():
  messy = shared_data('messy')
  cmyk = codec.decode((messy / 'pillow__pil_sample_cmyk.jpg').read_bytes(), NONE).astype(float)
  rgb = codec.decode((messy / 'pillow__pil_sample_rgb.jpg').read_bytes(), NONE).astype(float)
  assert cmyk.shape == rgb.shape == (100, 100, 3)
  # the same picture: per-channel means within 5 levels, pixels within 6 on average
  assert np.abs(cmyk.mean(axis=(0, 1)) - rgb.mean(axis=(0, 1))).max() < 5
  assert np.abs(cmyk - rgb).mean() < 6
  naive = 255 - np.asarray(Image.open(messy / 'pillow__pil_sample_cmyk.jpg'))[..., :3]
  assert np.abs(naive - rgb).mean() > 3 * np.abs(cmyk - rgb).mean()  # not the naive 255 - C


def test_lab_tiff_through_its_embedded_icc_profile(tmp_path):
  from PIL import ImageCms  # pylint: disable=import-outside-toplevel
  messy = shared_data('messy')
  rgb = codec.decode((messy / 'pillow__hopper.tif').read_bytes(), NONE).astype(int)
  plain = (messy / 'pillow__hopper.Lab.tif').read_bytes()
  with Image.open(io.BytesIO(plain)) as lab:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile('LAB')).tobytes()
    lab.save(tmp_path / 'with_icc.tif', icc_profile=profile)
  for data in (plain, (tmp_path / 'with_icc.tif').read_bytes()):
    pixels = codec.decode(data, NONE).astype(int)
    assert np.abs(pixels - rgb).mean() < 3


def test_16_bit_samples_are_scaled_not_clipped():
  messy = shared_data('messy')
  for name in ('pillow__16bit.cropped.tif', 'ljt__monkey16.pgm'):
    with Image.open(messy / name) as image:
      samples = np.asarray(image, dtype=np.float64)
    assert samples.max() > 255  # Pillow's convert('L') would clip these to 255
    pixels = codec.decode((messy / name).read_bytes(), NONE)
    assert np.array_equal(pixels[..., 0], np.rint(samples * 255 / 65535).astype(np.uint8))


def test_mpo_and_animations_give_their_first_frame():
  messy = shared_data('messy')
  for name in ('pillow__sugarshack.mpo', 'pillow__iss634.gif', 'pillow__iss634.webp'):
    with Image.open(messy / name) as image:
      frames = []
      for index in range(image.n_frames):
        image.seek(index)
        frames.append(np.asarray(image.convert('RGB')).astype(int))
    assert len(frames) > 1
    pixels = codec.decode((messy / name).read_bytes(), NONE).astype(int)
    differences = [np.abs(pixels - frame).mean() for frame in frames]
    assert differences[0] < 2 < max(differences[1:]), (name, differences)


# --- --image_format=original --------------------------------------------------------------------

def test_original_keeps_the_bytes_and_tensorflow_decodes_the_stated_shape():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  spec = codec.ImageSpec(image_format='original')
  kept = refused = 0
  for path in sorted(shared_data('messy').iterdir()):
    data = path.read_bytes()
    try:
      encoded = codec.convert(data, spec)
    except codec.ImageError as error:
      assert re.search(r'use --image_format=(jpeg|png)|not an image|empty|truncated|corrupt',
                       str(error)), (path.name, str(error))
      refused += 1
      continue
    kept += 1
    assert encoded.data is data
    decoded = tf.io.decode_image(data, expand_animations=False)
    assert tuple(decoded.shape) == (encoded.height, encoded.width, encoded.channels), path.name
    assert encoded.format == {b'\xff\xd8': 'jpeg', b'\x89P': 'png', b'GI': 'gif',
                              b'BM': 'bmp'}[data[:2]]
  assert kept >= 50 and refused >= 25, (kept, refused)


def test_original_reads_only_the_header_and_applies_no_orientation(monkeypatch):
  data = (shared_data('messy') / 'pillow__orientation_rectangle.jpg').read_bytes()
  encoded = codec.convert(data, codec.ImageSpec(image_format='original'))
  assert (encoded.width, encoded.height) == (2, 1)  # stored, not upright
  # a plain 8-bit JPEG never reaches Pillow (libjpeg-turbo's header parse only); a 12-bit one
  # does, and Pillow refuses it, as TensorFlow would
  photo = (SAMPLES / 'ants' / '0013035.jpg').read_bytes()
  twelve_bit = (shared_data('messy') / 'ljt__monkey12.jpg').read_bytes()
  with monkeypatch.context() as patched:
    patched.setattr(codec.Image, 'open', lambda *_: pytest.fail('Pillow opened a plain JPEG'))
    assert codec.convert(photo, codec.ImageSpec(image_format='original')).data is photo
  with pytest.raises(codec.ImageError, match='12-bit'):
    codec.convert(twelve_bit, codec.ImageSpec(image_format='original'))
  with pytest.raises(codec.ImageError, match='use --image_format=jpeg or png'):
    codec.convert((shared_data('messy') / 'pillow__hopper.tif').read_bytes(),
                  codec.ImageSpec(image_format='original'))
  with pytest.raises(codec.ImageError, match='truncated'):
    codec.convert((shared_data('messy') / 'pillow__truncated_jpeg.jpg').read_bytes(),
                  codec.ImageSpec(image_format='original'))


# --- decompression bombs ------------------------------------------------------------------------

def _png_claiming(width: int, height: int) -> bytes:
  """A small PNG whose IHDR claims ``width`` x ``height`` RGB pixels (only a few rows of data)."""
  def chunk(kind, payload):
    return (struct.pack('>I', len(payload)) + kind + payload
            + struct.pack('>I', zlib.crc32(kind + payload)))
  rows = zlib.compress(b'\x00' * (1 + 3 * width) * 16, 9)
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0,
                                                           0, 0))
          + chunk(b'IDAT', rows) + chunk(b'IEND', b''))


_BOMB_SCRIPT = '''
import resource, sys
from transforms.image import codec
bombs = [open(path, 'rb').read() for path in sys.argv[1:]]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for data in bombs:
  for image_format in ('jpeg', 'original'):
    try:
      codec.convert(data, codec.ImageSpec(image_format=image_format))
      print('converted')
    except codec.ImageError as error:
      print(error)
print('grew_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
'''


def test_decompression_bomb_fails_from_its_header_with_bounded_memory(tmp_path):
  paths = []
  for side in (40000, 10000):  # 1.6 G pixels (Pillow refuses), 100 M (our max_pixels)
    path = tmp_path / f'bomb_{side}.png'
    path.write_bytes(_png_claiming(side, side))
    assert path.stat().st_size < 20_000
    paths.append(str(path))
  result = subprocess.run([sys.executable, '-c', _BOMB_SCRIPT, *paths], cwd=REPO, check=True,
                          capture_output=True, text=True)
  lines = result.stdout.splitlines()
  assert len(lines) == 5 and 'converted' not in lines, lines
  assert all('decompression bomb' in line for line in lines[:4]), lines
  assert '10000x10000 = 100,000,000 pixels' in lines[2]
  grew_kb = int(lines[4].split()[1])
  assert grew_kb < 100 * 1024, f'max RSS grew by {grew_kb} KB while refusing the bombs'


# --- the reader reads what these options write ---------------------------------------------------

@pytest.mark.parametrize('flags, channels', [
    (('--image_format=raw',), 3),
    (('--channels=1',), 1),
])
@pytest.mark.slow
def test_reader_reads_raw_and_one_channel_outputs(tmp_path, flags, channels):
  import imagerecords  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from tests.helpers import convert, read_records  # pylint: disable=import-outside-toplevel
  out = tmp_path / 'out'
  assert convert(SAMPLES, out, '--image_size=32', '--resize_mode=center_crop', '--num_shards=1',
                 *flags) == 0
  stored = {}
  for records in read_records(out, 'validation').values():
    for record in records:
      assert record['image/channels'] == channels
      if record['image/format'] == b'raw':
        pixels = np.frombuffer(record['image/encoded'], np.uint8).reshape(32, 32, channels)
      else:
        pixels = tf.io.decode_jpeg(record['image/encoded'],  # the reader's IDCT
                                   dct_method='INTEGER_ACCURATE').numpy()
      stored[record['image/filename']] = pixels
  dataset = imagerecords.load(str(out), 'validation', 8, image_size=32, return_filenames=True)
  seen = 0
  for images, _, names in dataset:
    assert images.shape[1:] == (32, 32, channels) and images.dtype == tf.float32
    for image, name in zip(images.numpy(), names.numpy()):
      # evaluation passes S x S records through: the stored pixels, scaled to [0, 1]
      np.testing.assert_allclose(image, stored[name] / 255., atol=1e-6)
      seen += 1
  assert seen == len(stored) > 0
  train = imagerecords.load(str(out), 'train', 4, image_size=24, training=True, seed=3)
  assert next(iter(train))[0].shape == (4, 24, 24, channels)


def _in_new_thread(function):
  """``function()`` run in a thread of its own (OpenCV's IPP switch is per thread, and a Beam
  worker thread starts with OpenCV's default), its result."""
  results = []
  thread = threading.Thread(target=lambda: results.append(function()))
  thread.start()
  thread.join()
  return results[0]


def test_enlarging_resize_does_not_use_ipp():
  # Intel IPP picks its code by CPU, and its bicubic resize gave other pixels on another machine
  # (tests/test_same_output.py); OpenCV's own code gives the same ones with or without its
  # AVX2 dispatch. cat.103.jpg (160x320) is enlarged to 256 wide.
  import cv2  # pylint: disable=import-outside-toplevel
  if not _in_new_thread(cv2.ipp.useIPP):
    pytest.skip('this OpenCV has no IPP to avoid')
  data = (shared_data('catdog_filenames') / 'train' / 'cat.103.jpg').read_bytes()
  spec = codec.ImageSpec(image_size=256, resize_mode='shorter_side')
  pixels = codec.decode(data, spec)
  assert pixels.shape[1] < 256

  def opencv_own():
    cv2.ipp.setUseIPP(False)
    return cv2.resize(pixels, (256, 512), interpolation=cv2.INTER_CUBIC)

  def with_ipp():
    cv2.ipp.setUseIPP(True)
    return cv2.resize(pixels, (256, 512), interpolation=cv2.INTER_CUBIC)

  expected = _in_new_thread(opencv_own)
  assert not np.array_equal(_in_new_thread(with_ipp), expected)  # IPP is there to avoid
  ours = _in_new_thread(lambda: codec.convert_keeping_pixels(data, spec).pixels)
  np.testing.assert_array_equal(ours, expected)


def _length_delimited(field: int, payload: bytes) -> bytes:
  assert len(payload) < 128
  return bytes([field << 3 | 2, len(payload)]) + payload


def _example_of(feature: bytes) -> bytes:
  """A tf.train.Example whose one feature 'f' is the serialized Feature ``feature``."""
  entry = _length_delimited(1, b'f') + _length_delimited(2, feature)
  return _length_delimited(1, _length_delimited(1, entry))


def test_records_parse_refuses_what_tensorflow_refuses():
  """A packed float list whose bytes are not a multiple of 4, a varint longer than 10 bytes, a
  varint cut by its list's end, a key that is not UTF-8: the project's error (a ValueError),
  not protobuf's DecodeError, and no values silently cut or read (issue 25)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from google.protobuf.message import DecodeError  # pylint: disable=import-outside-toplevel
  from imagerecords import records  # pylint: disable=import-outside-toplevel
  sound = _example_of(_length_delimited(2, _length_delimited(1, struct.pack('<2f', 1.5, -2))))
  assert records.parse_example(sound) == {'f': [1.5, -2.0]}
  ragged = _example_of(_length_delimited(2, _length_delimited(1, struct.pack('<2f', 1, 2)[:7])))
  long_varint = _example_of(_length_delimited(3, b'\x08' + b'\x80' * 10 + b'\x01'))
  crossing = _example_of(_length_delimited(3, _length_delimited(1, b'\x01\x80')))
  not_utf8 = _length_delimited(1, _length_delimited(1, _length_delimited(1, b'\xff')))
  for serialized in (ragged, long_varint, crossing, not_utf8):
    with pytest.raises(DecodeError):
      tf.train.Example.FromString(serialized)  # TensorFlow's message refuses them too
    for parse in (records.parse_example, records.example_filename,
                  lambda data: records.add_features(data, {'x': 1})):
      with pytest.raises(records.RecordError, match=re.escape(
          f'not a tf.train.Example (protobuf cannot parse its {len(serialized)} bytes)')) as error:
        parse(serialized)
      assert isinstance(error.value, ValueError)
      assert isinstance(error.value.__cause__, DecodeError)  # kept for the traceback


def test_features_are_sorted_in_byte_order_a_prefix_first():
  """Keys in UTF-8 byte order, a key before the keys it is a prefix of, as C++ sorts
  TensorFlow's map (and as the records were written before protobuf wrote them): not the order
  of the Python runtime's SerializeToString(deterministic=True) (protobuf 6.33: 'ab', then 'a')."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from imagerecords import example_pb2, records  # pylint: disable=import-outside-toplevel
  values = {'b': 1, 'ab': 2, 'a': 3, 'é': 4, 'B': 5, 'a/b': 6, '': 7,
            'image/embedding/shape': (3,), 'image/embedding': np.float32([1, 2, 3])}
  serialized = records.serialize_example(values)
  keys = [entry.key for entry in example_pb2.Example.FromString(serialized).features.feature]
  assert keys == ['', 'B', 'a', 'a/b', 'ab', 'b', 'image/embedding', 'image/embedding/shape',
                  'é']
  assert keys == sorted(values, key=lambda key: key.encode('utf-8'))
  assert records.parse_example(serialized) == _tf_features(tf.train.Example.FromString(
      serialized))
  shuffled = records.serialize_example(dict(reversed(values.items())))
  assert shuffled == serialized
  # an empty list still sets its kind, as TensorFlow's Feature(int64_list=Int64List()) does
  empty = tf.train.Example(features=tf.train.Features(feature={
      't': tf.train.Feature(int64_list=tf.train.Int64List()),
      'u': tf.train.Feature(float_list=tf.train.FloatList())}))
  assert records.serialize_example({'t': (), 'u': np.float32([])}) == empty.SerializeToString(
      deterministic=True)


def test_example_pb2_has_tensorflows_wire_format():
  """The generated messages (reader/imagerecords/example_pb2.py) hold TensorFlow's fields: the
  same names, numbers, types, labels and packing, so the bytes are TensorFlow's; Features'
  map is the repeated entries protobuf defines it to be on the wire (example.proto)."""
  from imagerecords import example_pb2  # pylint: disable=import-outside-toplevel
  from tensorflow.core.example import example_pb2 as tf_example  # pylint: disable=C0415
  from tensorflow.core.example import feature_pb2 as tf_feature  # pylint: disable=C0415

  def fields(message):
    return [(f.name, f.number, f.type, f.label, f.GetOptions().packed,
             f.message_type and f.message_type.name) for f in message.fields]

  ours = example_pb2.DESCRIPTOR.message_types_by_name
  theirs = {**tf_feature.DESCRIPTOR.message_types_by_name,
            **tf_example.DESCRIPTOR.message_types_by_name}
  for name in ('BytesList', 'FloatList', 'Int64List', 'Feature', 'Example'):
    assert fields(ours[name]) == fields(theirs[name]), name
  assert [o.name for o in ours['Feature'].oneofs] == ['kind']
  entry, map_entry = ours['Features'].fields[0], theirs['Features'].fields[0]
  assert (entry.name, entry.number, entry.label) == (map_entry.name, map_entry.number,
                                                      map_entry.label)
  assert map_entry.message_type.GetOptions().map_entry
  assert fields(entry.message_type) == fields(map_entry.message_type)
  # an entry's key is written even when empty, as a map entry's always is
  assert entry.message_type.fields_by_name['key'].has_presence
