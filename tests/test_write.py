"""The shard writer: fixed shard counts and names, every record once, balanced and mixed
shards, GZIP, no staging files left, and DALI index files (transforms/outputs/write.py)."""

import array
import collections
import hashlib
import io
import itertools
import json
import pathlib
import random
import shutil
import subprocess
import sys

import pytest
import tensorflow as tf
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from imagerecords import contract
from imagerecords import framing
from imagerecords.framing import frame_record, record_spans

from tests.helpers import REPO, SAMPLES, convert, manifest_of, read_records, shared_data
from transforms.inputs.splits import shuffle_key
from transforms.files.working_folders import WRITER_FOLDER
from transforms.outputs import staging as staging_files
from transforms.outputs.staging import StagingFile
from transforms.outputs.write import ShardRange, copy_shard, plan_shards


def _shard_and_staging_names(out: pathlib.Path):
  """The names in ``out`` of shard files, their index files and the writer's staging folder:
  what the writer leaves there (other files are other steps' business)."""
  return {p.name for p in out.iterdir()
          if p.name == WRITER_FOLDER or p.name.endswith(contract.DALI_INDEX_SUFFIX)
          or contract.parse_shard_file_name(p.name)}


def _sample_relpaths():
  return {p.relative_to(SAMPLES).as_posix() for p in SAMPLES.rglob('*.jpg')}


def _filenames(records):
  return [record[contract.FILENAME].decode() for record in records]


def _split_folder_input(root: pathlib.Path) -> pathlib.Path:
  """The samples under train/<class>/, and a val/ split folder holding no image."""
  for path in SAMPLES.rglob('*.jpg'):
    copy = root / 'train' / path.relative_to(SAMPLES)
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, copy)
  (root / 'val').mkdir()
  (root / 'val' / 'notes.txt').write_text('not an image\n')
  return root


def _staging_files(names_per_file):
  """StagingFiles of records named ``names_per_file`` (one list of names per file), each frame
  100 bytes long, keyed by the seed-0 shuffle_key of the name; and {(path, offset): name}."""
  files, where = [], {}
  for number, names in enumerate(names_per_file):
    path = f'f{number}'
    offsets = array.array('q', [100 * i for i in range(len(names))])
    files.append(StagingFile(path, offsets, b''.join(shuffle_key(n, 0) for n in names)))
    where.update({(path, offset): name for offset, name in zip(offsets, names)})
  return files, where


def _dealt(plans, files, where):
  """The names of each shard of ``plans``, in the order the copy writes them."""
  offsets = {file.path: list(file.offsets) for file in files}
  shards = []
  for ranges in plans:
    names = []
    for run in ranges:
      first = offsets[run.path].index(run.offset)
      assert run.num_records >= 1 and first + run.num_records <= len(offsets[run.path])
      names += [where[run.path, offset]
                for offset in offsets[run.path][first:first + run.num_records]]
    shards.append(names)
  return shards


@pytest.mark.parametrize('total,num_shards', [(5, 1), (5, 2), (11, 4), (2, 5), (0, 3), (33, 7)])
def test_plan_deals_records_in_key_order_whatever_files_they_came_in(total, num_shards):
  names = [f'class{i % 3}/img{i}.jpg' for i in range(total)]
  by_key = sorted(names, key=lambda name: shuffle_key(name, 0))
  shuffled = random.Random(total).sample(names, total)
  layouts = [
      [names],  # one file, in listing order
      [shuffled[i::3] for i in range(3)] + [[]],  # records dealt over 3 files, one empty file
      [by_key[:total // 2], by_key[total // 2:]],  # two sorted runs
  ]
  dealt = []
  for layout in layouts:
    files, where = _staging_files(layout)
    shards = _dealt(plan_shards(random.Random(1).sample(files, len(files)), num_shards), files,
                    where)
    assert len(shards) == num_shards
    assert [name for shard in shards for name in shard] == by_key  # every record once
    sizes = [len(shard) for shard in shards]
    assert max(sizes) - min(sizes) <= 1
    dealt.append(shards)
  assert dealt[0] == dealt[1] == dealt[2]


def test_plan_reads_a_sorted_run_in_one_range_per_shard():
  names = [f'img{i}.jpg' for i in range(40)]
  by_key = sorted(names, key=lambda name: shuffle_key(name, 0))
  # two runs over disjoint stretches of the keys, as ShuffleOrder's buckets reach the writer
  files, _ = _staging_files([by_key[20:], by_key[:20]])
  plans = plan_shards(files, 4)
  assert [[(run.path, run.num_records) for run in ranges] for ranges in plans] == [
      [('f1', 10)], [('f1', 10)], [('f0', 10)], [('f0', 10)]]


def _photo_records(path: pathlib.Path, count: int) -> list:
  """Writes ``count`` sample photos' bytes as the records of a TFRecord file at ``path``;
  returns the records."""
  records = [photo.read_bytes() for photo in sorted(SAMPLES.rglob('*.jpg'))[:count]]
  path.write_bytes(b''.join(frame_record(record) for record in records))
  return records


def _records_of(path: pathlib.Path) -> list:
  """The records of the uncompressed TFRecord file ``path``."""
  with open(path, 'rb') as stream:
    return list(framing.read_records(stream))


def test_a_keys_file_names_records_of_a_file_elsewhere_skipping_the_rest(tmp_path):
  """A night's reused records: a keys file in the staging folder lists some records of a
  previous shard (frames 0, 1, 3, 4 and 6 of 7), with their frame numbers; the plan reads only
  consecutive frames as one range, and the shard holds exactly those records in key order.
  Deleting the staging folder leaves the shard alone."""
  previous = tmp_path / 'previous' / 'train-00000-of-00001.tfrecord'
  previous.parent.mkdir()
  records = _photo_records(previous, 7)
  with open(previous, 'rb') as stream:
    offsets = [span.offset for span in record_spans(stream)]
  kept = [0, 1, 3, 4, 6]
  # keys in file order, as a previous shard holds its records: its keys ascend
  keys = sorted(shuffle_key(f'photo{i}', 0) for i in range(7))
  staging = tmp_path / 'out' / WRITER_FOLDER / 'train'
  staged = StagingFile(str(previous), array.array('q', [offsets[i] for i in kept]),
                       b''.join(keys[i] for i in kept), array.array('q', kept),
                       staging_files.file_version(str(previous)))
  keys_path = staging_files.write_staging_keys(staged, str(staging / 'reused-a.keys'))
  assert staging_files.read_staging_keys(keys_path) == staged
  (plan,) = plan_shards([staged], 1)
  assert [(run.offset, run.num_records) for run in plan] == [
      (offsets[0], 2), (offsets[3], 2), (offsets[6], 1)]
  assert {run.version for run in plan} == {staged.version}
  shard = tmp_path / 'out' / 'train-00000-of-00001.tfrecord'
  assert copy_shard(plan, str(shard)).num_records == 5
  assert _records_of(shard) == [records[i] for i in kept]
  shutil.rmtree(tmp_path / 'out' / WRITER_FOLDER)
  assert _records_of(previous) == records


def test_a_previous_shard_that_changed_since_it_was_verified_fails_the_copy(tmp_path):
  previous = tmp_path / 'run [1]?' / 'train-00000-of-00001.tfrecord'  # glob characters too
  previous.parent.mkdir()
  _photo_records(previous, 3)
  version = staging_files.file_version(str(previous))
  _photo_records(previous, 2)  # rewritten: another size
  ranges = [ShardRange(str(previous), 0, 1, version)]
  with pytest.raises(staging_files.StagingFileChanged, match='changed after its records were verified'):
    copy_shard(ranges, str(tmp_path / 'shard.tfrecord'))


@pytest.mark.parametrize('compressed', [False, True], ids=['plain', 'gzip'])
def test_the_summary_taken_while_writing_is_what_reading_the_shard_back_gives(
    tmp_path, compressed):
  """copy_shard counts the records and digests the bytes as stored (after GZIP) while it
  writes; the manifest takes them from there, so they must equal a read-back of the file: a
  shard of real photo records, and an empty one."""
  from transforms.outputs.write import summarize_shard  # pylint: disable=import-outside-toplevel
  staging = tmp_path / 'records.tfrecord'
  _photo_records(staging, 7)
  with open(staging, 'rb') as stream:
    offsets = [span.offset for span in record_spans(stream)]
  suffix = '.tfrecord' + (contract.GZIP_SUFFIX if compressed else '')
  for name, ranges, count in (
      ('full', [ShardRange(str(staging), offsets[5], 2), ShardRange(str(staging), 0, 4)], 6),
      ('empty', [], 0)):
    shard = tmp_path / (name + suffix)
    summary = copy_shard(ranges, str(shard), compressed=compressed)
    stored = shard.read_bytes()
    assert summary == (str(shard), count, hashlib.sha256(stored).hexdigest(), len(stored))
    assert summarize_shard(str(shard)) == summary
    if compressed:  # the bytes Beam's own GZIP writer gives the same frames
      with open(staging, 'rb') as stream:
        frames = {frame.offset: frame.header + frame.body for frame in framing.read_frames(stream)}
      ordered = sorted(frames)
      with FileSystems.create(str(tmp_path / 'beam.gz'),
                              compression_type=CompressionTypes.GZIP) as beam_writer:
        for run in ranges:
          first = ordered.index(run.offset)
          for offset in ordered[first:first + run.num_records]:
            beam_writer.write(frames[offset])
      assert (tmp_path / 'beam.gz').read_bytes() == stored


def test_a_shard_cut_short_is_not_taken_for_written_and_is_written_again(tmp_path):
  """A copy that fails part-way leaves nothing under the shard's final name (locally it was
  being written in the writer's folder); a shard under its final name that holds fewer records
  than its plan (an upload s3:// completed on an error) is written again when the step runs
  again, not taken for complete."""
  from transforms.outputs import write  # pylint: disable=import-outside-toplevel
  staging = tmp_path / WRITER_FOLDER / 'train' / 'records-a.tfrecord'
  staging.parent.mkdir(parents=True)
  records = _photo_records(staging, 5)
  final = tmp_path / 'train-00000-of-00001.tfrecord'
  with pytest.raises(framing.FramingError, match='5 records from byte 0, where the plan says 6'):
    write.write_complete_shard([ShardRange(str(staging), 0, 6)], str(final),
                               str(tmp_path / WRITER_FOLDER))
  assert not final.exists()
  final.write_bytes(b''.join(frame_record(record) for record in records[:2]))  # cut short
  summary = write._write_shard((0, [ShardRange(str(staging), 0, 5)]), str(tmp_path), 'train',  # pylint: disable=protected-access
                               1, False, False, None)
  assert summary.num_records == 5 and _records_of(final) == records
  final.write_bytes(final.read_bytes()[:-10])  # cut inside a record: no framing to count
  assert write._write_shard((0, [ShardRange(str(staging), 0, 5)]), str(tmp_path), 'train',  # pylint: disable=protected-access
                            1, False, False, None) == summary


def test_plan_refuses_keys_that_do_not_match_the_offsets():
  with pytest.raises(ValueError, match='f0: 16 bytes of keys for 2 records'):
    plan_shards([StagingFile('f0', array.array('q', [0, 100]), bytes(16))], 1)


def test_default_run_fixed_names_every_record_once_balanced_mixed_no_staging(sample_dataset):
  # sample_dataset: the README's command (multi-process local runner), train=4, validation=2.
  out = pathlib.Path(sample_dataset)
  expected_shards = {contract.shard_file_name(split, i, n)
                     for split, n in (('train', 4), ('validation', 2)) for i in range(n)}
  assert _shard_and_staging_names(out) == expected_shards  # no staging folder left
  seen = collections.Counter()
  for split in ('train', 'validation'):
    shards = read_records(out, split)
    counts = [len(records) for records in shards.values()]
    assert max(counts) - min(counts) <= 1, f'{split}: unbalanced shards {counts}'
    in_order = [name for file in sorted(shards) for name in _filenames(shards[file])]
    seen.update(in_order)
    # 48 images make one shuffle bucket: shard after shard, the records are in the seeded
    # shuffle's order (not the listing's class-by-class order)
    assert in_order == sorted(in_order, key=lambda name: shuffle_key(name, 0))
    assert in_order != sorted(in_order)
  assert seen == collections.Counter(_sample_relpaths())


@pytest.mark.slow
def test_dali_index_and_empty_split_then_gzip_over_it(tmp_path):
  source = _split_folder_input(tmp_path / 'in')
  out = tmp_path / 'out'
  assert convert(source, out, '--num_shards=train=3,val=2', '--image_size=32',
                 '--resize_mode=center_crop', '--dali_index') == 0
  manifest = manifest_of(out)
  assert manifest['splits']['val']['num_examples'] == 0
  for split, count in (('train', 3), ('val', 2)):
    for i in range(count):
      shard = out / contract.shard_file_name(split, i, count)
      with open(shard, 'rb') as stream:
        spans = [(s.offset, s.frame_bytes) for s in record_spans(stream)]
      index = (out / (shard.name + contract.DALI_INDEX_SUFFIX)).read_text()
      assert index == ''.join(f'{offset} {size}\n' for offset, size in spans)
      if split == 'val':
        assert shard.stat().st_size == 0  # a split without examples still has its shards
      else:
        assert len(spans) == len(_sample_relpaths()) // 3  # 48 records in 3 shards
        assert spans[-1][0] + spans[-1][1] == shard.stat().st_size
  assert len(_shard_and_staging_names(out)) == 2 * (3 + 2)  # shards and their index files

  # GZIP over the same folder: --overwrite also removes the earlier run's index files.
  assert convert(SAMPLES, out, '--num_shards=3', '--image_size=32',
                 '--resize_mode=center_crop', '--compression=gzip', '--overwrite') == 0
  shards = {contract.shard_file_name(split, i, 3, compressed=True)
            for split in ('train', 'validation') for i in range(3)}
  assert _shard_and_staging_names(out) == shards  # no .idx, no staging folder left
  seen = collections.Counter()
  for name in shards:
    for raw in tf.data.TFRecordDataset(str(out / name), compression_type='GZIP'):
      feature = tf.train.Example.FromString(raw.numpy()).features.feature
      seen[feature[contract.FILENAME].bytes_list.value[0].decode()] += 1
  assert seen == collections.Counter(_sample_relpaths())


def _shard_digests(out: pathlib.Path) -> dict:
  """{shard or DALI index file name: SHA-256 of its bytes}."""
  return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()
          if p.name.endswith(contract.DALI_INDEX_SUFFIX) or contract.parse_shard_file_name(p.name)}


def _records_per_split(out: pathlib.Path) -> dict:
  return {split: sorted(name for records in read_records(out, split).values()
                        for name in _filenames(records))
          for split in ('train', 'val')}


@pytest.mark.slow
def test_same_input_options_and_seed_write_byte_identical_shards_on_any_runner(tmp_path):
  # 398 photos make 2 shuffle buckets. One process (one bundle: the records reach the writer
  # bucket by bucket) against two worker processes (several bundles, in the order the workers
  # finish them); a different seed gives other shard files holding the same records.
  photos = shared_data('hymenoptera')
  flags = ['--image_size=24', '--resize_mode=center_crop', '--num_shards=train=3,val=2',
           '--image_checks=false', '--dali_index']
  runs = {
      'one process': convert(photos, tmp_path / 'one process', *flags),
      'two workers': convert(photos, tmp_path / 'two workers', *flags,
                             '--direct_running_mode=multi_processing',
                             '--direct_num_workers=2', in_memory=False),
      'seed 7': convert(photos, tmp_path / 'seed 7', *flags, '--shuffle_seed=7'),
  }
  assert runs == dict.fromkeys(runs, 0)
  digests = {name: _shard_digests(tmp_path / name) for name in runs}
  assert len(digests['one process']) == 2 * (3 + 2)  # shards and their DALI index files
  assert digests['one process'] == digests['two workers']
  assert digests['seed 7'].keys() == digests['one process'].keys()
  assert not set(digests['seed 7'].values()) & set(digests['one process'].values())
  records = {name: _records_per_split(tmp_path / name) for name in runs}
  assert records['one process'] == records['seed 7']
  for split, count in (('train', 3), ('val', 2)):
    shards = read_records(tmp_path / 'seed 7', split)
    sizes = [len(shards[contract.shard_file_name(split, i, count)]) for i in range(count)]
    assert max(sizes) - min(sizes) <= 1
    in_order = [name for i in range(count)
                for name in _filenames(shards[contract.shard_file_name(split, i, count)])]
    assert in_order == sorted(in_order, key=lambda name: shuffle_key(name, 7))


def test_dali_index_refused_with_gzip(tmp_path):
  out = tmp_path / 'out'
  assert convert(SAMPLES, out, '--dali_index', '--compression=gzip') == 2
  assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_memory_bench_measures_two_sizes_and_its_exit_status_is_the_verdict(tmp_path):
  report_path = tmp_path / 'memory.json'
  result = subprocess.run(
      [sys.executable, str(REPO / 'bench' / 'memory.py'), f'--data={SAMPLES}', '--base_repeat=1',
       '--sizes=1,2', '--image_size=32', '--num_shards=2', '--flags=--stats=false',
       f'--json={report_path}'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  report = json.loads(report_path.read_text())
  small, large = report['rows']
  assert small['images'] == len(_sample_relpaths())
  assert large['images'] == 2 * small['images']
  assert large['output_mib'] > small['output_mib'] > 0
  for row in (small, large):
    assert 0 < row['peak_pss_mib'] <= row['peak_rss_mib']
  growth = large['peak_pss_mib'] / small['peak_pss_mib'] - 1
  assert large['pss_growth'] == pytest.approx(growth)
  verdicts = report['verdicts']
  assert verdicts == {
      'peak PSS under 2 GiB at every size': large['peak_pss_mib'] < 2048 and small[
          'peak_pss_mib'] < 2048,
      'growth 1x -> 2x under 25%': growth < 0.25}
  # the exit status is the verdict: 0 when every goal is met, 1 when one is not (a failed run
  # would be another status, with its error)
  assert result.returncode == (0 if all(verdicts.values()) else 1), (
      result.stdout[-3000:] + result.stderr[-3000:])
  assert '| 1x |' in result.stdout and '| 2x |' in result.stdout


def test_shard_plan_bench_reads_sorted_runs_in_few_ranges():
  result = subprocess.run(
      [sys.executable, str(REPO / 'bench' / 'shard_plan.py'), '--records=2560', '--files=4',
       '--num_shards=8'], cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
  lines = dict(line.split(': ', 1) for line in result.stdout.splitlines())
  assert set(lines) == {'key-sorted runs', 'no order'}
  ranges = {name: int(text.split(' ShardRanges')[0].rsplit(', ', 1)[1].replace(',', ''))
            for name, text in lines.items()}
  # 10 runs of 256 and 8 shards: at most one range per run and one more per shard
  assert 8 <= ranges['key-sorted runs'] <= 10 + 8
  assert ranges['no order'] > 2560 // 2  # most records in no order are reads of their own


def test_copy_reads_ranges_in_plan_order_and_gzip_shards_are_reproducible(tmp_path):
  # a staging file of the sample photos' bytes as records; ranges out of file order (seeks)
  photos = sorted(SAMPLES.rglob('*.jpg'))[:6]
  staging = tmp_path / 'records.tfrecord'
  with tf.io.TFRecordWriter(str(staging)) as writer:
    for photo in photos:
      writer.write(photo.read_bytes())
  with open(staging, 'rb') as stream:
    offsets = [span.offset for span in record_spans(stream)]
  ranges = [ShardRange(str(staging), offsets[4], 2), ShardRange(str(staging), offsets[0], 3),
            ShardRange(str(staging), offsets[3], 1)]
  digests = set()
  for name in ('a.tfrecord.gz', 'b.tfrecord.gz'):
    assert copy_shard(ranges, str(tmp_path / name), compressed=True).num_records == 6
    digests.add(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    written = [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / name), 'GZIP')]
    assert written == [photos[i].read_bytes() for i in (4, 5, 0, 1, 2, 3)]
    assert (tmp_path / name).read_bytes()[4:8] == bytes(4)  # the GZIP header's MTIME: none
  assert len(digests) == 1



def test_a_framed_record_is_what_tensorflow_writes(tmp_path):
  """framing.frame_record, the job's writer of the TFRecord framing, gives TensorFlow's own
  bytes for real records of every size (an empty one too)."""
  records = [b''] + [photo.read_bytes() for photo in sorted(SAMPLES.rglob('*.jpg'))[:5]]
  path = tmp_path / 'tf.tfrecord'
  with tf.io.TFRecordWriter(str(path)) as writer:
    for record in records:
      writer.write(record)
  assert b''.join(frame_record(record) for record in records) == path.read_bytes()


def test_each_write_step_is_safe_to_run_again_after_it_completed(tmp_path):
  """Flink runs a finished step again when a later task of its region fails: the keys beside a
  staging file read back as written; dealing after the staging files are gone yields empty
  plans when every shard exists (and fails when one does not); a shard that exists is not
  written again."""
  from transforms.outputs import write  # pylint: disable=import-outside-toplevel
  photos = sorted(SAMPLES.rglob('*.jpg'))[:6]
  staging = tmp_path / WRITER_FOLDER / 'train'
  staging.mkdir(parents=True)
  path = staging / 'records-a.tfrecord'
  records = [photo.read_bytes() for photo in photos]
  path.write_bytes(b''.join(frame_record(record) for record in records))
  offsets = array.array('q', itertools.accumulate([0] + [len(frame_record(r)) for r in records[:-1]]))
  keys = b''.join(shuffle_key(photo.name, 0) for photo in photos)
  keys_path = staging_files.write_staging_keys(StagingFile(str(path), offsets, keys))
  assert keys_path == f'{path}.keys'
  assert staging_files.read_staging_keys(keys_path) == StagingFile(str(path), offsets, keys)
  plans = list(write._deal([keys_path], 2, str(tmp_path), 'train', False))  # pylint: disable=protected-access
  summaries = [write._write_shard(plan, str(tmp_path), 'train', 2, False, False, None)  # pylint: disable=protected-access
               for plan in plans]
  paths = [summary.path for summary in summaries]
  written = [pathlib.Path(p).read_bytes() for p in paths]
  assert sum(len(list(record_spans(io.BytesIO(data)))) for data in written) == 6
  shutil.rmtree(tmp_path / WRITER_FOLDER)  # the staging files are deleted once all is written
  again = list(write._deal([keys_path], 2, str(tmp_path), 'train', False))  # pylint: disable=protected-access
  assert again == [(0, []), (1, [])]
  # not written again: read back, the same summaries as the writer's
  assert [write._write_shard(plan, str(tmp_path), 'train', 2, False, False, None)  # pylint: disable=protected-access
          for plan in again] == summaries
  assert [pathlib.Path(p).read_bytes() for p in paths] == written
  pathlib.Path(paths[1]).unlink()
  with pytest.raises(FileNotFoundError):
    list(write._deal([keys_path], 2, str(tmp_path), 'train', False))  # pylint: disable=protected-access
