"""The per-image conversion on real files: orientation, resize modes, errors, serialization."""

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.helpers import SAMPLES, shared_data
from transforms import codec
from transforms.example import build_example

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
  fast = codec.resize(codec.decode(path.read_bytes(), spec), 256, 'center_crop')
  full = codec.resize(codec.decode(path.read_bytes(), NONE), 256, 'center_crop')
  assert fast.shape == full.shape == (256, 256, 3)
  assert np.abs(fast.astype(int) - full.astype(int)).mean() < 3.0


def test_png_output_is_lossless():
  data = next(SAMPLES.glob('bees/*.jpg')).read_bytes()
  spec = codec.ImageSpec(image_size=64, resize_mode='center_crop', image_format='png')
  encoded = codec.convert(data, spec)
  expected = codec.resize(codec.decode(data, spec), 64, 'center_crop')
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
