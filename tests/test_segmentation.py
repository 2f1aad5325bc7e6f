"""Segmentation (--masks) end to end on real data: VOC palette masks, VOC split lists, image/ +
label/ folders, a pattern, the reports of broken pairs, and the reader's (image, mask) pairs."""

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.helpers import all_records, convert, manifest_of, shared_data
from transforms.elements import SourceFile
from transforms.image import codec, masks, resizing
from transforms.inputs import pairing

# gray level of each class of the rock masks (0-3) in the images made from them
LEVELS = np.array([20, 95, 170, 245], np.uint8)


def _png(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, 'PNG')
  return buffer.getvalue()


def _classes_of(pixels: np.ndarray) -> np.ndarray:
  """The class whose gray level is nearest to each pixel (channel mean)."""
  gray = np.asarray(pixels, np.float32)
  gray = gray.mean(axis=-1) if gray.shape[-1] == 3 else gray
  return np.abs(gray[..., None] - LEVELS.astype(np.float32)).argmin(-1)


def _interior(masks: np.ndarray, radius: int = 2) -> np.ndarray:
  """Pixels whose (2 radius + 1)^2 neighbourhood in ``masks [..., H, W]`` is one class: away
  from class edges, where resizing the image blends the gray levels of two classes."""
  inside = np.ones(masks.shape, bool)
  for dy in range(-radius, radius + 1):
    for dx in range(-radius, radius + 1):
      inside &= np.roll(np.roll(masks, dy, -2), dx, -1) == masks
  return inside


def _rock_mask(name='000001') -> np.ndarray:
  root = shared_data('segmentation/rock_voc') / 'VOC2007'
  return np.asarray(Image.open(root / 'SegmentationClass' / f'{name}.png'))


def _failures(out):
  return [json.loads(line) for line in (out / 'failures.jsonl').read_text().splitlines()]


def _source_mask(root, relpath_of_image):
  stem = relpath_of_image.rsplit('/', 1)[1].rsplit('.', 1)[0]
  return np.asarray(Image.open(root / 'SegmentationClass' / f'{stem}.png'))


# --- pairing rules -------------------------------------------------------------------------------

def test_mask_paths_of_each_layout():
  voc = pairing.parse_masks('voc')
  assert voc.mask_relpath('JPEGImages/2011_000003.jpg') == 'SegmentationClass/2011_000003.png'
  assert voc.is_mask('SegmentationClass/2011_000003.png')
  assert voc.mask_relpath('SegmentationClassVisualization/a.jpg') is None
  folders = pairing.parse_masks('folders')
  assert folders.mask_relpath('train/image/a.b.jpg') == 'train/label/a.b.png'
  assert folders.is_mask('train/label/a.png') and not folders.is_mask('train/image/a.png')
  assert folders.mask_relpath('other/a.jpg') is None
  beside = pairing.parse_masks('pattern:{stem}_mask.png')
  assert beside.mask_relpath('x/a.jpg') == 'x/a_mask.png'
  assert beside.is_mask('x/a_mask.png') and not beside.is_mask('x/a.png')
  up = pairing.parse_masks('pattern:../masks/{stem}.png')
  assert up.mask_relpath('set1/images/a.jpg') == 'set1/masks/a.png'
  assert up.is_mask('set1/masks/a.png') and not up.is_mask('set1/images/a.png')
  assert up.mask_relpath('a.jpg') is None  # would lie outside the input root
  assert pairing.parse_masks('none') is None
  for bad in ('vox', 'pattern:mask.png', 'pattern:{stem}/{stem}.png', 'pattern:/abs/{stem}.png',
              'pattern:a/../{stem}.png', 'pattern:{name}_{stem}.png'):
    with pytest.raises(ValueError):
      pairing.parse_masks(bad)


def test_pairing_reports_each_broken_pair():
  voc = pairing.parse_masks('voc')
  pair = pairing._PairFn(  # pylint: disable=protected-access
      voc, '/data', {'train': ['a', 'b'], 'val': ['b']}, (), ())

  def outcome(values):
    key = 'SegmentationClass/x.png'
    return [(o.value.stage, o.value.reason) if hasattr(o, 'tag') else ('ok', o.split)
            for o in pair.process((key, values))]

  image = SourceFile('/data/JPEGImages/x.jpg', 'JPEGImages/x.jpg')
  mask = SourceFile('/data/SegmentationClass/x.png', 'SegmentationClass/x.png')
  assert outcome([('image', image), ('mask', mask), ('listed', 'val')]) == [('ok', 'val')]
  assert outcome([('image', image), ('mask', mask)])[0][0] == 'list'  # in no split list
  stage, reason = outcome([('image', image), ('mask', mask), ('listed', 'train'),
                           ('listed', 'val')])[0]
  assert stage == 'split' and 'train.txt, val.txt' in reason
  stage, reason = outcome([('image', image), ('listed', 'val')])[0]
  assert stage == 'mask' and 'SegmentationClass/x.png' in reason
  other = SourceFile('/data/JPEGImages/x.png', 'JPEGImages/x.png')
  both = outcome([('image', image), ('image', other), ('mask', mask), ('listed', 'val')])
  assert [stage for stage, _ in both] == ['mask', 'mask'] and '2 images' in both[0][1]
  assert outcome([('listed', 'val')])[0][0] == 'missing'


def test_mask_values_beyond_the_class_names_fail():
  root = shared_data('segmentation/voc_palette')
  image = (root / 'JPEGImages' / '2011_000003.jpg').read_bytes()
  mask = SourceFile(str(root / 'SegmentationClass' / '2011_000003.png'), 'm.png')
  spec = codec.ImageSpec(image_size=64)
  # 0, 5, 15 and void: fine, and those are the ids the stored mask holds
  assert masks.convert_with_mask(image, mask, spec, num_classes=21)[2] == (0, 5, 15)
  with pytest.raises(masks.MaskError, match=r'class ids \[5, 15\] beyond the 3 class'):
    masks.convert_with_mask(image, mask, spec, num_classes=3)


def test_original_images_keep_their_masks_as_they_are():
  root = shared_data('segmentation/voc_palette')
  image = (root / 'JPEGImages' / '2011_000006.jpg').read_bytes()
  path = root / 'SegmentationClass' / '2011_000006.png'
  encoded, mask, _ = masks.convert_with_mask(
      image, SourceFile(str(path), 'm.png'), codec.ImageSpec(image_format='original'))
  assert encoded.data == image
  np.testing.assert_array_equal(masks.decode_mask(mask), np.asarray(Image.open(path)))


def test_bad_mask_flags_stop_the_run_before_it_starts(tmp_path):
  source = shared_data('segmentation/voc_palette')
  assert convert(source, tmp_path / 'a', '--masks=pattern:mask.png') == 2
  assert convert(source, tmp_path / 'b', '--masks=voc', '--label_source=none') == 2


# --- masks: decode, geometry --------------------------------------------------------------------

def test_palette_masks_are_read_as_indices_never_colours():
  root = shared_data('segmentation/voc_palette')
  values = set()
  for path in sorted((root / 'SegmentationClass').glob('*.png')):
    source = Image.open(path)
    assert source.mode == 'P'
    indices = masks.decode_mask(path.read_bytes())
    assert indices.dtype == np.uint8 and indices.shape == (source.height, source.width)
    np.testing.assert_array_equal(indices, np.asarray(source))
    values |= set(np.unique(indices).tolist())
  assert 255 in values and max(values - {255}) < 21  # VOC's 21 classes and void
  rgb = np.asarray(Image.open(sorted((root / 'SegmentationClass').glob('*.png'))[0]).convert('RGB'))
  with pytest.raises(masks.MaskError, match='RGB image, not class indices'):
    masks.decode_mask(_png(rgb), 'mask x.png')


@pytest.mark.parametrize('resize_mode', resizing.RESIZE_MODES)
def test_mask_gets_the_crop_of_its_exif_oriented_dct_scaled_image(tmp_path, resize_mode):
  # An image made from a real mask (class c -> gray level LEVELS[c]), 1024x768 upright (so
  # libjpeg-turbo decodes it DCT-scaled at image_size 256), stored rotated with EXIF
  # orientation 6: the stored image, read back as classes, must match the stored mask.
  upright_mask = np.kron(_rock_mask()[:, :192], np.ones((4, 4), np.uint8))  # 1024 x 768
  upright = np.repeat(LEVELS[upright_mask][..., None], 3, axis=2)
  stored = np.ascontiguousarray(np.rot90(upright, 1))  # orientation 6 turns it back upright
  exif = Image.Exif()
  exif[0x0112] = 6
  buffer = io.BytesIO()
  Image.fromarray(stored).save(buffer, 'JPEG', quality=95, exif=exif.tobytes())
  data = buffer.getvalue()
  mask_file = tmp_path / 'm.png'
  mask_file.write_bytes(_png(upright_mask))
  spec = codec.ImageSpec(image_size=256, resize_mode=resize_mode)
  encoded, mask_png, class_ids = masks.convert_with_mask(
      data, SourceFile(str(mask_file), 'm.png'), spec)
  mask = masks.decode_mask(mask_png)
  assert list(class_ids) == [v for v in np.unique(mask).tolist() if v != masks.VOID]
  image = np.asarray(Image.open(io.BytesIO(encoded.data)))
  assert mask.shape == image.shape[:2] == (encoded.height, encoded.width)
  expected = resizing.resize_geometry(768, 1024, spec).output_size
  assert (encoded.width, encoded.height) == expected
  padding = mask == masks.VOID  # only --resize_mode=pad pads
  assert padding.any() == (resize_mode == 'pad')
  assert set(np.unique(mask[~padding])) <= {0, 1, 2, 3}
  agreement = (_classes_of(image)[~padding] == mask[~padding]).mean()
  assert agreement > 0.97, agreement
  # the same mask unrotated (the stored, not the upright, size) is refused, saying why
  mask_file.write_bytes(_png(np.ascontiguousarray(np.rot90(upright_mask, 1))))
  with pytest.raises(masks.MaskError, match='EXIF-oriented'):
    masks.convert_with_mask(data, SourceFile(str(mask_file), 'm.png'), spec)


# --- end to end ----------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def voc_palette_out(tmp_path_factory):
  out = tmp_path_factory.mktemp('voc_palette') / 'out'
  assert convert(shared_data('segmentation/voc_palette'), out, '--masks=voc',
                 '--stats=false', '--num_shards=1', '--splits=train=0.5,validation=0.5') == 0
  return out


def test_voc_palette_pairs_keep_class_indices_and_void(voc_palette_out):
  root = shared_data('segmentation/voc_palette')
  names = (root / 'class_names.txt').read_text().split('\n')
  assert (voc_palette_out / 'labels.txt').read_text().splitlines() == [n for n in names if n]
  manifest = manifest_of(voc_palette_out)
  assert manifest['task'] == 'segmentation' and manifest['image']['mask']['void'] == 255
  assert manifest['num_examples'] == 3 and manifest['num_failures'] == 0
  records = [record for _, record in all_records(voc_palette_out)]
  assert sorted(r['image/filename'].decode() for r in records) == [
      f'JPEGImages/{p.stem}.jpg' for p in sorted((root / 'JPEGImages').glob('*.jpg'))]
  for record in records:
    assert 'image/class/label' not in record and 'image/class/text' not in record
    assert record['image/segmentation/class/format'] == b'png'
    mask = Image.open(io.BytesIO(record['image/segmentation/class/encoded']))
    assert mask.mode == 'L'
    assert (mask.width, mask.height) == (record['image/width'], record['image/height'])
    assert min(mask.size) == 256  # --resize_mode=shorter_side, as the image
    source = _source_mask(root, record['image/filename'].decode())
    values = set(np.unique(np.asarray(mask)))
    assert values <= set(np.unique(source))  # nearest-neighbour: no interpolated values
    assert 255 in values or 255 not in source


def test_reader_yields_pairs_with_one_crop_and_flip(voc_palette_out):
  import imagerecords  # pylint: disable=import-outside-toplevel
  root = shared_data('segmentation/voc_palette')
  sources = {p.stem: set(np.unique(np.asarray(Image.open(p))))
             for p in (root / 'SegmentationClass').glob('*.png')}
  allowed = set().union(*sources.values())
  seen = 0
  for training, split in ((False, 'validation'), (True, 'train')):
    data = imagerecords.load(str(voc_palette_out), split, batch_size=2, image_size=96,
                             training=training, seed=3, drop_remainder=False)
    for images, masks in data:
      assert images.shape[1:] == (96, 96, 3) and masks.shape[1:] == (96, 96)
      assert masks.dtype.name == 'int32' and images.dtype.name == 'float32'
      assert set(np.unique(masks.numpy())) <= allowed
      seen += len(masks)
  assert seen == 3


@pytest.mark.slow
def test_rock_voc_split_lists_are_the_splits(tmp_path):
  root = shared_data('segmentation/rock_voc') / 'VOC2007'
  out = tmp_path / 'out'
  assert convert(root, out, '--masks=voc', '--stats=false', '--num_shards=2',
                 '--image_size=128') == 0
  lists = {name: (root / 'ImageSets' / 'Segmentation' / f'{name}.txt').read_text().split()
           for name in ('train', 'val')}
  images = {p.stem for p in (root / 'JPEGImages').glob('*.jpg')}
  manifest = manifest_of(out)
  assert manifest['split_source'] == 'split_lists' and manifest['classes'] == []
  seen = {}
  for split, record in all_records(out):
    relpath = record['image/filename'].decode()
    seen[relpath.split('/')[1][:-4]] = split
    mask = np.asarray(Image.open(io.BytesIO(record['image/segmentation/class/encoded'])))
    assert mask.shape == (record['image/height'], record['image/width']) == (128, 128)
    assert set(np.unique(mask)) <= set(np.unique(_source_mask(root, relpath)))
  assert len(seen) == 82
  for split, ids in lists.items():
    assert {i for i, s in seen.items() if s == split} == set(ids) & images
  # a list entry without an image is reported (not an input: the run still succeeds)
  missing = [f for f in _failures(out) if f['stage'] == 'missing']
  absent = sorted(set(lists['train'] + lists['val']) - images)
  assert absent and [f['relpath'] for f in missing] == [f'JPEGImages/{i}' for i in absent]
  import imagerecords  # pylint: disable=import-outside-toplevel
  assert imagerecords.num_examples(str(out), 'val') == len(set(lists['val']) & images)
  for _, masks in imagerecords.load(str(out), 'val', batch_size=8, image_size=64):
    assert set(np.unique(masks.numpy())) <= {0, 1, 2, 3}


@pytest.mark.slow
def test_folders_layout_reports_missing_orphan_and_mis_sized_masks(tmp_path):
  root = shared_data('segmentation/rock_voc') / 'VOC2007'
  source = tmp_path / 'in'
  stems = sorted(p.stem for p in (root / 'JPEGImages').glob('*.jpg'))[:8]
  for i, stem in enumerate(stems):
    split = 'train' if i < 6 else 'val'
    for folder, kind, ext in (('image', 'JPEGImages', 'jpg'), ('label', 'SegmentationClass',
                                                               'png')):
      (source / split / folder).mkdir(parents=True, exist_ok=True)
      shutil.copy(root / kind / f'{stem}.{ext}', source / split / folder / f'{stem}.{ext}')
  (source / 'train' / 'label' / f'{stems[0]}.png').unlink()  # an image without its mask
  (source / 'train' / 'image' / f'{stems[1]}.jpg').unlink()  # a mask without its image
  small = Image.open(root / 'SegmentationClass' / f'{stems[2]}.png').resize((128, 100),
                                                                              Image.NEAREST)
  small.save(source / 'train' / 'label' / f'{stems[2]}.png')  # a mask of another size
  (source / 'notes.txt').write_text('not an image')
  out = tmp_path / 'out'
  assert convert(source, out, '--masks=folders', '--stats=false', '--num_shards=1',
                 '--max_failure_fraction=0.5') == 0
  by_file = {f['relpath']: f for f in _failures(out)}
  no_mask = by_file[f'train/image/{stems[0]}.jpg']
  assert no_mask['stage'] == 'mask' and f'train/label/{stems[0]}.png' in no_mask['reason']
  orphan = by_file[f'train/label/{stems[1]}.png']
  assert orphan['stage'] == 'missing' and 'without an image' in orphan['reason']
  sized = by_file[f'train/image/{stems[2]}.jpg']
  assert sized['stage'] == 'mask' and '128x100' in sized['reason'] and '256x256' in sized['reason']
  assert by_file['notes.txt']['stage'] == 'list'
  manifest = manifest_of(out)
  assert manifest['num_failures'] == 2 and manifest['split_source'] == 'folders'
  splits = {record['image/filename'].decode(): split for split, record in all_records(out)}
  assert splits == {f'{"train" if i < 6 else "val"}/image/{s}.jpg': 'train' if i < 6 else 'val'
                    for i, s in enumerate(stems) if i > 2}


@pytest.mark.slow
def test_pattern_layout_and_reader_crop_flip_alignment(tmp_path):
  # Images made from real masks (class c -> gray LEVELS[c]), masks beside them as
  # {stem}_mask.png: in training the reader's random window and flip must hit both alike, so
  # every output image read back as classes matches its output mask.
  root = shared_data('segmentation/rock_voc') / 'VOC2007'
  source = tmp_path / 'in'
  source.mkdir()
  for path in sorted((root / 'SegmentationClass').glob('*.png'))[:10]:
    mask = np.asarray(Image.open(path))
    (source / f'{path.stem}.png').write_bytes(_png(LEVELS[mask]))
    shutil.copy(path, source / f'{path.stem}_mask.png')
  out = tmp_path / 'out'
  assert convert(source, out, '--masks=pattern:{stem}_mask.png', '--stats=false',
                 '--num_shards=1', '--image_format=png', '--resize_mode=none',
                 '--splits=train=1') == 0
  assert manifest_of(out)['num_examples'] == 10
  import imagerecords  # pylint: disable=import-outside-toplevel
  eval_images = imagerecords.load(str(out), 'train', batch_size=10, image_size=96)
  images, masks = next(iter(eval_images))
  inside = _interior(masks.numpy())
  assert (_classes_of(images.numpy() * 255) == masks.numpy())[inside].mean() > 0.995
  mismatched = 0
  for epoch in range(3):
    data = imagerecords.load(str(out), 'train', batch_size=10, image_size=96, training=True,
                             seed=epoch)
    for images, masks in data:
      classes, masks = _classes_of(images.numpy() * 255), masks.numpy()
      for i in range(len(masks)):
        inside = _interior(masks[i])
        agreement = (classes[i] == masks[i])[inside].mean()
        assert agreement > 0.995, agreement
        # mirrored, the mask does not match its image: image and mask were flipped together
        mismatched += (classes[i][:, ::-1] == masks[i])[inside].mean() < 0.95
  assert mismatched >= 25  # of 30 random crops (a rock texture is rarely mirror-symmetric)
