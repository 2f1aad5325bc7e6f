"""Find byte-identical source files, report them and the train/test leakage they cause, and, with
``--dedup=keep_first``, write one file of each group.

Two files are duplicates when the SHA-256 of their bytes is the same (the digest every record
carries as ``image/key/sha256``). Duplicates under different names are common in scraped data
(``catdog_filenames`` holds 20 such pairs); when the copies of one image land in two splits, the
evaluation set holds training images (leakage), which inflates every metric measured on it.

    --dedup=keep_all (default): every file is written; the groups come from the digests the
      conversion computes anyway, so finding them costs no extra read:

        ConvertedExample -> (sha256, (relpath, split)) -> GroupByKey -> DuplicateGroup (2+ files)

    --dedup=keep_first: the files are hashed BEFORE the conversion (a streaming read through
      FileSystems, no decoding), grouped by digest, and only the first file of each group by
      sorted relative path is converted; the others become failures at stage ``duplicate``
      naming the file kept (reported, not counted against --max_failure_fraction):

        LabeledImage -> + source_sha256 -> (sha256, LabeledImage) -> GroupByKey
          -> the first LabeledImage (carrying its digest, so the conversion does not hash again)
          -> Failure(stage='duplicate') for the others
          -> DuplicateGroup

Only small tuples of paths and names reach a GroupByKey (the local runner holds its contents in
memory); image bytes never do. A group whose files lie in two or more splits is flagged
``leaks``. With ``keep_first`` the output then holds the image in one split only (the split of
the first file by sorted path, which need not be the split a person would pick), so the
written records no longer leak, but the source data does and the group stays flagged: the
dropped copies' splits lost an image, and a hash split would have put it elsewhere had the
names differed.
"""

import hashlib
from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms import reads
from transforms.elements import (FAILURES_TAG, METRICS_NAMESPACE, STAGE_DUPLICATE, Failure,
                                 LabeledImage)

KEEP_ALL = 'keep_all'
KEEP_FIRST = 'keep_first'
DEDUP_MODES = (KEEP_ALL, KEEP_FIRST)
DEFAULT_DEDUP = KEEP_ALL
"""Writing every file is the default: the record count then equals the number of decodable
inputs (no silent change), and the report costs no extra read of the data."""

GROUPS_TAG = 'groups'
"""The tag of ``DropDuplicates``' output of DuplicateGroup."""

_CHUNK_BYTES = 1 << 20


def file_sha256(path: str) -> str:
  """Hex SHA-256 of the bytes of ``path`` (any filesystem Beam knows), read in 1 MiB chunks, so
  memory stays bounded whatever the file's size.

  Raises:
    UnreadableFile: the file is gone, denied or a folder.
    ReadFailed: transient errors persisted (``transforms.reads``).
  """
  def read_and_hash():  # from the first byte again on each attempt
    digest = hashlib.sha256()
    with FileSystems.open(path) as handle:
      while True:
        chunk = handle.read(_CHUNK_BYTES)
        if not chunk:
          break
        digest.update(chunk)
    return digest.hexdigest()
  return reads.with_retries(read_and_hash, path)


class DuplicateGroup(NamedTuple):
  """Files with byte-identical content.

  sha256: hex SHA-256 of the content.
  files: the relative paths ('/'-separated), sorted.
  splits: the split of each file, ``splits[i]`` that of ``files[i]``.
  kept: with ``--dedup=keep_first`` the one file written (``files[0]``); None when all are.
  """
  sha256: str
  files: Tuple[str, ...]
  splits: Tuple[str, ...]
  kept: Optional[str] = None

  @property
  def leaks(self) -> bool:
    """True when the copies lie in two or more splits (train/test leakage)."""
    return len(set(self.splits)) > 1

  def to_dict(self) -> dict:
    """The group as it appears in the manifest's ``duplicates.groups``."""
    entry = {'sha256': self.sha256, 'files': list(self.files), 'splits': list(self.splits),
             'leaks': self.leaks}
    if self.kept is not None:
      entry['kept'] = self.kept
    return entry


def duplicates_section(groups: Sequence[DuplicateGroup]) -> dict:
  """The manifest's ``duplicates`` section, groups sorted by their first file::

      {"num_groups": 20, "num_files": 40, "num_dropped": 0, "num_leaking_groups": 0,
       "groups": [{"sha256": "...", "files": ["train/cat.118.jpg", "train/cat.121.jpg"],
                   "splits": ["train", "train"], "leaks": false}, ...]}

  ``num_dropped``: files not written (``keep_first``); ``kept`` names the file written then.
  """
  groups = sorted(groups, key=lambda group: group.files)
  return {
      'num_groups': len(groups),
      'num_files': sum(len(group.files) for group in groups),
      'num_dropped': sum(len(group.files) - 1 for group in groups if group.kept is not None),
      'num_leaking_groups': sum(1 for group in groups if group.leaks),
      'groups': [group.to_dict() for group in groups],
  }


def _groups(count: int) -> str:
  return f'{count} group' + ('' if count == 1 else 's')


def summary_lines(section: Optional[dict], max_groups: int = 10) -> List[str]:
  """Lines of the console summary for the manifest's ``duplicates`` section (none when there
  are no duplicates): the counts, and the files and splits of each leaking group (the first
  ``max_groups``; the manifest lists them all)."""
  if not section or not section['num_groups']:
    return []
  dropped = section['num_dropped']
  written = (f'one of each written, {dropped} dropped (--dedup=keep_first)' if dropped
             else 'all written (--dedup=keep_all)')
  lines = [f'  {_groups(section["num_groups"])} of byte-identical files '
           f'({section["num_files"]} files): {written}; see manifest.json "duplicates"']
  leaking = [group for group in section['groups'] if group['leaks']]
  if leaking:
    lines.append(f'  LEAKAGE: {_groups(len(leaking))} of identical files in two or more '
                 'splits:')
    for group in leaking[:max_groups]:
      copies = ' = '.join(f'{name} ({split})' for name, split in zip(group['files'],
                                                                     group['splits']))
      kept = f'  [kept {group["kept"]}]' if group.get('kept') else ''
      lines.append(f'    {copies}{kept}')
    if len(leaking) > max_groups:
      lines.append(f'    ... {len(leaking) - max_groups} more: see manifest.json "duplicates"')
  return lines


class _HashSourceFn(beam.DoFn):
  """LabeledImage -> the same with ``source_sha256`` set (left None when the file cannot be
  read: the conversion reads it again and reports the failure with its reason)."""

  def __init__(self):
    self._hashed = beam.metrics.Metrics.counter(METRICS_NAMESPACE, 'dedup_files_hashed')

  def process(self, image: LabeledImage) -> Iterable[LabeledImage]:
    try:  # a transient error is retried, then fails the run (reads.ReadFailed)
      digest = file_sha256(image.path)
    except reads.UnreadableFile:  # reported with its reason by the conversion's own read
      yield image
      return
    self._hashed.inc()
    yield image._replace(source_sha256=digest)


class _KeepFirstFn(beam.DoFn):
  """(key, [LabeledImage]) -> the first image by relative path; Failure(stage='duplicate') for
  the others; a DuplicateGroup on ``groups`` when there are others."""

  def __init__(self):
    self._dropped = beam.metrics.Metrics.counter(METRICS_NAMESPACE, 'duplicates_dropped')

  def process(self, element) -> Iterable:
    _, images = element
    images = sorted(images, key=lambda image: image.relpath)
    first = images[0]
    yield first
    if len(images) == 1 or first.source_sha256 is None:
      return
    for image in images[1:]:
      self._dropped.inc()
      yield beam.pvalue.TaggedOutput(FAILURES_TAG, Failure(
          image.path, image.relpath, STAGE_DUPLICATE,
          f'byte-identical to {first.relpath} (SHA-256 {first.source_sha256[:16]}...), '
          'which is written instead (--dedup=keep_first)'))
    yield beam.pvalue.TaggedOutput(GROUPS_TAG, DuplicateGroup(
        first.source_sha256, tuple(image.relpath for image in images),
        tuple(image.split for image in images), kept=first.relpath))


class DropDuplicates(beam.PTransform):
  """PCollection[LabeledImage] -> a dict of PCollections:

  * ``images``: PCollection[LabeledImage], one per group of byte-identical files, each carrying
    its ``source_sha256``; unreadable files pass through unhashed;
  * ``failures``: PCollection[Failure] at stage ``duplicate``, one per file not written;
  * ``groups``: PCollection[DuplicateGroup] of the groups found.

  With ``mode='keep_all'`` nothing is read: ``images`` is the input, the other two are empty
  (the groups are then found after the conversion, by ``ReportDuplicates``).
  """

  def __init__(self, mode: str = DEFAULT_DEDUP):
    super().__init__()
    if mode not in DEDUP_MODES:
      raise ValueError(f'--dedup must be one of {", ".join(DEDUP_MODES)}; got {mode!r}')
    self._mode = mode

  def expand(self, images):
    if self._mode == KEEP_ALL:
      return {'images': images,
              FAILURES_TAG: images.pipeline | 'no dropped files' >> beam.Create([]),
              GROUPS_TAG: images.pipeline | 'no groups' >> beam.Create([])}
    kept = (
        images
        | 'hash source bytes' >> beam.ParDo(_HashSourceFn())
        # (sha256, LabeledImage); an unhashed (unreadable) file is a group of its own
        | 'key by sha256' >> beam.Map(
            lambda image: (image.source_sha256 or 'unread:' + image.relpath, image))
        | 'group identical files' >> beam.GroupByKey()
        | 'keep the first by path' >> beam.ParDo(_KeepFirstFn()).with_outputs(
            FAILURES_TAG, GROUPS_TAG, main='images'))
    return {'images': kept.images, FAILURES_TAG: kept[FAILURES_TAG],
            GROUPS_TAG: kept[GROUPS_TAG]}


def _group_of(element) -> Iterable[DuplicateGroup]:
  sha256, copies = element
  copies = sorted(copies)
  if len(copies) > 1:
    yield DuplicateGroup(sha256, tuple(c[0] for c in copies), tuple(c[1] for c in copies))


class ReportDuplicates(beam.PTransform):
  """PCollection[ConvertedExample] -> a one-element PCollection[dict]: the manifest's
  ``duplicates`` section (see ``duplicates_section``).

  The groups among the written examples (``keep_all``: by their ``source_sha256``; only
  (sha256, relpath, split) tuples are grouped) are joined with ``dropped_groups``, the
  DuplicateGroup PCollection of ``DropDuplicates`` (``keep_first``; empty otherwise).
  """

  def __init__(self, dropped_groups):
    super().__init__()
    self._dropped_groups = dropped_groups

  def expand(self, examples):
    written_groups = (
        examples
        | 'key by source sha256' >> beam.Map(
            lambda example: (example.source_sha256, (example.relpath, example.split)))
        | 'group identical sources' >> beam.GroupByKey()
        | 'groups of two or more' >> beam.FlatMap(_group_of))
    return (
        (written_groups, self._dropped_groups)
        | 'all groups' >> beam.Flatten()
        | 'collect groups' >> beam.combiners.ToList()
        | 'manifest section' >> beam.Map(duplicates_section))
