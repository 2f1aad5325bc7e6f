"""Segmentation data, the input side: pair each image with its mask of class indices
(``--masks``); the masks' pixels are converted by ``transforms.image.masks``.

Three layouts (``--masks=LAYOUT``)::

    voc                              PASCAL VOC: the input root holds
      JPEGImages/2011_000003.jpg       the images,
      SegmentationClass/2011_000003.png  one PNG mask per image, same stem,
      ImageSets/Segmentation/train.txt   optional split lists, one image id per line: when present
      ImageSets/Segmentation/val.txt     (and --splits=auto) they are the splits and the inputs
                                       (trainval.txt is skipped beside train.txt and val.txt);
                                       nothing else under the root is read
    folders                          image/ and label/ folders side by side, same stem:
      [train/]image/a.jpg  ->  [train/]label/a.png
    pattern:TEMPLATE                 the mask's path relative to the image's folder, with {stem}
      pattern:{stem}_mask.png          a.jpg -> a_mask.png beside it
      pattern:../masks/{stem}.png      images/a.jpg -> masks/a.png

A listed file is either an image, a mask (by folder, or for ``pattern`` by matching the template
with any stem), or not part of the layout. Images and masks are joined by the mask's path. An
image without its mask fails at stage ``mask``; a mask without an image, and a split-list entry
without an image, are reported at stage ``missing`` (they are not image inputs).
"""

import dataclasses
import posixpath
import re
from typing import Dict, Iterable, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from imagerecords import contract

from transforms.elements import (FAILURES_TAG, STAGE_LIST, STAGE_MASK, STAGE_MISSING,
                                 STAGE_SPLIT, Failure, LabeledImage, SourceFile,
                                 source_version)
from transforms.files.folders import escape_pattern, match
from transforms.files.textfiles import read_text
from transforms.inputs.splits import hash_split

MASK_LAYOUTS = ('none', 'voc', 'folders', 'pattern:TEMPLATE')
"""The forms of ``--masks``."""

VOC_IMAGES = 'JPEGImages'
VOC_MASKS = 'SegmentationClass'
VOC_SPLIT_LISTS = 'ImageSets/Segmentation'
VOC_CLASS_NAMES = 'class_names.txt'
"""Read as the class names of ``--masks=voc`` when it lies at the input root (the labelme VOC
export's file) and ``--label_map`` is not given."""

FOLDERS_IMAGES = 'image'
FOLDERS_MASKS = 'label'

_STEM = '{stem}'


@dataclasses.dataclass(frozen=True)
class MaskPairing:
  """How images and masks pair up: a parsed ``--masks`` value (see the module docstring).

  Attributes:
    layout: ``voc``, ``folders`` or ``pattern``.
    template: for ``pattern``, the mask's path relative to the image's folder, holding
      ``{stem}`` (the image's file name without its extension) once.
  """
  layout: str
  template: str = ''

  def __post_init__(self):
    if self.layout not in ('voc', 'folders', 'pattern'):
      raise ValueError(f'--masks must be one of {", ".join(MASK_LAYOUTS)}; got {self.layout!r}')
    if self.layout == 'pattern':
      _check_template(self.template)

  @property
  def listed_folders(self) -> Tuple[str, ...]:
    """The only folders below the input root that are listed (empty: the whole root)."""
    return (VOC_IMAGES, VOC_MASKS) if self.layout == 'voc' else ()

  def mask_relpath(self, image_relpath: str) -> Optional[str]:
    """The relpath of the mask of the image at ``image_relpath``; None when the file is not
    an image of this layout."""
    folder, name = posixpath.split(image_relpath)
    stem = posixpath.splitext(name)[0]
    if self.layout == 'voc':
      parts = image_relpath.split('/')
      if parts[0] != VOC_IMAGES or len(parts) < 2:
        return None
      return posixpath.join(VOC_MASKS, *parts[1:-1], stem + '.png')
    if self.layout == 'folders':
      parts = image_relpath.split('/')[:-1]
      if FOLDERS_IMAGES not in parts:
        return None
      parts[parts.index(FOLDERS_IMAGES)] = FOLDERS_MASKS
      return posixpath.join(*parts, stem + '.png')
    target = posixpath.normpath(posixpath.join(folder, self.template.replace(_STEM, stem)))
    return None if target == '..' or target.startswith('../') else target

  def is_mask(self, relpath: str) -> bool:
    """Whether ``relpath`` is a mask's place in this layout (whether or not its image exists)."""
    if self.layout == 'voc':
      return relpath.startswith(VOC_MASKS + '/')
    if self.layout == 'folders':
      return FOLDERS_MASKS in relpath.split('/')[:-1]
    return bool(self._mask_regex.match(relpath))

  @property
  def _mask_regex(self) -> 're.Pattern':
    rest = self.template
    while rest.startswith('../'):
      rest = rest[3:]
    rest = posixpath.normpath(rest)
    literal = [re.escape(part) for part in rest.split(_STEM)]
    return re.compile('^(?:.*/)?' + '[^/]+'.join(literal) + '$')

  def describe(self) -> str:
    """The layout in words, for failure reasons."""
    if self.layout == 'voc':
      return f'--masks=voc ({VOC_IMAGES}/ + {VOC_MASKS}/)'
    if self.layout == 'folders':
      return f'--masks=folders ({FOLDERS_IMAGES}/ + {FOLDERS_MASKS}/)'
    return f'--masks=pattern:{self.template}'


def _check_template(template: str) -> None:
  if template.count(_STEM) != 1:
    raise ValueError(f'--masks=pattern:TEMPLATE must hold {_STEM} exactly once, got {template!r}')
  if template.startswith('/') or '://' in template or '\\' in template:
    raise ValueError(f'--masks=pattern: {template!r} must be a relative path with / separators')
  rest = template
  while rest.startswith('../'):
    rest = rest[3:]
  if '..' in rest.split('/') or '.' in rest.split('/') or rest.endswith('/'):
    raise ValueError(f'--masks=pattern: {template!r} may start with ../ but hold no other '
                     './.. and must end in a file name')
  if re.search(r'\{(?!stem\})', template):
    raise ValueError(f'--masks=pattern: {template!r}: the only placeholder is {_STEM}')


def parse_masks(text: str) -> Optional[MaskPairing]:
  """``--masks`` -> a MaskPairing, or None for ``none`` (classification).

  Raises:
    ValueError: an unknown layout or a malformed template.
  """
  text = (text or 'none').strip()
  if text == 'none':
    return None
  if text.startswith('pattern:'):
    return MaskPairing('pattern', text.split(':', 1)[1])
  return MaskPairing(text)


def read_split_lists(input_dir: str) -> Dict[str, Tuple[str, ...]]:
  """VOC's ``ImageSets/Segmentation/NAME.txt`` split lists: {split name: image ids}.

  Read at launch (a few KB). Each line's first field is an image id (the image's path below
  ``JPEGImages/`` without its extension); blank lines are skipped. ``trainval.txt`` is left out
  when ``train.txt`` and ``val.txt`` exist (it is their union). Empty when there is no list.

  Raises:
    ValueError: a list's name is not a valid split name.
  """
  pattern = FileSystems.join(escape_pattern(input_dir), *VOC_SPLIT_LISTS.split('/'), '*.txt')
  paths = sorted(m.path for m in match(pattern))
  names = {posixpath.splitext(posixpath.basename(p.replace('\\', '/')))[0]: p for p in paths}
  if {'train', 'val', 'trainval'} <= set(names):
    del names['trainval']
  lists = {}
  for name, path in sorted(names.items()):
    if not contract.SPLIT_NAME_RE.match(name):
      raise ValueError(f'split list {path}: {name!r} is not a split name (letters, digits, _)')
    lists[name] = tuple(line.split()[0] for line in read_text(path).splitlines() if line.strip())
  return lists


def voc_class_names_path(input_dir: str) -> Optional[str]:
  """``class_names.txt`` at the input root, if there is one."""
  path = FileSystems.join(input_dir, VOC_CLASS_NAMES)
  return path if FileSystems.exists(path) else None


# --- pairing, in the pipeline --------------------------------------------------------------------

_IMAGE, _MASK, _LISTED, _OTHER = 'image', 'mask', 'listed', 'other'


class _KeyByMask(beam.DoFn):
  """SourceFile -> (mask relpath, (role, SourceFile)): images and masks meet at their mask."""

  def __init__(self, pairing: MaskPairing):
    self._pairing = pairing

  def process(self, source: SourceFile) -> Iterable:
    if self._pairing.is_mask(source.relpath):
      yield source.relpath, (_MASK, source)
      return
    mask = self._pairing.mask_relpath(source.relpath)
    if mask is None:
      yield source.relpath, (_OTHER, source)
    else:
      yield mask, (_IMAGE, source)


class _PairFn(beam.DoFn):
  """(mask relpath, [(role, value)]) -> LabeledImage with its mask (no label), or Failure."""

  def __init__(self, pairing, input_dir, split_lists, split_folders, fractions):
    self._pairing = pairing
    self._input_dir = input_dir
    self._lists = bool(split_lists)
    self._list_names = ', '.join(f'{name}.txt' for name in sorted(split_lists))
    self._split_folders = tuple(split_folders)
    self._fractions = tuple(fractions)

  def _fail(self, source, stage, reason):
    return beam.pvalue.TaggedOutput(
        FAILURES_TAG, Failure(source.path, source.relpath, stage, reason))

  def process(self, element) -> Iterable:
    mask_relpath, values = element
    by_role = {_IMAGE: [], _MASK: [], _LISTED: [], _OTHER: []}
    for role, value in values:
      by_role[role].append(value)
    images = sorted(by_role[_IMAGE], key=lambda s: s.relpath)
    masks, splits = by_role[_MASK], sorted(set(by_role[_LISTED]))
    for other in by_role[_OTHER]:
      yield self._fail(other, STAGE_LIST, f'skipped: not an image or mask of '
                       f'{self._pairing.describe()}')
    if not images:
      if splits:
        lists = ', '.join(f'{VOC_SPLIT_LISTS}/{s}.txt' for s in splits)
        image_id = posixpath.splitext(mask_relpath.split('/', 1)[1])[0]
        path = FileSystems.join(self._input_dir, *VOC_SPLIT_LISTS.split('/'), splits[0] + '.txt')
        yield beam.pvalue.TaggedOutput(FAILURES_TAG, Failure(
            path, f'{VOC_IMAGES}/{image_id}', STAGE_MISSING,
            f'image id {image_id!r} is in {lists}, but {VOC_IMAGES}/ has no such image'))
      else:
        for mask in masks:
          yield self._fail(mask, STAGE_MISSING, f'a mask without an image: no image of '
                           f'{self._pairing.describe()} pairs with it')
      return
    for image in images:
      if self._lists and not splits:
        yield self._fail(image, STAGE_LIST, f'skipped: not in any split list of '
                         f'{VOC_SPLIT_LISTS}/ ({self._list_names})')
      elif len(splits) > 1:
        yield self._fail(image, STAGE_SPLIT, 'in several split lists: ' + ', '.join(
            f'{s}.txt' for s in splits))
      elif not masks:
        yield self._fail(image, STAGE_MASK, f'no mask: expected {mask_relpath} '
                         f'({self._pairing.describe()})')
      elif len(images) > 1:
        yield self._fail(image, STAGE_MASK, f'{len(images)} images pair with the mask '
                         f'{mask_relpath}: ' + ', '.join(i.relpath for i in images))
      else:
        split = splits[0] if splits else self._split_of(image)
        if split is None:
          folders = ', '.join(f + '/' for f in self._split_folders)
          yield self._fail(image, STAGE_SPLIT, f'outside the split folders ({folders})')
        else:
          yield LabeledImage(image.path, image.relpath, None, split, mask=masks[0],
                             version=source_version(image, masks[0]))

  def _split_of(self, image: SourceFile) -> Optional[str]:
    if self._split_folders:
      first = image.relpath.split('/', 1)[0]
      return first if first in self._split_folders and '/' in image.relpath else None
    return hash_split(image.relpath, self._fractions)


class PairImagesWithMasks(beam.PTransform):
  """PCollection[SourceFile] -> PCollection[LabeledImage] (``split``), and ``failures``.

  Each output is an image with ``mask`` set to its mask's SourceFile, ``label`` None and its
  split: from the split lists when given (``{split: image ids}``, VOC), else its top split
  folder (``split_folders``), else the hash of its path (``fractions``, as
  ``transforms.inputs.splits.hash_split``). Failures: see the module docstring.
  """

  def __init__(self, pairing: MaskPairing, input_dir: str,
               split_lists: Optional[Dict[str, Sequence[str]]] = None,
               split_folders: Sequence[str] = (), fractions: Sequence[Tuple[str, float]] = ()):
    super().__init__()
    if not split_lists and bool(split_folders) == bool(fractions):
      raise ValueError('give split lists, split folders or fractions')
    self._pairing = pairing
    self._input_dir = input_dir
    self._split_lists = {name: tuple(ids) for name, ids in (split_lists or {}).items()}
    self._split_folders = tuple(split_folders)
    self._fractions = tuple(fractions)

  def expand(self, files):
    pairing = self._pairing
    keyed = files | 'key images and masks by mask' >> beam.ParDo(_KeyByMask(pairing))
    entries = [(pairing.mask_relpath(f'{VOC_IMAGES}/{image_id}.jpg'), (_LISTED, split))
               for split, ids in sorted(self._split_lists.items()) for image_id in ids]
    listed = files.pipeline | 'split list entries' >> beam.Create(entries)
    return (
        (keyed, listed)
        | 'images, masks and list entries' >> beam.Flatten()
        | 'group by mask' >> beam.GroupByKey()
        | 'pair' >> beam.ParDo(_PairFn(
            pairing, self._input_dir, self._split_lists, self._split_folders, self._fractions)
        ).with_outputs(FAILURES_TAG, main='split'))
