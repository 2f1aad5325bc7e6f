"""Checks an imagerecords output directory record by record, and draws what is in it.

    python -m imagerecords.inspect OUT [--out DIR] [--no-verify] [--samples N] [--thumb_size PX]

Verification reads every byte of every shard and reports each problem on one line, naming the
file and, inside a shard, the record's index (0-based, in file order) and the byte offset of its
frame (of the decompressed stream for ``.tfrecord.gz``). ``--no-verify`` reads only the records
the pictures need and keeps the first two checks:

* ``_SUCCESS`` and ``manifest.json`` are present and the manifest says ``"status": "complete"``;
  ``labels.txt`` lists the manifest's classes;
* every shard the manifest lists exists, and no other shard file lies in the directory;
* every record's frame is whole and both its checksums hold: the masked CRC-32C of the length
  field and of the data (the TFRecord framing, TensorFlow's ``core/lib/io/record_writer.cc``;
  see :mod:`imagerecords.framing`). A flipped byte in the data fails the data checksum of the
  one record it lies in; the walk goes on with the next record. A flipped byte in a length
  field leaves the rest of the shard unframeable, and the walk stops there, as does a
  truncated shard;
* every record parses as a ``tf.train.Example`` holding the contract's keys
  (:mod:`imagerecords.contract`), its image decodes (with TensorFlow, as the reader decodes it;
  a ``raw`` image has height x width x channels bytes) to the stored ``image/height`` x
  ``image/width`` x ``image/channels``;
* classification: its class id indexes ``labels.txt`` and its class text is that line;
  segmentation (the manifest's ``"task": "segmentation"``): its mask decodes to one channel of
  the image's height and width (a palette or colour PNG does not: TensorFlow would decode its
  colours), and its class ids other than void (255) index ``labels.txt`` when that names classes;
* the records counted per shard and per split, and per class for classification, equal the
  manifest's counts;
* a shard whose records all pass is the file the manifest lists: its size and SHA-256 equal
  the manifest's ``bytes`` and ``sha256`` (the check of ``imagerecords.load(...,
  verify_shards='sha256')``): sound records of another data set, or the same photos written
  with other labels, are not the data the manifest describes.

Exit status: 0 and a last line ``OK`` when nothing is wrong; 1 and one line per problem
otherwise (at most 20 per shard, then a count of the rest); 2 when the directory cannot be
inspected at all (no manifest).

Pictures (drawn by :mod:`imagerecords.pictures`: Pillow, and matplotlib for the chart), written to
the folder ``--out DIR`` names, and only then (nothing is written into the current folder, nor
into ``OUT``, where a folder the job did not write would stop it replacing a dated run)::

    contact_sheet_<split>.png   a grid of --samples images (8 per row), each titled with its
                                class name; drawn round-robin from the shards' first records
                                (the writer shuffles records, so these are a random sample)
    class_counts.png            a bar chart of examples per class, one bar per split (for
                                segmentation: examples whose mask holds the class)
    segmentation_<split>.png    for records with a mask (``image/segmentation/class/encoded``):
                                the images with the mask overlaid at half opacity, a colour
                                per class id (the PASCAL VOC colour map, with a legend), void
                                (255) transparent
    near_duplicates.png         the near-duplicate groups of duplicates.jsonl (at most 12), one
                                row each, every file with its split and class; groups with a
                                label conflict, then those leaking across splits, first
    quality_<flag>.png          per quality flag of quality.jsonl (low_information, dark, ...):
                                up to --samples of its images, with their file names

and a table of splits, shards, examples, classes, bytes and mean image size is printed.

Files are read with ``tf.io.gfile``, so ``OUT`` may be a ``gs://`` URL. Beam is not needed.
"""

import argparse
import collections
import dataclasses
import gzip
import json
import math
import os
import sys
import tempfile
from typing import BinaryIO, Dict, Iterator, List, Optional, Sequence, Tuple

from imagerecords import contract
from imagerecords import framing
from imagerecords import manifest_schema
from imagerecords.report import (Record, Report, SplitReport,  # pylint: disable=unused-import
                                 parse_record)  # parse_record: part of this module's API

MAX_PROBLEMS_PER_SHARD = 20
VOID_CLASS = contract.MASK_VOID  # 255: the "ignore" id of segmentation masks (PASCAL VOC's)


# --- the framing walk ---------------------------------------------------------------------------


class Damage(str):
  """A problem line after which the rest of a shard cannot be located (truncated or corrupt
  framing); plain ``str`` problem lines concern one record or file only."""


@dataclasses.dataclass(frozen=True)
class Frame:
  """One record of a shard: its index (0-based, file order), frame offset in bytes, and data.

  ``data`` is None when the data checksum does not hold (the record is counted, not used).
  """
  index: int
  offset: int
  data: Optional[bytes]


def walk_frames(stream: BinaryIO, name: str, problems: List[str],
                check_crc: bool = True) -> Iterator[Frame]:
  """Yields every record frame of an uncompressed TFRecord stream, checking its checksums.

  Each problem found is appended to ``problems`` as one line starting with ``name``. A data
  checksum mismatch yields the frame with ``data=None`` and goes on; a length checksum mismatch
  or a frame cut short ends the walk (nothing after it can be located), its line a
  :class:`Damage`.

  Args:
    stream: the shard's bytes, read from the start (a gzip stream for ``.tfrecord.gz``).
    name: the file name used in problem lines.
    problems: list the problem lines are appended to.
    check_crc: False skips both checksums (for drawing samples without verifying).
  """
  length_ok = framing.length_checksum_ok if check_crc else None
  index = 0
  try:
    for frame in framing.read_frames(stream, length_ok=length_ok):
      data = frame.data
      if check_crc and not framing.data_checksum_ok(frame):
        problems.append(f'{name}: record {index} (byte {frame.offset}): corrupt: the data '
                        f'({len(data)} bytes) fails its checksum')
        data = None
      yield Frame(index, frame.offset, data)
      index += 1
  except framing.FramingError as error:
    problems.append(Damage(f'{name}: record {index} (byte {error.offset}): {error.reason}'))


def check_record(record: Record, class_names: Sequence[str],
                 segmentation: bool = False) -> List[str]:
  """The problems of one parsed record, each a phrase (no file or index); [] when it is sound.

  Decodes the image with TensorFlow as the reader does (``tf.io.decode_jpeg`` with
  ``contract.JPEG_DCT_METHOD`` for JPEG bytes, ``tf.io.decode_image`` for others; a ``raw``
  image is checked by its byte count) and compares its shape with the stored height, width and
  channels. Classification (``segmentation`` False): the class id indexes ``class_names`` and
  the class text is that name; a labeled dataset's record must have a class id. Segmentation:
  the record must hold a mask, decoding (``tf.io.decode_png``) to one channel of the image's
  size, whose class ids other than void (255) index ``class_names`` when that names classes;
  the ids found are stored in ``record.mask_classes``.
  """
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  problems = []
  stored = (record.height, record.width, record.channels)
  stored_text = 'x'.join(map(str, stored))
  if record.image_format == contract.RAW_FORMAT:
    expected = record.height * record.width * record.channels
    if len(record.encoded) != expected:
      problems.append(f'raw image holds {len(record.encoded)} bytes, {stored_text} needs '
                      f'{expected}')
  else:
    try:
      if tf.io.is_jpeg(record.encoded):  # as the reader decodes it (its IDCT: the contract's)
        image = tf.io.decode_jpeg(record.encoded, dct_method=contract.JPEG_DCT_METHOD)
      else:
        image = tf.io.decode_image(record.encoded, channels=0, expand_animations=False)
      shape = tuple(image.shape)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
      problems.append(f'image ({record.image_format}) does not decode: {_first_line(e)}')
    else:
      if shape != stored:
        problems.append(f'image decodes to {"x".join(map(str, shape))}, the record says '
                        f'{stored_text}')

  if segmentation and record.mask is None:
    problems.append(f'no {contract.MASK_ENCODED!r} in a segmentation dataset')
  if record.mask is not None:
    try:
      mask = tf.io.decode_png(record.mask, channels=0).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
      problems.append(f'segmentation mask does not decode: {_first_line(e)}')
    else:
      if mask.shape != (record.height, record.width, 1):
        hint = (' (a palette or colour PNG: TensorFlow decodes its colours, not class indices)'
                if mask.shape[-1] != 1 else '')
        problems.append(f'segmentation mask decodes to {"x".join(map(str, mask.shape))}, '
                        f'expected {record.height}x{record.width}x1{hint}')
      else:
        ids = frozenset(int(v) for v in np.unique(mask)) - {VOID_CLASS}
        record.mask_classes = ids
        unknown = sorted(i for i in ids if i >= len(class_names))
        if class_names and unknown:
          problems.append(f'segmentation mask holds class ids {unknown} beyond labels.txt '
                          f'({len(class_names)} classes, ids 0-{len(class_names) - 1}, void '
                          f'{VOID_CLASS})')

  if not segmentation and class_names and record.label is None:
    problems.append(f'no {contract.CLASS_LABEL!r} although labels.txt lists classes')
  if record.label is not None:
    if not 0 <= record.label < len(class_names):
      problems.append(f'class id {record.label} is not in labels.txt '
                      f'({len(class_names)} classes, ids 0-{len(class_names) - 1})')
    elif record.class_text is not None and record.class_text != class_names[record.label]:
      problems.append(f'class text {record.class_text!r} is not line {record.label} of '
                      f'labels.txt ({class_names[record.label]!r})')
  return problems


def _first_line(error) -> str:
  """The first line of a TensorFlow error's message (its op trace follows)."""
  message = getattr(error, 'message', '') or str(error) or type(error).__name__
  return message.splitlines()[0]


class NotAnOutputDirectory(FileNotFoundError):
  """``manifest.json`` is missing or unreadable: there is nothing to inspect."""


MAX_GROUPS_DRAWN = 12
"""Near-duplicate groups drawn at most (label conflicts, then leaks across splits, first)."""


def _read_jsonl(path: str) -> List[dict]:
  """The JSON objects of a .jsonl file; [] when there is none (an output of an older version).

  Raises:
    ValueError: a line that is not JSON, naming the file and the line.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  if not tf.io.gfile.exists(path):
    return []
  entries = []
  with tf.io.gfile.GFile(path, 'r') as f:
    for number, line in enumerate(f, 1):
      if line.strip():
        try:
          entries.append(json.loads(line.strip()))
        except json.JSONDecodeError as error:
          raise ValueError(f'{os.path.basename(path)}: line {number} is not JSON: {error.msg} '
                           f'at column {error.colno}') from None
  return entries


def _read_duplicate_groups(path: str) -> List[manifest_schema.DuplicateGroupEntry]:
  """The groups of ``duplicates.jsonl`` at ``path``, in its order; [] when there is none.

  Raises:
    ValueError: a line that is not JSON, or not a group of the output contract (its message
      names the line and the key).
  """
  return [manifest_schema.DuplicateGroupEntry.from_json(group, f'line {number}',
                                                        file=contract.DUPLICATES_FILE)
          for number, group in enumerate(_read_jsonl(path), 1)]


def _groups_to_draw(groups: List[manifest_schema.DuplicateGroupEntry]
                    ) -> List[manifest_schema.DuplicateGroupEntry]:
  """The near-duplicate groups to draw: label conflicts first, then leaks, then the rest, by
  first file; at most ``MAX_GROUPS_DRAWN``."""
  near = [group for group in groups if group.kind == 'near']
  near.sort(key=lambda group: (not group.label_conflict, not group.leaks_across_splits,
                               group.files[0].file))
  return near[:MAX_GROUPS_DRAWN]


def inspect(data_dir: str, verify: bool = True, samples: int = 32) -> Report:
  """Reads ``data_dir``'s metadata and shards; verifies them unless ``verify`` is False.

  Without verification only the first records of each shard are read, enough for ``samples``
  samples per split, and only the metadata is checked (``_SUCCESS``, manifest status,
  ``labels.txt``, the shard files present); counts then come from the manifest and sizes from
  the samples. The records of the files that ``duplicates.jsonl`` (the near groups drawn) and
  ``quality.jsonl`` (up to ``samples`` per flag) name are kept for the pictures; without
  verification the shards are then read on until they are found.

  Raises:
    NotAnOutputDirectory: no readable ``manifest.json``.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  problems = []
  manifest_path = _join(data_dir, contract.MANIFEST_FILE)
  try:
    with tf.io.gfile.GFile(manifest_path, 'r') as f:
      manifest = manifest_schema.Manifest.from_json(json.load(f))
  except (tf.errors.NotFoundError, ValueError) as e:  # JSONDecodeError is a ValueError
    raise NotAnOutputDirectory(f'{manifest_path}: cannot read the manifest ({e})') from None
  if not tf.io.gfile.exists(_join(data_dir, contract.SUCCESS_FILE)):
    problems.append(f'{contract.SUCCESS_FILE}: missing: the job that writes this directory is '
                    'still running or failed; readers refuse it')
  if manifest.status != 'complete':
    problems.append(f'{contract.MANIFEST_FILE}: status {manifest.status!r}: {manifest.error}')
  class_names = list(manifest.classes)
  segmentation = manifest.task == contract.TASK_SEGMENTATION
  labels_path = _join(data_dir, contract.LABELS_FILE)
  if tf.io.gfile.exists(labels_path):
    with tf.io.gfile.GFile(labels_path, 'r') as f:
      labels = f.read().splitlines()
    if labels != class_names:
      problems.append(f'{contract.LABELS_FILE}: lists {len(labels)} classes, the manifest '
                      f'{len(class_names)}; they differ')
    class_names = labels
  elif class_names:
    problems.append(f'{contract.LABELS_FILE}: missing')

  split_infos = manifest.splits
  listed = {entry.file for info in split_infos.values() for entry in info.shards}
  for path in sorted(tf.io.gfile.glob(_join(data_dir, '*' + contract.SHARD_SUFFIX + '*'))):
    name = os.path.basename(path)
    if contract.parse_shard_file_name(name) and name not in listed:
      problems.append(f'{name}: a shard file the manifest does not list (left by another run?)')

  duplicate_groups, flagged = [], []
  try:
    duplicate_groups = _groups_to_draw(
        _read_duplicate_groups(_join(data_dir, contract.DUPLICATES_FILE)))
    flagged = _read_jsonl(_join(data_dir, contract.QUALITY_FILE))
  except ValueError as error:  # a line not JSON, or a group not of the contract: a problem
    problems.append(str(error))  # of this output, named by file and line; no picture of it
  wanted = {entry.file for group in duplicate_groups for entry in group.files}
  per_flag = collections.Counter()
  for entry in flagged:
    if any(per_flag[flag] < samples for flag in entry['flags']):
      wanted.add(entry['file'])
      per_flag.update(entry['flags'])
  images: Dict[str, Record] = {}

  splits = {}
  for split, info in sorted(split_infos.items()):
    report = splits[split] = SplitReport(split)
    entries = sorted(info.shards, key=lambda entry: entry.file)
    report.num_shards = len(entries)
    if len(entries) != info.num_shards:
      problems.append(f'{contract.MANIFEST_FILE}: split {split}: {len(entries)} shards listed, '
                      f'num_shards is {info.num_shards}')
    per_shard = max(1, math.ceil(samples / max(len(entries), 1)))
    shard_samples, all_counted = [], True
    for entry in entries:
      name = entry.file
      path = _join(data_dir, name)
      if not tf.io.gfile.exists(path):
        problems.append(f'{name}: missing (listed in {contract.MANIFEST_FILE})')
        all_counted = False
        continue
      report.bytes += tf.io.gfile.stat(path).length
      shard_problems = []
      count, firsts = _read_shard(path, name, class_names, segmentation, verify, per_shard,
                                  shard_problems, report, wanted, images)
      shard_samples.append(firsts)
      expected = entry.num_examples
      broken = any(isinstance(p, Damage) for p in shard_problems)
      all_counted = all_counted and not shard_problems  # counts below would only echo these
      if verify and broken:
        shard_problems.append(f'{name}: {count} records read before the damage; the manifest '
                              f'says {expected}')
      elif verify and expected is not None and count != expected:
        shard_problems.append(f'{name}: {count} records, the manifest says {expected}')
      elif verify and not shard_problems:
        shard_problems.extend(_not_the_manifests(path, entry))
      problems.extend(_capped(shard_problems, name))
    report.samples = _round_robin(shard_samples, samples)
    listed_total = sum(entry.num_examples or 0 for entry in entries)
    if listed_total != info.num_examples:
      problems.append(f'{contract.MANIFEST_FILE}: split {split}: its shards list {listed_total} '
                      f'records, num_examples is {info.num_examples}')
    if not verify:
      report.num_examples = info.num_examples
      report.class_counts = collections.Counter(info.class_counts)
    elif all_counted:
      manifest_counts = {k: v for k, v in info.class_counts.items() if v}
      counted = {k: v for k, v in report.class_counts.items() if v}
      # segmentation: examples whose mask holds the class (none listed by older versions)
      listed = bool(manifest_counts) if segmentation else bool(class_names)
      if listed and manifest_counts != counted:
        diffs = [f'{c}: {counted.get(c, 0)} read, {manifest_counts.get(c, 0)} listed'
                 for c in sorted(set(counted) | set(manifest_counts))
                 if counted.get(c, 0) != manifest_counts.get(c, 0)]
        problems.append(f'{contract.MANIFEST_FILE}: split {split}: class counts differ '
                        f'({"; ".join(diffs)})')
  return Report(data_dir, class_names, splits, problems, verify, segmentation,
                duplicate_groups, flagged, images, manifest.input_dir)


def _not_the_manifests(path: str, entry: manifest_schema.ShardEntry) -> List[str]:
  """One problem line if the shard at ``path``, whose records all check out, is still not the
  file the manifest lists (``entry``): its size, or its SHA-256 where the manifest records one,
  differs (another data set's shard, the same photos written with other labels); else []."""
  from imagerecords import metadata  # pylint: disable=import-outside-toplevel
  shard = metadata.Shard(path, entry.num_examples, entry.bytes, entry.sha256)
  try:
    metadata.check_shards([shard], 'sha256' if entry.sha256 else True)
  except metadata.ShardMismatchError as error:
    return [f'{entry.file}: not the shard {contract.MANIFEST_FILE} lists: {error.reason}']
  return []


def _read_shard(path, name, class_names, segmentation, verify, num_samples, problems, report,
                wanted=frozenset(), images=None):
  """Walks one shard; returns (records counted, its first ``num_samples`` parsed records).

  With ``verify``, every record is checked and counted into ``report`` (``class_counts``:
  examples per class; for segmentation, examples whose mask holds the class); without, the
  walk stops after ``num_samples`` records and checks nothing, unless files of ``wanted`` are
  not in ``images`` yet. The records of ``wanted`` files go into ``images`` (by filename).
  """
  images = {} if images is None else images
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  firsts, count = [], 0
  with tf.io.gfile.GFile(path, 'rb') as raw:
    stream = gzip.GzipFile(fileobj=raw) if name.endswith(contract.GZIP_SUFFIX) else raw
    try:
      for frame in walk_frames(stream, name, problems, check_crc=verify):
        count += 1
        if frame.data is None:
          continue
        where = f'{name}: record {frame.index} (byte {frame.offset})'
        try:
          record = parse_record(frame.data)
        except ValueError as e:
          problems.append(f'{where}: {e}')
          continue
        if verify:
          problems.extend(f'{where} ({record.filename}): {p}'
                          for p in check_record(record, class_names, segmentation))
          report.num_examples += 1
          report.sizes.append((record.height, record.width))
          if record.label is not None and 0 <= record.label < len(class_names):
            report.class_counts[class_names[record.label]] += 1
          for class_id in sorted(record.mask_classes or ()):
            report.class_counts[contract.mask_class_name(class_id, class_names)] += 1
        if record.filename in wanted:
          images[record.filename] = record
        if len(firsts) < num_samples:
          firsts.append(record)
          if not verify:
            report.sizes.append((record.height, record.width))
        if (not verify and len(firsts) >= num_samples
            and len(images) >= len(wanted)):  # every file drawn is found
          break
    except (OSError, EOFError, gzip.BadGzipFile) as e:  # a damaged gzip stream
      problems.append(Damage(f'{name}: record {count}: unreadable compressed data ({e})'))
  return count, firsts


def _round_robin(lists: List[List[Record]], limit: int) -> List[Record]:
  """Up to ``limit`` items: the first of each list, then the second of each, and so on."""
  out = []
  for depth in range(max((len(items) for items in lists), default=0)):
    for items in lists:
      if depth < len(items) and len(out) < limit:
        out.append(items[depth])
  return out


def _capped(problems: List[str], name: str) -> List[str]:
  """The first MAX_PROBLEMS_PER_SHARD problems of shard ``name``, then a line counting the rest."""
  if len(problems) <= MAX_PROBLEMS_PER_SHARD:
    return problems
  rest = len(problems) - MAX_PROBLEMS_PER_SHARD
  return problems[:MAX_PROBLEMS_PER_SHARD] + [f'{name}: ... and {rest} more problems']


def _join(data_dir: str, name: str) -> str:
  """``data_dir/name`` for local paths and file-system URLs (``gs://bucket/dir``) alike."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return tf.io.gfile.join(data_dir, name)


# --- the table ----------------------------------------------------------------------------------


def format_table(report: Report) -> str:
  """The summary table: one row per split and a total row, columns aligned."""
  header = ('split', 'shards', 'examples', 'classes', 'bytes', 'mean size (h x w)')
  rows = []
  all_sizes, totals = [], [0, 0, 0]
  for split in report.splits.values():
    rows.append((split.name, str(split.num_shards), f'{split.num_examples:,}',
                 str(sum(1 for v in split.class_counts.values() if v)), _human_bytes(split.bytes),
                 _mean_size(split.sizes)))
    all_sizes += split.sizes
    totals[0] += split.num_shards
    totals[1] += split.num_examples
    totals[2] += split.bytes
  seen = {name for split in report.splits.values() for name, n in split.class_counts.items() if n}
  rows.append(('total', str(totals[0]), f'{totals[1]:,}', str(len(report.class_names) or len(seen)),
               _human_bytes(totals[2]), _mean_size(all_sizes)))
  widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
  lines = []
  for row in [header] + rows:
    cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:-1], widths[1:-1])]
    lines.append('  '.join(cells + [row[-1]]).rstrip())
  if report.segmentation:
    lines.append('(segmentation: classes are the mask class ids found, void 255 left out)')
  if not report.verified:
    lines.append('(not verified: counts from the manifest, sizes from the sampled records)')
  return '\n'.join(lines)


def _human_bytes(n: int) -> str:
  """``n`` bytes in decimal units: ``'999 B'``, ``'3.0 MB'``."""
  for unit in ('B', 'KB', 'MB', 'GB', 'TB'):
    if n < 1000 or unit == 'TB':
      return f'{n} B' if unit == 'B' else f'{n:.1f} {unit}'
    n /= 1000
  return ''  # unreachable


def _mean_size(sizes: List[Tuple[int, int]]) -> str:
  """``'<mean height> x <mean width>'`` of (height, width) pairs, rounded to pixels; ``'-'``."""
  if not sizes:
    return '-'
  height = sum(h for h, _ in sizes) / len(sizes)
  width = sum(w for _, w in sizes) / len(sizes)
  return f'{height:.0f} x {width:.0f}'


# --- command line -------------------------------------------------------------------------------


def quiet_tensorflow() -> None:
  """Imports TensorFlow and sets up its devices with this process's standard error (file
  descriptor 2) sent to a temporary file: its C++ start-up lines (CPU features, "Could not find
  cuda drivers", "failed call to cuInit" on a machine without a GPU) bypass
  ``TF_CPP_MIN_LOG_LEVEL`` and Python's logging. When the import fails, what TensorFlow wrote is
  shown and the error raised."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as sink:
    os.dup2(sink.fileno(), 2)
    try:
      import tensorflow as tf  # pylint: disable=import-outside-toplevel
      tf.config.list_physical_devices()  # the devices' set-up, where cuInit is called
    except BaseException:
      os.dup2(saved, 2)
      sink.seek(0)
      sys.stderr.write(sink.read().decode('utf-8', 'replace'))
      raise
    finally:
      os.dup2(saved, 2)
      os.close(saved)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the command line (see the module docstring); returns the exit status."""
  parser = argparse.ArgumentParser(
      prog='python -m imagerecords.inspect',
      description='Verify an imagerecords output directory and draw contact sheets and a '
                  'class-count chart of it.')
  parser.add_argument('data_dir', metavar='OUT', help='the output directory of the Beam job')
  parser.add_argument('--out', default=None, metavar='DIR',
                      help='draw contact sheets and charts as PNGs into DIR (default: none)')
  parser.add_argument('--no-verify', dest='verify', action='store_false',
                      help='read only the records the pictures need; check only _SUCCESS, the '
                           "manifest's status, labels.txt and that the shards exist")
  parser.add_argument('--samples', type=int, default=32,
                      help='images per contact sheet (default 32: 8 x 4)')
  parser.add_argument('--thumb_size', type=int, default=96,
                      help='side of a contact-sheet thumbnail, pixels (default 96)')
  args = parser.parse_args(argv)
  if args.samples < 1 or args.thumb_size < 16:
    parser.error('--samples must be at least 1 and --thumb_size at least 16')
  quiet_tensorflow()
  try:
    report = inspect(args.data_dir, verify=args.verify, samples=args.samples if args.out else 0)
  except NotAnOutputDirectory as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(format_table(report))
  if args.out:
    # Pillow, matplotlib: the inspect extra
    from imagerecords.pictures import render  # pylint: disable=import-outside-toplevel
    for path in render(report, args.out, args.thumb_size, args.samples):
      print(f'wrote {path}')
  else:
    print('(pictures of the images, classes, duplicates and flags: --out DIR)')
  if report.problems:
    print(f'{len(report.problems)} problem(s) in {args.data_dir}:')
    for problem in report.problems:
      print(problem)
    return 1
  print('OK' if report.verified else 'OK (not verified: --no-verify)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
