"""The pictures ``python -m imagerecords.inspect`` draws of an output directory: contact sheets
of sample records per split, mask overlays of segmentation outputs, a chart of the class counts
per split, the near-duplicate groups and a sheet per quality flag, as PNG files.

They are drawn from the :class:`imagerecords.report.Report` the verification builds (its
sample records, counts and the output's ``duplicates.jsonl`` / ``quality.jsonl``): the image
sheets with Pillow, the chart with matplotlib (both in the reader's ``inspect`` extra).
"""

import collections
import io
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

from PIL import Image, ImageDraw, ImageFont

from imagerecords import contract
from imagerecords.report import Record, Report, SplitReport

VOID_CLASS = contract.MASK_VOID  # 255: the "ignore" id of segmentation masks (PASCAL VOC's)
_COLUMNS = 8


def _font(size: int) -> ImageFont.ImageFont:
  """Pillow's bundled font at ``size`` px (needs FreeType); its bitmap font otherwise."""
  try:
    return ImageFont.load_default(size=size)
  except TypeError:  # Pillow < 10.1
    return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, font) -> int:
  """The width of ``text`` drawn in ``font``, in pixels."""
  left, _, right, _ = draw.textbbox((0, 0), text, font=font)
  return right - left


def _fit_text(draw, text: str, font, width: int) -> str:
  """``text``, cut with an ellipsis until it fits in ``width`` px."""
  if _text_width(draw, text, font) <= width:
    return text
  while text and _text_width(draw, text + '…', font) > width:
    text = text[:-1]
  return text + '…'


def _record_image(record: Record, size: Optional[int] = None) -> Image.Image:
  """The record's image as RGB, shrunk to fit in ``size`` x ``size`` when given (a JPEG then
  decodes at reduced scale); ``raw`` records are read as their row-major uint8 pixels.

  Raises:
    OSError, ValueError: the image does not decode.
  """
  if record.image_format == contract.RAW_FORMAT:
    mode = {1: 'L', 3: 'RGB', 4: 'RGBA'}.get(record.channels)
    if mode is None:
      raise ValueError(f'raw image with {record.channels} channels')
    image = Image.frombytes(mode, (record.width, record.height), record.encoded)
  else:
    image = Image.open(io.BytesIO(record.encoded))
    if size:
      image.draft('RGB', (size, size))
  image = image.convert('RGB')
  if size:
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
  return image


def _grid(cells: List[Tuple[Image.Image, str]], title: str, thumb: int,
          legend: Sequence[Tuple[Tuple[int, int, int], str]] = ()) -> Image.Image:
  """Images in rows of 8, each centred in a ``thumb`` x ``thumb`` square under its caption,
  below a title and, if given, a legend of (colour, text) swatches."""
  caption_font, title_font = _font(max(11, thumb // 7)), _font(16)
  caption_h = caption_font.size + 6 if hasattr(caption_font, 'size') else 16
  pad, title_h = 6, 30 + (24 if legend else 0)
  columns = min(_COLUMNS, max(len(cells), 1))
  rows = max(1, math.ceil(len(cells) / columns))
  cell_w, cell_h = thumb + pad, thumb + caption_h + pad
  sheet = Image.new('RGB', (columns * cell_w + pad, title_h + rows * cell_h + pad), 'white')
  draw = ImageDraw.Draw(sheet)
  draw.text((pad, 7), _fit_text(draw, title, title_font, sheet.width - 2 * pad), fill='black',
            font=title_font)
  x = pad
  for colour, text in legend:
    draw.rectangle((x, 32, x + 14, 46), fill=colour, outline='#888888')
    draw.text((x + 19, 32), text, fill='black', font=caption_font)
    x += 19 + _text_width(draw, text, caption_font) + 16
  for i, (image, caption) in enumerate(cells):
    x = pad + (i % columns) * cell_w
    y = title_h + (i // columns) * cell_h
    text = _fit_text(draw, caption, caption_font, thumb)
    draw.text((x + (thumb - _text_width(draw, text, caption_font)) // 2, y), text,
              fill='black', font=caption_font)
    top = y + caption_h
    draw.rectangle((x, top, x + thumb - 1, top + thumb - 1), fill='#eeeeee')
    sheet.paste(image, (x + (thumb - image.width) // 2, top + (thumb - image.height) // 2))
  return sheet


def contact_sheet(split: SplitReport, class_names: Sequence[str], thumb: int = 96) -> Image.Image:
  """A grid of the split's sampled images, 8 per row, each titled with its class name
  (its file name when unlabeled, ``class id N?`` for an id outside ``labels.txt``)."""
  cells = []
  for record in split.samples:
    if record.label is None:
      caption = os.path.basename(record.filename)
    elif 0 <= record.label < len(class_names):
      caption = class_names[record.label]
    else:
      caption = f'class id {record.label}?'
    try:
      image = _record_image(record, thumb)
    except (OSError, ValueError):
      image, caption = Image.new('RGB', (thumb, thumb), '#cc0000'), 'does not decode'
    cells.append((image, caption))
  title = (f'{split.name}: {len(cells)} of {split.num_examples:,} examples '
           f'(first records of {split.num_shards} shards)')
  return _grid(cells, title, thumb)


def voc_colour_map(n: int = 256) -> List[Tuple[int, int, int]]:
  """PASCAL VOC's colour map: colour i of class index i, by interleaving i's bits (VOCdevkit)."""
  colours = []
  for i in range(n):
    r = g = b = 0
    c = i
    for shift in range(7, -1, -1):
      r |= (c & 1) << shift
      g |= ((c >> 1) & 1) << shift
      b |= ((c >> 2) & 1) << shift
      c >>= 3
    colours.append((r, g, b))
  return colours


def overlay_mask(image: Image.Image, mask: Image.Image, alpha: float = 0.5) -> Image.Image:
  """``image`` (RGB) with ``mask`` (mode L or P, class indices, same size) blended on top.

  Each class index gets its VOC colour at opacity ``alpha``; void (255) stays transparent.
  """
  indices = mask if mask.mode == 'L' else Image.frombytes('L', mask.size, mask.tobytes())
  colours = voc_colour_map()
  colour = Image.new('P', indices.size)
  colour.putpalette([v for rgb in colours for v in rgb])
  colour.frombytes(indices.tobytes())
  opacity = indices.point(lambda v: 0 if v == VOID_CLASS else int(255 * alpha))
  blended = image.copy()
  blended.paste(colour.convert('RGB'), (0, 0), opacity)
  return blended


def segmentation_sheet(split: SplitReport, class_names: Sequence[str] = (),
                       thumb: int = 96) -> Optional[Image.Image]:
  """The split's sampled records that hold a mask, overlaid (see :func:`overlay_mask`), each
  titled with its file name, under a legend of the class ids found (named by ``class_names``);
  None when no sampled record holds a mask. A mask that does not decode, or is not the image's
  size, is left out (``inspect`` reports it)."""
  cells, found = [], set()
  for record in split.samples:
    if record.mask is None:
      continue
    try:
      image = _record_image(record)
      mask = Image.open(io.BytesIO(record.mask))
      mask.load()
    except (OSError, ValueError):
      continue
    if mask.size != image.size or mask.mode not in ('L', 'P'):
      continue
    found.update(set(mask.tobytes()) - {VOID_CLASS})
    blended = overlay_mask(image, mask)
    blended.thumbnail((thumb, thumb), Image.Resampling.LANCZOS)
    cells.append((blended, os.path.basename(record.filename)))
  if not cells:
    return None
  colours = voc_colour_map()
  legend = [(colours[i], f'{i} {class_names[i]}' if i < len(class_names) else str(i))
            for i in sorted(found)]
  return _grid(cells, f'{split.name}: masks over images (colour = class id, void {VOID_CLASS} '
               'clear)', thumb, legend)


def _chart_rows(report: Report) -> Tuple[str, List[str], List[List[int]]]:
  """(title, row names, counts[row][split]) of the class-count chart.

  Classification: a row per line of ``labels.txt``. Segmentation: a row per mask class (named
  by ``labels.txt`` when it names them), counting the examples whose mask holds it. With no
  per-class counts (unlabeled, or segmentation under ``--no-verify``): one row of all examples.
  """
  splits = list(report.splits.values())
  names = list(report.class_names)
  if report.segmentation:
    title = 'Examples whose mask holds each class, per split'
    found = {name for split in splits for name, n in split.class_counts.items() if n}
    extra = sorted(found - set(names), key=lambda n: (len(n), n))  # 'class 2' < 'class 10'
    names = [n for n in names if n in found] + extra
  else:
    title = 'Examples per class and split'
  if not names or not any(split.class_counts for split in splits):
    return title, ['(all examples)'], [[split.num_examples for split in splits]]
  return title, names, [[split.class_counts.get(name, 0) for split in splits] for name in names]


def class_count_chart(report: Report) -> Image.Image:
  """A horizontal bar chart of examples per class (see :func:`_chart_rows`), one bar and its
  count per split, with a legend of the splits and an axis of examples; drawn with matplotlib
  (its Agg backend: no display needed), returned as an RGB image."""
  # pylint: disable=import-outside-toplevel  (matplotlib: imported only when a chart is drawn)
  from matplotlib.figure import Figure
  splits = list(report.splits.values())
  title, names, counts = _chart_rows(report)
  bar_h = 0.8 / max(len(splits), 1)  # one class's group of bars spans 0.8 of a row
  big = len(names) * max(len(splits), 1) > 40  # thinner bars and smaller labels
  row_inches = (max(len(splits), 1) * (0.09 if big else 0.18) + 0.1)
  figure = Figure(figsize=(8, 1.3 + len(names) * row_inches), dpi=100)
  axes = figure.add_subplot()
  for i, split in enumerate(splits):
    ys = [row + i * bar_h for row in range(len(names))]
    bars = axes.barh(ys, [row[i] for row in counts], height=bar_h * 0.9,
                     label=f'{split.name} ({split.num_examples:,})')
    axes.bar_label(bars, labels=[f'{row[i]:,}' for row in counts], padding=3,
                   fontsize=6 if big else 8)
  axes.set_yticks([row + bar_h * (len(splits) - 1) / 2 for row in range(len(names))],
                  [name if len(name) <= 32 else name[:31] + '…' for name in names])
  axes.tick_params(axis='y', labelsize=7 if big else 10)
  axes.set_ylim(len(names) - 0.1, -0.1 - bar_h / 2)  # the first class on top, as labels.txt
  axes.set_xlabel('examples')
  axes.margins(x=0.12)
  axes.grid(axis='x', color='#dddddd')
  axes.set_axisbelow(True)
  axes.set_title(f'{title}: {os.path.basename(report.data_dir.rstrip("/"))}', loc='left',
                 pad=24)
  axes.legend(loc='lower left', bbox_to_anchor=(0, 1.0), ncols=min(len(splits), 5),
              frameon=False, fontsize=9)  # under the title, above the bars
  figure.tight_layout()
  buffer = io.BytesIO()
  figure.savefig(buffer, format='png')
  return Image.open(io.BytesIO(buffer.getvalue())).convert('RGB')


def _file_image(report: Report, file: str, thumb: int) -> Tuple[Image.Image, str]:
  """The image of ``file`` (a path relative to the input) for a sheet, and a note: its record,
  else the source file under the manifest's ``input_dir`` (a file not written:
  ``--dedup=keep_first_near``), else a gray square saying neither is at hand."""
  record = report.images.get(file)
  try:
    if record is not None:
      return _record_image(record, thumb), ''
    if report.input_dir:
      import tensorflow as tf  # pylint: disable=import-outside-toplevel
      source = tf.io.gfile.join(report.input_dir, file)
      if tf.io.gfile.exists(source):
        with tf.io.gfile.GFile(source, 'rb') as f:
          image = Image.open(io.BytesIO(f.read())).convert('RGB')
        image.thumbnail((thumb, thumb), Image.Resampling.LANCZOS)
        return image, ' (source)'
  except (OSError, ValueError):
    pass  # drawn as missing below: a picture is no place to fail the inspection
  return Image.new('RGB', (thumb, thumb), '#bbbbbb'), ' (not found)'


def duplicates_sheet(report: Report, thumb: int = 96) -> Optional[Image.Image]:
  """The near-duplicate groups of ``report`` (``duplicates.jsonl``), one row each: its files
  side by side, each captioned with its split and class, the row titled with what is wrong
  (label conflict, leak across splits); conflicting and leaking groups first. None when there
  is no near group."""
  groups = report.duplicate_groups
  if not groups:
    return None
  caption_font, title_font = _font(max(11, thumb // 7)), _font(16)
  line_h = (caption_font.size if hasattr(caption_font, 'size') else 10) + 6
  pad, title_h = 6, 30
  columns = min(_COLUMNS, max(len(group.files) for group in groups))
  row_h = line_h * 2 + thumb + pad
  width = max(columns * (thumb + pad) + pad, 320)
  sheet = Image.new('RGB', (width, title_h + len(groups) * row_h + pad), 'white')
  draw = ImageDraw.Draw(sheet)
  draw.text((pad, 7), _fit_text(draw, f'near duplicates: {len(groups)} groups',
                                title_font, width - 2 * pad), fill='black', font=title_font)
  for row, group in enumerate(groups):
    y = title_h + row * row_h
    problems = [text for wrong, text in ((group.label_conflict, 'LABEL CONFLICT'),
                                         (group.leaks_across_splits, 'LEAKS ACROSS SPLITS'))
                if wrong]
    files = group.files
    header = (', '.join(problems + [' = '.join(os.path.basename(f.file) for f in files)])
              + (f'; kept {group.kept}' if group.kept else ''))
    draw.text((pad, y), _fit_text(draw, header, caption_font, width - 2 * pad),
              fill='#cc0000' if problems else 'black', font=caption_font)
    for column, entry in enumerate(files[:columns]):
      x = pad + column * (thumb + pad)
      image, note = _file_image(report, entry.file, thumb)
      caption = f'{entry.split} · {entry.label or os.path.basename(entry.file)}{note}'
      draw.text((x, y + line_h), _fit_text(draw, caption, caption_font, thumb), fill='black',
                font=caption_font)
      top = y + 2 * line_h
      draw.rectangle((x, top, x + thumb - 1, top + thumb - 1), fill='#eeeeee')
      sheet.paste(image, (x + (thumb - image.width) // 2, top + (thumb - image.height) // 2))
  return sheet


def quality_sheets(report: Report, samples: int = 32, thumb: int = 96
                   ) -> Dict[str, Image.Image]:
  """One sheet per quality flag raised (``quality.jsonl``): up to ``samples`` of its images,
  8 per row, each captioned with its file name. {} when nothing is flagged."""
  by_flag: Dict[str, List[dict]] = collections.defaultdict(list)
  for entry in report.flagged:
    for flag in entry['flags']:
      by_flag[flag].append(entry)
  sheets = {}
  for flag, entries in sorted(by_flag.items()):
    cells = []
    for entry in entries[:samples]:
      image, note = _file_image(report, entry['file'], thumb)
      cells.append((image, os.path.basename(entry['file']) + note))
    sheets[flag] = _grid(cells, f'{flag}: {len(entries)}', thumb)
  return sheets


def render(report: Report, out_dir: str, thumb: int = 96, samples: int = 32) -> List[str]:
  """Writes the PNGs of ``report`` into ``out_dir`` (created); returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  written = []

  def save(image, name):
    path = os.path.join(out_dir, name)
    image.save(path, optimize=True)
    written.append(path)

  for split in report.splits.values():
    save(contact_sheet(split, report.class_names, thumb), f'contact_sheet_{split.name}.png')
    overlay = segmentation_sheet(split, report.class_names, thumb)
    if overlay is not None:
      save(overlay, f'segmentation_{split.name}.png')
  save(class_count_chart(report), 'class_counts.png')
  duplicates = duplicates_sheet(report, thumb)
  if duplicates is not None:
    save(duplicates, 'near_duplicates.png')
  for flag, sheet in quality_sheets(report, samples, thumb).items():
    save(sheet, f'quality_{flag}.png')
  return written
