"""Near duplicates, quality flags and what they cost, on the shared real photos.

    .venv/bin/python bench/near_duplicates.py [--parts=precision,measures,quality,cost,job]
        [--data=hymenoptera,catdog_filenames,tiny_imagenet_val,messy] [--limit=N]
        [--rounds=3] [--job_data=hymenoptera,catdog_filenames,tiny_imagenet_val]
        [--job_sizes=1,3] [--json=PATH]

``precision``: the precision and recall of the job's near-duplicate groups on real photos with
  known copies and known different photos. The photos are those of ``--data`` that the job
  decodes (``--limit``: the first N of each set): of hymenoptera, catdog_filenames and
  tiny_imagenet_val each photo as it is and nine copies of it a user meets (``EDITS``: JPEG
  quality 50 and 95, WebP, PNG, half size, cropped by 2% and 5% per side, 20% brighter and
  darker), each converted and measured as the job does (``codec.convert_keeping_pixels`` at the
  default 256 px, ``image_measures.measure``); of messy the files as they are. Known copies:
  each edit and its photo; the near-identical pairs of catdog_filenames and the files of messy
  that hold one picture (``KNOWN_COPIES``, each looked at side by side); files with the same
  bytes count once (an exact group, not a near one). Known different: every other pair. The
  grouping is the job's own (``transforms.analysis.near_duplicates``: the LSH bands,
  ``bucket_edges``, ``components``). Per hash distance, with the hash alone and with the
  pixels' ``similarity`` at least each of ``SIMILARITIES``: recall (the known copy pairs found
  in one group), the pairs of different photos in one group, and precision (of all pairs in
  one group, the share that are copies); then the recall per edit at the defaults, and the
  different photos the hash alone joins at the old default distance, 10, with their similarity.

``measures``: the same candidates (hash within 16 bits, the LSH bands) confirmed by other
  thumbnails and measures, computed here from the same 64x64 thumbnail as the job's: per
  measure, the least threshold that joins no different photos and the recall there.

``quality``: the quality flags raised on each shared data set (hymenoptera, catdog_filenames,
  tiny_imagenet_val, messy), and which files.

``cost``: CPU time per image of the conversion alone (``codec.convert``) and with the measures
  (``convert_keeping_pixels`` + ``measure``), the two interleaved over the hymenoptera photos
  for ``--rounds`` rounds, in this process (one core): the ratio is the per-image cost of the
  hash, the pixels and the flags.

``job``: the Beam job in this process (the in-memory runner, so ``time.process_time`` sees all
  of its work) over the 1,698 distinct photos of hymenoptera, catdog_filenames and
  tiny_imagenet_val (``--job_data``), linked once and three times (``--job_sizes``) (the copies
  make every photo an exact duplicate: a worst case for the grouping, whose chained edges then
  hold every image), with ``--image_checks=false`` and ``=true``, ``--rounds`` rounds: the
  steady-state CPU time per image is the difference between the two sizes (start-up and
  per-stage costs cancel), and the difference between the modes is what the hash, the flags,
  the grouping and the two files add.
"""

import argparse
import collections
import hashlib
import io
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=wrong-import-position

import cv2  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
from PIL import Image, ImageEnhance  # pylint: disable=wrong-import-position

from transforms.analysis import near_duplicates, quality  # noqa: E402
from transforms.image import codec, image_measures

SPEC = codec.ImageSpec(image_size=256, resize_mode='shorter_side', image_format='jpeg')
EDITS = ('jpeg q50', 'jpeg q95', 'webp', 'png', 'half size', 'crop 2%', 'crop 5%', 'brighter',
         'darker')
"""The copies made of each photo: what a user meets (re-encoded, another format, resized,
cropped, brightened or darkened by 20%). A mirror image is not among them: pHash is not
flip-invariant, and the job documents that flips are not found."""
DISTANCES = (6, 8, 10, 12, 14, 16)
SIMILARITIES = (0.7, 0.75, 0.8, 0.85, 0.9)
EDITED_SETS = ('hymenoptera', 'catdog_filenames', 'tiny_imagenet_val')
"""The sets whose photos get ``EDITS``; the files of the others (messy) are taken as they are."""

KNOWN_COPIES = {
    # the same photo cropped, letterboxed or rescaled under two names (different bytes)
    'catdog_filenames': [['train/cat.138.jpg', 'train/cat.86.jpg'],
                         ['train/cat.124.jpg', 'train/cat.15.jpg'],
                         ['train/dog.1006.jpg', 'train/dog.1149.jpg'],
                         ['train/dog.1021.jpg', 'train/dog.1070.jpg'],
                         ['train/dog.1076.jpg', 'train/dog.1098.jpg']],
    # one picture in several files: formats, orientations, CMYK, palette, alpha
    'messy': [
        ['pillow__hopper.Lab.tif', 'pillow__hopper.bmp', 'pillow__hopper.gif',
         'pillow__hopper.tif', 'pillow__hopper.webp', 'pillow__hopper_16bit_qtables.jpg',
         'pillow__hopper_bigtiff.tif', 'pillow__hopper_idat_after_image_end.png',
         'pillow__hopper_jpg.tif', 'pillow__hopper_lzw.tif', 'pillow__hopper_orientation_2.jpg',
         'pillow__hopper_orientation_3.jpg', 'pillow__hopper_orientation_5.jpg',
         'pillow__hopper_orientation_6.jpg', 'pillow__hopper_orientation_6.webp',
         'pillow__hopper_orientation_8.jpg', 'pillow__hopper_rle8.bmp'],
        ['ljt__testimgari.jpg', 'ljt__testimgint.jpg', 'ljt__testorig.jpg'],
        ['pillow__flower.jpg', 'pillow__flower.webp'],
        ['pillow__flower2.jpg', 'pillow__jpeg_ff00_header.jpg'],
        ['pillow__iss634.gif', 'pillow__iss634.webp'],
        ['pillow__pil123p.png', 'pillow__pil123rgba.png'],
        ['pillow__pil_sample_cmyk.jpg', 'pillow__pil_sample_rgb.jpg',
         'pillow__truncated_app14.jpg'],
        ['pillow__sugarshack.mpo', 'pillow__sugarshack_bad_mpo_header.jpg'],
        ['pillow__transparent.gif', 'pillow__transparent.png', 'pillow__transparent.webp'],
        ['pillow__12in16bit.tif', 'pillow__jfif_unit_cm.jpg'],  # both a black frame
    ],
}
"""Files that hold one picture, beyond the edits made here, looked at side by side. Every other
pair of distinct contents is two different pictures, but for ``AMBIGUOUS``."""

AMBIGUOUS = {'messy': {
    'pillow__hopper_gray.jpg', 'ljt__testorig.png', 'ljt__monkey16.pgm', 'ljt__monkey16.png',
    # grayscale copies of colour pictures, or the other way round: the same photo, or not?
    'pillow__hopper_bad_exif.jpg',  # decodes to a damaged picture
    'pillow__1_trns.png', 'pillow__i_trns.png', 'pillow__l_trns.png',  # one shape, 3 renderings
}}
"""Files left out: neither a copy nor a different picture of the files they resemble."""


def _encoded(image: Image.Image, fmt: str, **params) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, fmt, **params)
  return buffer.getvalue()


def _edits(data: bytes) -> dict:
  """The ``EDITS`` of one photo, as file bytes (JPEG at quality 90 but where said)."""
  with Image.open(io.BytesIO(data)) as image:
    image = image.convert('RGB')
    width, height = image.size

    def cropped(fraction):
      dx, dy = max(1, round(width * fraction)), max(1, round(height * fraction))
      return image.crop((dx, dy, width - dx, height - dy))

    jpeg = lambda picture, quality_=90: _encoded(picture, 'JPEG', quality=quality_)
    return {
        'jpeg q50': jpeg(image, 50), 'jpeg q95': jpeg(image, 95),
        'webp': _encoded(image, 'WEBP', quality=80), 'png': _encoded(image, 'PNG'),
        'half size': jpeg(image.reduce(2)),
        'crop 2%': jpeg(cropped(0.02)), 'crop 5%': jpeg(cropped(0.05)),
        'brighter': jpeg(ImageEnhance.Brightness(image).enhance(1.2)),
        'darker': jpeg(ImageEnhance.Brightness(image).enhance(0.8)),
    }


class Item:
  """One measured file: what the job keeps of it (hash, pixels), the 64x64 YCrCb thumbnail's
  other reductions (``measures``), and what it is: ``picture`` (the identity of the picture:
  copies share it), ``edit`` ('original' or one of ``EDITS``), ``node`` (as the job's)."""

  def __init__(self, data: bytes, name: str, edit: str, picture: str):
    converted = codec.convert_keeping_pixels(data, SPEC)
    measures = image_measures.measure(converted.pixels, converted.source_size)
    self.phash, self.pixels = measures.phash, measures.pixels
    self.name, self.edit, self.picture = name, edit, picture
    self.node = (f'{name} [{edit}]', 'train', picture, hashlib.sha256(data).digest())
    self.variants = _variants(converted.pixels)


VARIANTS = {'luma 8x8': (8, 0), 'luma 8x8, chroma 2x2': (8, 2),
            'luma 8x8, chroma 4x4 (the job)': (8, 4), 'luma 16x16, chroma 8x8': (16, 8)}
"""The thumbnails the ``measures`` part compares: (luma side, chroma side), area means of the
64x64 thumbnail (as ``image_measures``); chroma side 0: no chroma."""


def _variants(pixels: np.ndarray) -> dict:
  thumbnail = cv2.resize(np.ascontiguousarray(pixels), (64, 64), interpolation=cv2.INTER_LINEAR)
  if thumbnail.ndim == 2 or thumbnail.shape[2] == 1:
    thumbnail = cv2.cvtColor(thumbnail.reshape(64, 64), cv2.COLOR_GRAY2RGB)
  ycc = cv2.cvtColor(thumbnail, cv2.COLOR_RGB2YCrCb)
  variants = {}
  for name, (luma, chroma) in VARIANTS.items():
    planes = [cv2.resize(ycc[..., 0], (luma, luma), interpolation=cv2.INTER_AREA)]
    if chroma:
      small = cv2.resize(ycc, (chroma, chroma), interpolation=cv2.INTER_AREA)
      planes += [small[..., 1], small[..., 2]]
    variants[name] = [plane.astype(np.float64).ravel() for plane in planes]
  return variants


def _ssim(x: np.ndarray, y: np.ndarray) -> float:
  """SSIM of two planes over one window (as ``near_duplicates.similarity``), clipped at 0."""
  c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
  mean_x, mean_y = x.mean(), y.mean()
  covariance = ((x - mean_x) * (y - mean_y)).mean()
  return max(0.0, (2 * mean_x * mean_y + c1) * (2 * covariance + c2)
             / ((mean_x ** 2 + mean_y ** 2 + c1) * (x.var() + y.var() + c2)))


def _measure_variant(a: 'Item', b: 'Item', name: str, combine: str) -> float:
  values = [_ssim(x, y) for x, y in zip(a.variants[name], b.variants[name])]
  return float(np.prod(values)) if combine == 'product' else float(np.mean(values))


def load_items(data_sets, limit=None):
  """The measured files of ``data_sets`` (names under ../shared/data) and the edits of each
  photo of ``EDITED_SETS``; one Item per distinct content (SHA-256), the first met."""
  items, seen = [], set()

  def add(data, name, edit, picture):
    digest = hashlib.sha256(data).digest()
    if digest in seen:
      return
    seen.add(digest)
    items.append(Item(data, name, edit, picture))

  for data_set in data_sets:
    root = common.shared_data(data_set)
    copies = {f'{data_set}/{file}': f'{data_set}/{group[0]}'
              for group in KNOWN_COPIES.get(data_set, ()) for file in group}
    ambiguous = AMBIGUOUS.get(data_set, set())
    files = sorted(path for path in root.rglob('*') if path.is_file()
                   and path.relative_to(root).as_posix() not in ambiguous)
    count, started = 0, time.perf_counter()
    for path in files:
      data = path.read_bytes()
      try:
        codec.convert_keeping_pixels(data, SPEC)
      except codec.ImageError:
        continue  # not an image the job converts (messy/ holds such files on purpose)
      name = f'{data_set}/{path.relative_to(root).as_posix()}'
      picture = copies.get(name, name)
      add(data, name, 'original', picture)
      if data_set in EDITED_SETS:
        for edit, edited in _edits(data).items():
          add(edited, name, edit, picture)
      count += 1
      if limit and count >= limit:
        break
    print(f'  {data_set}: {count} files measured, {len(items)} items so far '
          f'({time.perf_counter() - started:.0f} s)', flush=True)
  return items


def _lsh_links(items, distance):
  """The job's links over ``items`` with no least similarity (each with its similarity and
  bits: any threshold is then a filter of these): band buckets, then bucket_edges."""
  buckets = collections.defaultdict(list)
  for item in items:
    for key in near_duplicates.band_keys(item.phash):
      buckets[key].append((item.phash, item.pixels, item.node))
  for (band, _), members in sorted(buckets.items()):
    if len(members) > 1:
      yield from near_duplicates.bucket_edges(members, distance, 0.0, band)


def _all_pair_links(items, distance, least):
  """The links of the job's confirmation with every pair compared (no bands): the recall the
  bands give up. Hamming distances by numpy over all pairs, similarity for those within."""
  hashes = np.array([item.phash for item in items], np.uint64)
  for i in range(len(items) - 1):
    close = np.nonzero(np.bitwise_count(hashes[i + 1:] ^ hashes[i]) <= distance)[0]
    for j in (close + i + 1).tolist():
      alike = near_duplicates.similarity(items[i].pixels, items[j].pixels)
      if alike >= least:
        yield alike, image_measures.hamming(items[i].phash, items[j].phash), (
            items[i].node, items[j].node)


class Scorer:
  """Precision and recall of the groups that a set of links makes, against the known copies."""

  def __init__(self, items):
    self.items = items
    self.nodes = [item.node for item in items]
    originals = {item.name: item.node for item in items if item.edit == 'original'}
    # the copy pairs to find: each edit with its photo, and the known copies of one picture
    self.targets = [(originals[item.name], item.node, item.edit) for item in items
                    if item.edit != 'original' and item.name in originals]
    by_picture = collections.defaultdict(list)
    for item in items:
      if item.edit == 'original':
        by_picture[item.picture].append(item.node)
    self.targets += [(a, b, 'known copies') for nodes in by_picture.values()
                     for a, b in zip(nodes, nodes[1:])]

  def score(self, links):
    """{'recall', 'recall_by_kind', 'false_pairs', 'true_pairs', 'precision', 'groups'}."""
    group_of = {}
    groups = near_duplicates.components(nodes for _, _, nodes in links)
    for i, nodes in enumerate(groups):
      for node in nodes:
        group_of[node] = i
    found = collections.Counter()
    total = collections.Counter()
    for a, b, kind in self.targets:
      total[kind] += 1
      found[kind] += a in group_of and group_of.get(a) == group_of.get(b)
    true_pairs = false_pairs = 0
    for nodes in groups:
      pictures = collections.Counter(node[2] for node in nodes)
      pairs = len(nodes) * (len(nodes) - 1) // 2
      same = sum(n * (n - 1) // 2 for n in pictures.values())
      true_pairs += same
      false_pairs += pairs - same
    all_pairs = true_pairs + false_pairs
    return {'recall': sum(found.values()) / sum(total.values()),
            'recall_by_kind': {kind: found[kind] / total[kind] for kind in total},
            'true_pairs': true_pairs, 'false_pairs': false_pairs,
            'precision': true_pairs / all_pairs if all_pairs else 1.0, 'groups': len(groups)}


def _percent(value):
  return f'{value:.2%}' if value < 1 else '100%'


def precision_part(report, items):
  scorer = Scorer(items)
  links = list(_lsh_links(items, near_duplicates.MAX_DISTANCE))
  print(f'\n{len(items):,} images ({sum(1 for i in items if i.edit == "original"):,} files and '
        f'their edits), {len(scorer.targets):,} known copy pairs, '
        f'{len(links):,} candidate links within {near_duplicates.MAX_DISTANCE} bits (LSH bands)')
  picture_of = {item.node: item.picture for item in items}
  rows, table = [], {}
  for distance in DISTANCES:
    compared = sum(1 for _, bits, nodes in links if bits <= distance and len(nodes) == 2
                   and picture_of[nodes[0]] != picture_of[nodes[1]])
    row = [str(distance), f'{compared:,}']
    for least in (None,) + SIMILARITIES:
      kept = [link for link in links if link[1] <= distance
              and (least is None or link[0] >= least)]
      result = scorer.score(kept)
      table[f'{distance} {least or "hash alone"}'] = result
      cell = (f'{_percent(result["recall"])} / {_percent(result["precision"])} '
              f'({result["false_pairs"]:,})')
      if (distance, least) == (near_duplicates.DEFAULT_DISTANCE, near_duplicates.MIN_SIMILARITY):
        cell = f'**{cell}**'
      row.append(cell)
    rows.append(row)
  report['precision'] = {'images': len(items), 'known_copy_pairs': len(scorer.targets),
                         'table': table}
  print('\nrecall / precision (pairs of different photos in one group), per hash distance '
        '(rows): the hash alone, then confirmed on the pixels at each least similarity '
        '(columns); the defaults in bold:')
  print(common.format_table(['bits', 'pairs of different photos compared', 'hash alone']
                            + [f'similarity >= {least}' for least in SIMILARITIES], rows))
  default = table[f'{near_duplicates.DEFAULT_DISTANCE} {near_duplicates.MIN_SIMILARITY}']
  old = table['10 hash alone']
  every_pair = scorer.score(list(_all_pair_links(items, near_duplicates.DEFAULT_DISTANCE,
                                                  near_duplicates.MIN_SIMILARITY)))
  report['precision']['defaults_every_pair_compared'] = every_pair
  print(f'\nrecall per kind of copy: the hash alone at 10 bits (the old default); the defaults '
        f'({near_duplicates.DEFAULT_DISTANCE} bits, similarity >= '
        f'{near_duplicates.MIN_SIMILARITY}); the defaults comparing every pair (no bands):')
  kinds = [kind for kind in EDITS + ('known copies',) if kind in default['recall_by_kind']]
  # how alike each copy is to its photo (whether or not the bands compare them)
  pixels_of = {item.node: item.pixels for item in items}
  alike = collections.defaultdict(list)
  for a, b, kind in scorer.targets:
    alike[kind].append(near_duplicates.similarity(pixels_of[a], pixels_of[b]))
  report['precision']['similarity_to_its_photo'] = {
      kind: {'median': statistics.median(values), 'p5': float(np.percentile(values, 5)),
             'min': min(values)} for kind, values in alike.items()}
  print(common.format_table(
      ['copy', 'hash alone, 10', 'defaults', 'defaults, every pair',
       'similarity to its photo: median, 5th percentile, least'],
      [[kind] + [_percent(result['recall_by_kind'][kind])
                 for result in (old, default, every_pair)]
       + [f'{statistics.median(alike[kind]):.3f}, {np.percentile(alike[kind], 5):.3f}, '
          f'{min(alike[kind]):.3f}'] for kind in kinds]
      + [['all', *(f'{_percent(result["recall"])} / {_percent(result["precision"])} '
                   f'({result["false_pairs"]:,})' for result in (old, default, every_pair)),
          '']]))
  closest = max(((alike, bits, nodes) for alike, bits, nodes in links
                 if bits <= near_duplicates.DEFAULT_DISTANCE and len(nodes) == 2
                 and picture_of[nodes[0]] != picture_of[nodes[1]]), default=None)
  if closest:
    report['precision']['most_alike_different'] = [closest[0], closest[1],
                                                   closest[2][0][0], closest[2][1][0]]
    print(f'\nthe most alike different photos compared (within '
          f'{near_duplicates.DEFAULT_DISTANCE} bits): similarity {closest[0]:.3f}, '
          f'{closest[1]} bits: {closest[2][0][0]}, {closest[2][1][0]}')
  # the different photos the hash alone joins at 10 bits, closest first
  by_node = {item.node: item for item in items}
  different = sorted(((bits, alike, nodes) for alike, bits, nodes in links
                      if bits <= 10 and len(nodes) == 2
                      and by_node[nodes[0]].edit == by_node[nodes[1]].edit == 'original'
                      and nodes[0][2] != nodes[1][2]), key=lambda link: (link[0], -link[1]))
  report['precision']['different_originals_within_10_bits'] = [
      [bits, alike, nodes[0][0], nodes[1][0]] for bits, alike, nodes in different]
  print(f'\ndifferent photos (as they are, no edit) whose hashes are within 10 bits: '
        f'{len(different)}; similarity, bits, files:')
  for bits, alike, nodes in different[:25]:
    print(f'  {alike:.3f} {bits:2}  {nodes[0][0].split(" [")[0]}  {nodes[1][0].split(" [")[0]}')


def measures_part(report, items):
  scorer = Scorer(items)
  distance = near_duplicates.MAX_DISTANCE
  candidates = [nodes for _, _, nodes in _lsh_links(items, distance)]
  by_node = {item.node: item for item in items}
  rows, report['measures'] = [], {}
  options = [(name, 'product') for name in VARIANTS] + [
      ('luma 8x8, chroma 4x4 (the job)', 'mean')]
  for name, combine in options:
    values = []
    for nodes in candidates:
      if len(nodes) > 2:  # equal hashes and pixels: the same thumbnail whatever the measure
        values.append(1.0)
        continue
      values.append(_measure_variant(by_node[nodes[0]], by_node[nodes[1]], name, combine))
    best = None
    for least in np.arange(0.3, 1.0, 0.025):
      result = scorer.score([(value, 0, nodes) for value, nodes in zip(values, candidates)
                             if value >= least])
      if result['false_pairs'] == 0:
        best = (round(float(least), 3), result)
        break
    label = f'{name}, SSIM {combine} over the planes'
    report['measures'][label] = None if best is None else {'least': best[0], **best[1]}
    bytes_ = VARIANTS[name][0] ** 2 + 2 * VARIANTS[name][1] ** 2
    rows.append([label, bytes_, '-' if best is None else best[0],
                 '-' if best is None else _percent(best[1]['recall'])])
  print(f'\nthe candidates within {distance} bits (LSH bands) confirmed by other thumbnails and '
        'measures: the least threshold (step 0.025) that joins no different photos, the recall '
        'there:')
  print(common.format_table(['thumbnail, measure', 'bytes', 'least similarity', 'recall'],
                            rows))


def quality_part(report):
  report['quality'] = {}
  for name in ('hymenoptera', 'catdog_filenames', 'tiny_imagenet_val', 'messy'):
    root = common.shared_data(name)
    counts, flagged, measured = collections.Counter(), [], 0
    for path in sorted(p for p in root.rglob('*') if p.is_file()):
      try:
        converted = codec.convert_keeping_pixels(path.read_bytes(), SPEC)
      except codec.ImageError:
        continue  # not an image the job converts (messy/ holds such files on purpose)
      measured += 1
      flags = quality.flags_of(image_measures.measure(converted.pixels, converted.source_size))
      if flags:
        counts.update(flags)
        flagged.append((path.relative_to(root).as_posix(), flags))
    report['quality'][name] = {'measured': measured, 'flagged': len(flagged),
                               'flags': dict(counts)}
    print(f'\n{name}: {len(flagged)} of {measured} images flagged: '
          + ', '.join(f'{n} {flag}' for flag, n in counts.most_common()))
    for file, flags in flagged[:12]:
      print(f'  {file}: {", ".join(flags)}')
    if len(flagged) > 12:
      print(f'  ... {len(flagged) - 12} more')


def cost_part(report, rounds):
  photos = [path.read_bytes() for path in common.image_files(common.shared_data('hymenoptera'))]

  def plain():
    for data in photos:
      codec.convert(data, SPEC)

  def measured():
    for data in photos:
      converted = codec.convert_keeping_pixels(data, SPEC)
      image_measures.measure(converted.pixels, converted.source_size)

  def measures_only(converted_all):
    for converted in converted_all:
      image_measures.measure(converted.pixels, converted.source_size)

  converted_all = [codec.convert_keeping_pixels(data, SPEC) for data in photos]
  times = collections.defaultdict(list)
  for _ in range(rounds):
    for name, fn in (('convert', plain), ('convert + measures', measured),
                     ('measures alone', lambda: measures_only(converted_all))):
      start = time.process_time()
      fn()
      times[name].append((time.process_time() - start) / len(photos) * 1e3)
  best = {name: min(values) for name, values in times.items()}
  report['cost'] = {'cpu_ms_per_image': best, 'rounds': rounds, 'images': len(photos)}
  print(f'\nCPU ms per image, best of {rounds} interleaved rounds over {len(photos)} photos '
        '(one core, 256 px shorter side):')
  for name, value in best.items():
    print(f'  {name:<20} {value:.3f}')
  print(f'  measures / convert: {best["measures alone"] / best["convert"]:.1%}; '
        '(convert + measures) / convert - 1: '
        f'{best["convert + measures"] / best["convert"] - 1:.1%}')


def _job_cpu(source: pathlib.Path, out: pathlib.Path, checks: str) -> float:
  """CPU seconds of one run of the job in this process (the in-memory runner: one process,
  so ``time.process_time`` sees all of its work)."""
  from pipeline import run as job  # pylint: disable=import-outside-toplevel
  shutil.rmtree(out, ignore_errors=True)
  argv = [f'--input_dir={source}', f'--output_dir={out}', common.FOLLOW_LINKS, '--stats=false',
          '--num_shards=2', '--splits=train=1.0', f'--image_checks={checks}',
          '--direct_running_mode=in_memory']
  start = time.process_time()
  if job.run(argv) != 0:
    sys.exit(f'the job failed (--image_checks={checks})')
  return time.process_time() - start


def job_part(report, rounds, data_sets, sizes=(1, 3)):
  files = []
  for name in data_sets:
    root = common.shared_data(name)
    files += [(root, p) for p in root.rglob('*') if p.is_file()
              and p.suffix.lower() in ('.jpg', '.jpeg', '.gif')]
  count = len(files)
  with tempfile.TemporaryDirectory() as tmp:
    sources = {}
    for times in sizes:
      sources[times] = pathlib.Path(tmp) / f'{times}x'
      for root, path in files:
        common.repeat_tree([path], root, times, sources[times] / root.name)
    _job_cpu(sources[sizes[0]], pathlib.Path(tmp) / 'warm-up', 'false')  # imports, caches
    cpu = collections.defaultdict(list)
    for _ in range(rounds):
      for times in sizes:
        for checks in ('false', 'true'):
          cpu[(times, checks)].append(_job_cpu(sources[times], pathlib.Path(tmp) / 'out', checks))
  best = {key: min(values) for key, values in cpu.items()}
  extra_images = count * (sizes[1] - sizes[0])
  per_image = {checks: (best[(sizes[1], checks)] - best[(sizes[0], checks)]) / extra_images * 1e3
               for checks in ('false', 'true')}
  report.setdefault('job', {})[','.join(data_sets)] = {
      'distinct_photos': count, 'sizes': list(sizes),
      'cpu_s': {f'{times}x {checks}': values for (times, checks), values in cpu.items()},
      'steady_cpu_ms_per_image': per_image}
  print(f'\nthe job (in-memory runner, one process) on {count} distinct photos of '
        f'{", ".join(data_sets)}, each '
        f'{" and ".join(f"{t}x" for t in sizes)} (copies: every photo then an exact duplicate), '
        f'CPU s per run, {rounds} rounds:')
  for (times, checks), values in sorted(cpu.items()):
    print(f'  {times}x --image_checks={checks:<5}  ' + ', '.join(f'{v:.2f}' for v in values))
  for checks in ('false', 'true'):
    print(f'  steady state, --image_checks={checks:<5}: {per_image[checks]:.3f} CPU ms per image '
          f'(best {sizes[1]}x - best {sizes[0]}x, over {extra_images} images)')
  print(f'  added by the checks: {per_image["true"] - per_image["false"]:+.3f} CPU ms per image, '
        f'{per_image["true"] / per_image["false"] - 1:+.1%}')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--parts', default='precision,measures,quality,cost,job')
  parser.add_argument('--data', default=','.join(EDITED_SETS + ('messy',)),
                      help='the shared data sets of the precision and measures parts')
  parser.add_argument('--limit', type=int, default=None,
                      help='the first N files of each of them (a quick run)')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--job_data', default='hymenoptera,catdog_filenames,tiny_imagenet_val',
                      help='the shared data sets the job part converts (comma-separated)')
  parser.add_argument('--job_sizes', default='1,3', help='the two repetitions of them')
  parser.add_argument('--json', default=None, help='also write the figures to this file')
  args = parser.parse_args()
  report = {'machine': common.machine()}
  parts = args.parts.split(',')
  if 'precision' in parts or 'measures' in parts:
    print(f'measuring the files of {args.data} and {len(EDITS)} edits of each photo ...')
    items = load_items(args.data.split(','), args.limit)
    if 'precision' in parts:
      precision_part(report, items)
    if 'measures' in parts:
      measures_part(report, items)
  if 'quality' in parts:
    quality_part(report)
  if 'cost' in parts:
    cost_part(report, args.rounds)
  if 'job' in parts:
    job_part(report, args.rounds, args.job_data.split(','),
             tuple(int(n) for n in args.job_sizes.split(',')))
  common.write_json(args.json, report)


if __name__ == '__main__':
  main()
