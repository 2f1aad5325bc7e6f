"""Smoke tests of the benchmarks in bench/: each script runs on a few real photos, prints its
tables and writes the same figures as JSON. No speed is asserted here (bench/ measures speed;
docs/benchmarks.md holds the figures): the checks are that every row ran on the images it was
given and that the targets are all reported.
"""

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO, SAMPLES, copy_photos, shared_data


def _run(script, *args):
  result = subprocess.run([sys.executable, str(REPO / 'bench' / script), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return result.stdout


@pytest.mark.slow
def test_writer_startup_comparison_times_whole_commands_on_the_same_photos(tmp_path):
  report_path = tmp_path / 'startup.json'
  stdout = _run('writer.py', f'--data={shared_data("hymenoptera")}', '--limit=4', '--startup',
                '--startup_times=2', '--startup_rounds=1', '--image_size=32',
                f'--json={report_path}')
  startup = json.loads(report_path.read_text())['startup']
  assert startup['images'] == {'job, defaults': 8, 'tf.data converter': 8,
                               'README command (48 samples)': 48}
  for name, seconds in startup['seconds'].items():
    assert len(seconds) == 1 and seconds[0] > 0 and startup['cpu_seconds'][name][0] > 0, name
  assert startup['median_ratio'] == startup['job_over_tf_data'][0]
  assert 'job defaults / tf.data converter' in stdout and 'README command' in stdout


@pytest.mark.slow
def test_startup_phases_bench_times_every_phase_of_one_run(tmp_path):
  report_path = tmp_path / 'phases.json'
  stdout = _run('startup_phases.py', f'--data={shared_data("hymenoptera")}', '--limit=4',
                '--times=2', '--skip_samples', '--image_size=32', f'--json={report_path}', '--',
                '--direct_running_mode=multi_processing')
  [run] = json.loads(report_path.read_text())['runs']
  phases = dict(run['phases'])
  # every phase was seen, the workers' start too: the wrapped functions are still the job's
  assert all(seconds is not None and seconds >= 0 for seconds in phases.values()), phases
  assert phases['launch to first image'] < phases['whole run']
  assert len(run['workers']) >= 1 and run['fused_stages'] > 10
  assert 'graph built' in stdout and 'spawn -> first image s' in stdout


@pytest.mark.slow
def test_writer_bench_runs_every_row_on_the_same_photos(tmp_path):
  data = shared_data('hymenoptera')
  report_path = tmp_path / 'writer.json'
  stdout = _run('writer.py', f'--data={data}', '--limit=8', '--sizes=1,2', '--min_seconds=0',
                '--dct_repeats=1', '--in_process', '--skip_original', '--skip_variants',
                '--job_flags=--stats=false', f'--json={report_path}')
  report = json.loads(report_path.read_text())
  rows = {row['row']: row for row in report['rows']}
  # The repeated data set has distinct names: the job wrote every copy, none merged.
  assert rows['pipeline --stats=false 1x (end to end)']['images'] == 8
  assert rows['pipeline --stats=false 2x (end to end)']['images'] == 16
  assert rows['tight loop (codec.convert, Pool)']['images'] == 16
  # the conversion step's work on the same 16 files; --stats=false: no pixel sums
  same = rows["same-work loop (the conversion step's work, Pool)"]
  assert same['images'] == 16 and same['cpu_ms_per_image'] > 0
  assert same['note'].startswith('2x files; 0 with pixel sums'), same['note']
  assert rows['tf.data converter']['images'] == 16
  assert rows['Pillow loop, 1 core']['images'] >= 8
  # The codec rows take the photos up to 640 px of the 8 (one of them is larger).
  for name in ('codec.convert, 1 core', 'libjpeg-turbo floor, 1 core'):
    assert 1 <= rows[name]['images'] and rows[name]['images_per_s'] > 0, name
  for row in report['rows']:
    assert row['row'] in stdout
  # The large JPEGs of messy/ that libjpeg-turbo decodes are timed both ways.
  timed = [d for d in report['dct'] if 'error' not in d]
  assert timed and all(d['dct_ms'] > 0 and d['full_ms'] > 0 for d in timed)
  assert all(min(d['width'], d['height']) >= 512 for d in timed)
  assert len(report['targets']) == 14
  assert '(pipeline - tight loop) / (same-work loop - tight loop)' in stdout
  assert '| target | measured | wanted | verdict |' in stdout


@pytest.mark.slow
def test_writer_same_work_loop_does_the_jobs_work_on_the_same_photos(tmp_path):
  # 8 sample photos in class folders, no split folders: the job splits them by path hash. The
  # job in one process (its records are the same on every runner: the fingerprints show it)
  photos = copy_photos(tmp_path / 'photos', per_folder=4)
  report_path = tmp_path / 'same_work.json'
  stdout = _run('writer.py', '--same_work', f'--data={photos}', '--sizes=1,2',
                '--same_work_rounds=1', '--image_size=64', '--in_process',
                '--job_flags=--direct_running_mode=in_memory', f'--json={report_path}')
  section = json.loads(report_path.read_text())['same_work']
  runs = {run['row'] for run in section['runs']}
  # the job at each size; each loop (same-work, DoFn, tight) twice in the round
  assert len(section['runs']) == 8 and len(runs) == 5
  for run in section['runs']:
    # the job wrote every photo at each size; each loop converted the 2x set's 16 files
    expected = 8 if run['row'] == 'round 1: job 1x (end to end)' else 16
    assert run['images'] == expected and run['cpu_ms_per_image'] > 0, run['row']
  [figures] = section['rounds']
  # both loops built the job's very records (every split's fingerprint) and summed the pixels
  # of the training split's images only, as the job's --stats does
  assert figures['same_as_job']['same'] and section['same_as_job']
  assert set(figures['same_as_job']['job']['fingerprints']) == {'train', 'validation'}
  assert 0 < figures['pixel_sums'] == section['training_images'] < 16
  assert figures['same_cpu_ms'] > 0 and figures['dofn_cpu_ms'] > 0 and figures['tight_cpu_ms'] > 0
  assert "The same-work loop and the DoFn loop built the job's records byte for byte" in stdout
  assert '| (job - tight loop) / (same-work loop - tight loop), CPU ms per image' in stdout
  verdicts = [line.rsplit('|', 2)[1].strip() for line in stdout.splitlines()
              if line.startswith('| (job - tight loop) / (same-work loop - tight loop)')]
  assert len(verdicts) == 1 and verdicts[0] in ('met', 'NOT met', 'not measured'), verdicts


@pytest.mark.slow
def test_reader_bench_runs_every_row(sample_dataset, tmp_path):
  report_path = tmp_path / 'reader.json'
  stdout = _run('reader.py', f'--records={sample_dataset}', f'--data={SAMPLES}', '--limit=8',
                '--batch_size=4', '--image_size=32', '--warmup=1', '--batches=2', '--in_process',
                f'--json={report_path}')
  report = json.loads(report_path.read_text())
  rows = {row['row']: row for row in report['rows']}
  for name in ('load, float32', 'load, uint8', 'load, float32, full decode', 'limit, float32',
               'limit, uint8', 'original JPEGs, float32'):
    assert rows[name]['images'] == 8 and rows[name]['images_per_s'] > 0, name
    assert name in stdout
  # The job writes TFDS metadata and the test environment installs tensorflow_datasets.
  assert report['tfds'] == 'measured' and rows['TFDS, float32']['images'] == 8
  assert rows['load, uint8']['dtype'] == 'uint8'
  assert rows['load, float32']['dtype'] == 'float32'
  assert '| target | measured | wanted | verdict |' in stdout


@pytest.mark.slow
def test_profile_bench_splits_the_cost_per_image(tmp_path):
  data = shared_data('hymenoptera')
  report_path = tmp_path / 'profile.json'
  # 56 extra images: cProfile times the wall clock, and on a busy CI machine a run descheduled
  # inside a decode adds milliseconds to it. With 8 extra images (1,2) that noise once made the
  # image work come out negative; 56 images cost 1 s more and outweigh a few time slices.
  stdout = _run('profile_pipeline.py', f'--data={data}', '--limit=8', '--sizes=1,8',
                f'--json={report_path}', '--', '--stats=false')
  report = json.loads(report_path.read_text())
  assert report['images'] == [8, 64]
  assert report['ms_per_image']['transforms/image/codec.py (image work)'] > 0
  # The decode is most of an image's cost, so it tops this project's functions even when the
  # smaller ones (the DoFns' generators) drown in the noise.
  assert any(name.startswith('transforms/image/codec.py')
             for name in report['project_cumulative_ms_per_image'])
  assert '| this project\'s function | cumulative ms per image |' in stdout


@pytest.mark.slow
def test_million_bench_runs_the_loop_and_the_job_at_two_sizes(tmp_path):
  shared_data('tiny_imagenet_val')
  report_path = tmp_path / 'million.json'
  stdout = _run('million.py', '--copies=1,2', '--photos=8', '--workers=1',
                f'--work={tmp_path}', f'--json={report_path}')
  report = json.loads(report_path.read_text())
  rows = {row['row']: row for row in report['rows']}
  assert rows['plain loop']['images'] == 16
  assert rows['job, 8 files']['images'] == 8 and rows['job, 16 files']['images'] == 16
  for row in report['rows']:
    assert row['images_per_s'] > 0 and row['peak_pss_mib'] > 0 and row['cpu_s'] > 0, row['row']
  assert len(report['targets']) == 3
  assert '| target | measured | wanted | verdict |' in stdout
  # where the time goes, by step: Beam's state sampler attributes time in 200 ms samples, so a
  # step of a few milliseconds (8 small photos) may show none; the runs together show some,
  # and the table prints every step that showed any
  jobs = [row for row in report['rows'] if row['row'].startswith('job')]
  assert sum(sum(row['step_msecs'].values()) for row in jobs) > 0
  assert '| step: ms per image |' in stdout
  assert all(f'| {step} |' in stdout for row in jobs for step in row['step_msecs'])


@pytest.mark.slow
def test_convert_step_bench_times_both_checkouts_pass_by_pass(tmp_path):
  shared_data('tiny_imagenet_val')
  report_path = tmp_path / 'convert_step.json'
  stdout = _run('convert_step.py', f'--vs={REPO}', '--images=10', '--passes=2', '--parts',
                f'--json={report_path}')
  report = json.loads(report_path.read_text())
  assert report['outputs'] == {'this checkout': 10, '--vs': 10}  # an example per photo
  for name in ('this checkout', '--vs'):
    assert len(report['passes'][name]) == 2 and min(report['passes'][name]) > 0
    assert set(report['parts'][name]) == set(report['parts']['this checkout'])
    assert all(value > 0 for value in report['parts'][name].values())
  assert report['ratio'] > 0 and 'this checkout / --vs' in stdout
  assert 'example.build_example' in report['parts']['--vs']


@pytest.mark.slow
def test_reuse_check_bench_times_every_check_on_real_records():
  stdout = _run('reuse_check.py', '--limit=8', '--repeat=1', '--image_size=64',
                '--side_input_copies=2')
  assert 'records of hymenoptera at 64 px' in stdout
  for step in ('read frames, length checksums', 'data checksum', 'image/filename', 'SHA-256',
               'ReuseEntry per file (before)', 'packed entries (now)'):
    assert f'| {step} |' in stdout, step


def test_near_duplicates_bench_prints_the_precision_recall_table(tmp_path):
  report_path = tmp_path / 'near.json'
  stdout = _run('near_duplicates.py', '--parts=precision,measures', '--limit=3',
                '--data=catdog_filenames,messy', f'--json={report_path}')
  precision = json.loads(report_path.read_text())['precision']
  # 3 catdog photos with their 9 copies each, 3 messy files as they are
  assert precision['images'] == 3 * 10 + 3 and precision['known_copy_pairs'] == 3 * 9
  # a row per distance, a column for the hash alone and one per least similarity
  assert len(precision['table']) == 6 * 6
  for result in precision['table'].values():
    assert 0 <= result['recall'] <= 1 and 0 <= result['precision'] <= 1
  assert set(precision['similarity_to_its_photo']) == {
      'jpeg q50', 'jpeg q95', 'webp', 'png', 'half size', 'crop 2%', 'crop 5%', 'brighter',
      'darker'}
  assert '**' in stdout and 'hash alone' in stdout and 'defaults, every pair' in stdout
  assert 'luma 8x8, chroma 4x4 (the job)' in stdout


@pytest.mark.slow
def test_worker_profile_bench_puts_the_workers_samples_to_the_jobs_parts(tmp_path):
  # the 48 samples once, with worker processes (below 1,000 files the job converts in its own)
  report_path = tmp_path / 'workers.json'
  stdout = _run('worker_profile.py', f'--data={SAMPLES}', '--times=1', '--rate=100',
                '--top=8', f'--json={report_path}', '--',
                '--direct_running_mode=multi_processing')
  report = json.loads(report_path.read_text())
  assert report['images'] == 48 and report['cpu_s'] > 0
  assert report['samples']['worker'] > 0 and report['samples']['launcher'] > 0
  # the workers decoded, resized and encoded the photos: the codec is one of their parts
  codec = report['parts']['codec: decode, resize, encode']  # codec.py and resizing.py
  assert codec['samples'] > 0 and codec['ms_per_image'] > 0
  assert sum(part['samples'] for part in report['parts'].values()) == report['samples']['worker']
  assert "| part of the SDK workers' CPU | samples | share | CPU ms per image (est.) |" in stdout
  assert '| innermost function (workers) | samples | share |' in stdout
