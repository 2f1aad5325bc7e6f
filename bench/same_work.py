"""The loops the Beam job is measured against, and issue 26's comparison of the job with the
same-work loop; run by bench/writer.py (its loop rows, and all of ``--same_work``).

    .venv/bin/python bench/writer.py --same_work [--data=../shared/data/hymenoptera]
        [--sizes=10,41] [--same_work_rounds=2] [--workers=2] [--image_size=256]
        [--job_flags=...] [--in_process] [--json=PATH]

Each loop runs over the same files in a ``multiprocessing.Pool(WORKERS)`` (forked; Beam not
imported by the pool), pool start-up and a warm-up excluded, with the job's image settings (read
from the job's options, ``--job_flags`` included):

* ``tight loop``: ``codec.convert`` of the file's bytes: decode, resize, encode, the limit of
  this machine.
* ``same-work loop``: what the job's conversion step (``_ConvertImageFn.process`` of
  ``transforms/image/convert.py``) does per image, with the job's own functions, as a plain loop
  (:func:`row_same_work` lists the calls). Splits, labels and class ids are the job's own steps'
  (:func:`job_images`). Not in it: Beam's per-element work and the job's other steps
  (listing, shuffle, shard writing, the analysis of the examples). Each split's fingerprint of
  its records and the pixels summed are computed afterwards, untimed: equal to the job's
  manifest, they show it built the job's very records.
* ``DoFn loop``: the job's conversion DoFn itself, its ``process`` called in the Pool: no
  runner, no other step.

Issue 26's target: (job steady state - tight loop) / (same-work loop - tight loop), per image, at
most 1.5: the job's cost of the work beyond decode, resize and encode against the plain loop's
cost of the same work; by CPU ms per image, and by wall ms per image per core where the job's
slope and every loop run had their cores (:data:`WALL_SHARE`).

``--same_work`` runs only that comparison (:func:`same_work_comparison`): the job at the two
``--sizes``, and on the larger size's files the three loops, alternated in ``--same_work_rounds``
rounds (job small, same-work, DoFn, tight, job large, tight, DoFn, same-work); the ratios per
round and their medians, where the job's time per image goes (the tight loop; the work beyond
it; the DoFn's own code beyond the work; the runner and the other steps), and a check that the
loops' records are the job's (split fingerprints, pixels summed).
"""

import dataclasses
import json
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

import common

SAME_WORK_TARGET = 1.5
"""Issue 26: the per-image work beyond decode, resize and encode may cost the job at most this
many times what it costs the same-work loop."""

WALL_SHARE = 0.9
"""A round's wall-time ratios count when the job's slope and each loop run kept at least this
share of their cores busy (CPU time over wall time and cores); on a shared machine often none
does."""

TIGHT_ROW = 'tight loop (codec.convert, Pool)'
SAME_WORK_ROW = "same-work loop (the conversion step's work, Pool)"
DOFN_ROW = "DoFn loop (the job's conversion DoFn, Pool)"


# --- what the job does per image, by its own options and rules ---------------------------------

def job_setup(job_flags, image_size):
  """The job's per-image settings with ``job_flags`` (``--image_size`` from ``image_size``), read
  by the job's own option parsing: (ImageSpec, the pixel sums on (``--stats`` of any kind), the
  measures on (``--image_checks``), ``--splits``, ``--label_source``)."""
  # pylint: disable=import-outside-toplevel
  from apache_beam.options.pipeline_options import PipelineOptions
  from pipeline import options as opts
  options = PipelineOptions([*job_flags, f'--image_size={image_size}']).view_as(
      opts.ConvertOptions)
  return (opts.image_spec(options), options.stats != opts.STATS_OFF, options.image_checks,
          options.splits, options.label_source)


def job_images(files, root, splits_flag='auto', label_source='directory'):
  """The job's view of each of ``files`` (under ``root``), given by the job's own label and
  split steps (``transforms.inputs``' ``_AssignLabel`` and ``_AssignSplit``, with ``--splits``
  resolved against ``root``'s split folders as the job resolves it): (a list of (path, relpath,
  label or None, class id or None, split, whether it is the training split, whose images the
  job's ``--stats`` sums), the training split's name or None). Class ids are the sorted class
  names' indices, as the job numbers them without ``--label_map``. Raises ValueError for a file
  the job would report as a failure (no label, outside the split folders), and for a label
  file (``--label_source=file:``), which these steps do not read.
  """
  # pylint: disable=import-outside-toplevel
  from pipeline import options as opts
  from transforms.analysis.statistics import training_split
  from transforms.elements import SourceFile
  from transforms.inputs.labels import _AssignLabel
  from transforms.inputs.splits import _AssignSplit, probe_split_folders
  if label_source.startswith('file:'):
    raise ValueError('the same-work loop takes labels from folders or file names, not from '
                     f'a label file ({label_source})')
  folders, fractions = opts.resolve_splits(splits_flag, probe_split_folders(str(root)))
  assign_label, assign_split = _AssignLabel(label_source, folders), _AssignSplit(folders,
                                                                                fractions)
  assign_label.setup()
  views = []
  for path in files:
    source = SourceFile(str(path), pathlib.Path(path).relative_to(root).as_posix())
    [labeled] = assign_label.process(source)
    [image] = assign_split.process(labeled) if isinstance(labeled, tuple) else [labeled]
    if not hasattr(image, 'split'):  # a TaggedOutput: the job would report this file
      raise ValueError(f'{source.relpath}: {image.value.reason}')
    views.append(image)
  training = training_split(list(folders) or [name for name, _ in fractions])
  class_ids = {name: i for i, name in enumerate(sorted({v.label for v in views} - {None}))}
  return [(v.path, v.relpath, v.label, class_ids.get(v.label), v.split, v.split == training)
          for v in views], training


def loop_inputs(job_flags, image_size, files, root):
  """What the loops take for ``files`` (under ``root``) from the job's options: (the images of
  :func:`job_images`, the training split, ``work``: the ImageSpec's fields, the pixel sums on,
  the measures on, as JSON for a row's child process)."""
  spec, stats, measure, splits_flag, label_source = job_setup(job_flags, image_size)
  images, training = job_images(files, root, splits_flag, label_source)
  return images, training, {'spec': dataclasses.asdict(spec), 'stats': stats,
                            'measure': measure}


def _spec_of(work):
  """The ImageSpec of :func:`loop_inputs`' ``work``."""
  from transforms.image import codec  # pylint: disable=import-outside-toplevel
  return codec.ImageSpec(**dict(work['spec'], background=tuple(work['spec']['background'])))


# --- the loops, each a Pool over the same files ------------------------------------------------

_POOL_WORK = None  # the tight and same-work loops' (ImageSpec, pixel sums on, measures on)


def _init_work(work):
  global _POOL_WORK  # pylint: disable=global-statement
  _POOL_WORK = (_spec_of(work), work['stats'], work['measure'])


def _pool_map(fn, initializer, initargs, items, workers):
  """``fn`` over ``items`` in a Pool(workers) made with ``initializer(*initargs)``: (its
  results, wall seconds); pool start-up and a warm-up (imports, caches) excluded."""
  import multiprocessing  # pylint: disable=import-outside-toplevel
  with multiprocessing.get_context('fork').Pool(
      workers, initializer=initializer, initargs=initargs) as pool:
    pool.map(fn, items[:4 * workers], chunksize=1)
    start = time.perf_counter()
    results = pool.map(fn, items, chunksize=8)
    return results, time.perf_counter() - start


def _convert_file(path):
  """Pool worker: read the file and run the job's codec on it; (output bytes or -1 for a failed
  image, CPU seconds this process spent on it)."""
  from transforms.image import codec  # pylint: disable=import-outside-toplevel
  cpu = time.process_time()
  with open(path, 'rb') as handle:
    data = handle.read()
  try:
    size = len(codec.convert(data, _POOL_WORK[0]).data)
  except codec.ImageError:
    size = -1
  return size, time.process_time() - cpu


def row_tight_loop(files, workers, work):
  """The tight loop: ``codec.convert`` with ``work``'s spec (:func:`loop_inputs`) over
  ``files``. The row's dict: images, wall seconds, cores, CPU seconds of the pool's workers."""
  results, wall = _pool_map(_convert_file, _init_work, (work,), files, workers)
  return {'images': sum(size >= 0 for size, _ in results), 'seconds': wall, 'cores': workers,
          'cpu_seconds': sum(cpu for _, cpu in results)}


def _same_work_file(image):
  """Pool worker: the conversion step's work on one image (one of :func:`job_images`), in the
  order ``_ConvertImageFn.process`` does it, with its functions. (record bytes or -1 for a
  failed image, the record's SHA-256, the pixels summed (0 without pixel sums), CPU seconds
  this process spent on it)."""
  # pylint: disable=import-outside-toplevel
  import hashlib
  from transforms.image import codec, image_measures
  from transforms.image.example import build_example
  from transforms.image.pixel_sums import pixel_sums, stored_pixels
  spec, stats, measure = _POOL_WORK
  path, relpath, label, class_id, _, training = image
  cpu = time.process_time()
  with open(path, 'rb') as handle:  # the job: reads.read_bytes, through Beam's FileSystems
    data = handle.read()
  try:
    converted = codec.convert_keeping_pixels(data, spec)  # decode, resize, encode
  except codec.ImageError:
    return -1, b'', 0, time.process_time() - cpu
  sums = None
  if stats and training:  # --stats: the stored image decoded as the reader decodes it, summed
    sums = pixel_sums(stored_pixels(converted.encoded, spec.channels,
                                    original=spec.image_format == 'original'))
  if measure and converted.pixels is not None:  # --image_checks: pHash and quality measures
    tuple(image_measures.measure(converted.pixels, converted.source_size))
  source_sha256 = hashlib.sha256(data).hexdigest()  # the contract's image/key/sha256
  serialized = build_example(converted.encoded, relpath, source_sha256, label, class_id)
  digest = hashlib.sha256(serialized).digest()  # the record's, for the split's fingerprint
  return (len(serialized), digest, sums.num_pixels if sums else 0,
          time.process_time() - cpu)


def _records_row(fn, initializer, initargs, images, workers):
  """``fn`` (a pool worker returning (record bytes or -1, record SHA-256, pixels summed, CPU
  seconds)) over ``images`` (of :func:`job_images`); the row's dict: images, wall seconds,
  cores, CPU seconds of the pool's workers, and, untimed, the images whose pixels were summed,
  the pixels, the record bytes and each split's fingerprint of its records."""
  # pylint: disable=import-outside-toplevel
  from transforms.analysis.statistics import fingerprint_hex
  images = [tuple(image) for image in images]  # JSON gave lists
  results, wall = _pool_map(fn, initializer, initargs, images, workers)
  # What the job's manifest says of these records and sums: each split's fingerprint and the
  # training split's pixels summed. Equal to the job's, they show that the loop built the job's
  # very records and summed the same images.
  totals = {}
  for image, (size, digest, _, _) in zip(images, results):
    if size >= 0:
      totals[image[4]] = totals.get(image[4], 0) + int.from_bytes(digest, 'big')
  done = [result for result in results if result[0] >= 0]
  return {'images': len(done), 'seconds': wall, 'cores': workers,
          'cpu_seconds': sum(result[3] for result in results),
          'pixel_sums': sum(1 for result in done if result[2]),
          'num_pixels': sum(result[2] for result in done),
          'record_bytes': sum(result[0] for result in done),
          'fingerprints': {split: fingerprint_hex(total) for split, total in totals.items()}}


def row_same_work(images, workers, work):
  """The same-work loop: the job's conversion step's per-image work over ``images`` (of
  :func:`job_images`), with ``work`` (of :func:`loop_inputs`, from the parent: the pool imports
  no Beam). The row's dict as :func:`_records_row`'s.

  What each image gets (:func:`_same_work_file`) is ``_ConvertImageFn.process`` at the job's
  settings, call for call, in its order:

  * read the file's bytes (the job: ``reads.read_bytes``, through Beam's ``FileSystems`` and a
    retry wrapper: that layer is the job's, not the work's, so the loop uses ``open``);
  * ``codec.convert_keeping_pixels(data, spec)``: decode, resize, encode, keeping the pixels;
  * with ``--stats`` (on by default), for the training split's images only (the job sums no
    other split's): ``pixel_sums.pixel_sums(pixel_sums.stored_pixels(encoded, channels))``, the
    stored JPEG decoded as TensorFlow decodes it and summed;
  * with ``--image_checks`` (on by default): ``image_measures.measure(pixels, source_size)``,
    the perceptual hash and quality measures of the stored pixels;
  * ``hashlib.sha256`` of the source's bytes (the job's default ``--dedup=keep_all`` does not
    hash before the conversion, so the step does);
  * ``example.build_example(encoded, relpath, source_sha256, label, class_id)``: the
    serialized ``tf.train.Example``, by ``imagerecords.records``;
  * ``hashlib.sha256`` of the record (the split's fingerprint).

  What it leaves out is what is not per-image work of the step: Beam's counters, progress file
  and side inputs, the element it yields, and the job's other steps.
  """
  return _records_row(_same_work_file, _init_work, (work,), images, workers)


_POOL_DOFN = None  # the DoFn loop's (_ConvertImageFn set up, class names, total), per worker


def _init_dofn(work, training, class_names, total, progress_dir):
  global _POOL_DOFN  # pylint: disable=global-statement
  from transforms.image.convert import _ConvertImageFn  # pylint: disable=import-outside-toplevel
  fn = _ConvertImageFn(_spec_of(work), training if work['stats'] else None, work['measure'],
                       progress_dir)
  fn.setup()
  fn.start_bundle()
  _POOL_DOFN = (fn, class_names, total)


def _dofn_file(image):
  """Pool worker: the job's conversion DoFn on one image (``process``, as the runner calls it,
  its outputs taken); the same tuple as :func:`_same_work_file`'s."""
  from transforms.elements import LabeledImage  # pylint: disable=import-outside-toplevel
  fn, class_names, total = _POOL_DOFN
  path, relpath, label, _, split, _ = image
  element = LabeledImage(path, relpath, label, split)  # what the shuffle hands the step
  cpu = time.process_time()
  outputs = list(fn.process(element, class_names, total))
  cpu = time.process_time() - cpu
  example = outputs[0]
  if not hasattr(example, 'serialized'):  # a TaggedOutput: the image failed
    return -1, b'', 0, cpu
  return (len(example.serialized), example.record_sha256,
          example.pixel_sums.num_pixels if example.pixel_sums else 0, cpu)


def row_dofn_loop(images, workers, work, training):
  """The DoFn loop: the job's conversion DoFn (``_ConvertImageFn``) itself, set up as the job's
  local run sets it up (the training split summed with ``--stats``, the measures with
  ``--image_checks``, a progress folder), its ``process`` called on each of ``images`` (of
  :func:`job_images`): no runner, no other step. Against the same-work loop it is the DoFn's
  own code beyond the work (the read through Beam's ``FileSystems``, counters, the progress
  file, the element it yields); against the job, the runner and the job's other steps. The
  row's dict as :func:`_records_row`'s."""
  class_names = sorted({image[2] for image in images} - {None})
  progress_dir = tempfile.mkdtemp(prefix='bench_dofn_progress_')
  try:
    return _records_row(_dofn_file, _init_dofn,
                        (work, training, class_names, len(images), progress_dir), images,
                        workers)
  finally:
    shutil.rmtree(progress_dir, ignore_errors=True)


ROWS = {'tight_loop': row_tight_loop, 'same_work': row_same_work, 'dofn_loop': row_dofn_loop}
"""The loops as rows of :class:`common.Rows`."""


# --- the job against the loops (issue 26) ------------------------------------------------------

def beyond_codec(job, tight, same):
  """Issue 26's ratio: (job - tight loop) / (same-work loop - tight loop), from three costs per
  image in one unit: what the job spends beyond decode, resize and encode over what the plain
  loop spends on the same work. None when a cost is missing or the loop's extra is not positive
  (the loops' difference drowned in the noise)."""
  if job is None or tight is None or same is None or same <= tight:
    return None
  return (job - tight) / (same - tight)


def at_most_verdict(value, target):
  """'met' or 'NOT met' for ``value <= target``; 'not measured' for None."""
  if value is None:
    return 'not measured'
  return 'met' if value <= target else 'NOT met'


def _median(values):
  """The median of ``values`` that are not None; None when none is."""
  values = [value for value in values if value is not None]
  return statistics.median(values) if values else None


def _progress(run):
  """One line on stderr per finished run, as it ends: a long comparison's figures so far."""
  print(f"{time.strftime('%H:%M:%S')} {run['row']}: {run['images']} images, "
        f"{run['seconds']:.1f} s, {run['cpu_ms_per_image']:.3f} CPU ms/img, load "
        f'{os.getloadavg()[0]:.1f}', file=sys.stderr, flush=True)


def _same_as_job(results, manifest):
  """Whether each loop run built the job's records and summed its pixels: every split's
  fingerprint and the statistics' pixel count as the job's ``manifest`` (of the same files) has
  them; a dict of the figures compared and ``same``."""
  job = {'fingerprints': {name: split.get('fingerprint')
                          for name, split in manifest['splits'].items()},
         'num_pixels': (manifest.get('statistics') or {}).get('num_pixels', 0)}
  loops = [{'fingerprints': r['fingerprints'], 'num_pixels': r['num_pixels']} for r in results]
  return {'job': job, 'loops': loops, 'same': all(loop == job for loop in loops)}


# the comparison's loops: key -> (row name, note)
_LOOPS = {
    'same_work': (SAME_WORK_ROW, 'the work beyond the codec as a plain loop does it'),
    'dofn_loop': (DOFN_ROW, "the job's conversion DoFn, no runner"),
    'tight_loop': (TIGHT_ROW, 'decode, resize, encode only'),
}
# one round: each loop runs once beside each of the job's two runs, in mirrored order
_ROUND = ('job small', 'same_work', 'dofn_loop', 'tight_loop', 'job large', 'tight_loop',
          'dofn_loop', 'same_work')
_COSTS = {'job': None, 'dofn': 'dofn_loop', 'same': 'same_work', 'tight': 'tight_loop'}
"""The four costs per image of a round (and the loop each comes from), in each unit."""


def _round_figures(number, job, loops, manifests, workers):
  """One round's figures from the job's (images, wall s, CPU s) at each size (``job``), each
  loop's runs (``loops``) and the job's manifests: the job's steady-state cost per image, each
  loop's, the ratios, the cores busy, the job's steps along the slope."""
  (small, (n1, _, _)), (large, (n2, _, _)) = sorted(job.items())
  rate, startup, cpu_ms, load_changed = common.steady_state(list(job.values()))
  figures = {'round': number, 'job_images': [n1, n2],
             'loop_images': {key: [r['images'] for r in loops[key]] for key in _LOOPS},
             'pixel_sums': loops['same_work'][0]['pixel_sums'],
             'same_as_job': _same_as_job(loops['same_work'] + loops['dofn_loop'],
                                         manifests[large]),
             'job_wall_ms': 1000 * workers / rate if rate else None, 'job_cpu_ms': cpu_ms,
             'job_startup_s': startup, 'job_wall_unreliable': not rate or load_changed}
  for cost, key in _COSTS.items():
    if key:
      results = loops[key]
      images = sum(r['images'] for r in results)
      figures[f'{cost}_wall_ms'] = 1000 * workers * sum(r['seconds'] for r in results) / images
      figures[f'{cost}_cpu_ms'] = 1000 * sum(r['cpu_seconds'] for r in results) / images
  if figures['job_wall_unreliable']:
    figures['job_wall_ms'] = None
  for unit in ('wall', 'cpu'):
    job_ms, same_ms = figures[f'job_{unit}_ms'], figures[f'same_{unit}_ms']
    figures[f'job_over_same_{unit}'] = job_ms / same_ms if job_ms is not None else None
    figures[f'beyond_codec_{unit}'] = beyond_codec(job_ms, figures[f'tight_{unit}_ms'], same_ms)
  # Wall ms per image per core is a cost only for a run that had its cores: one that kept 1 of
  # its 2 busy (other jobs held the rest) counts its images twice as dear, and the difference of
  # differences above magnifies that. So the round's wall ratios count only when the job's
  # slope and every loop run kept at least WALL_SHARE of their cores busy; the CPU ratios do
  # not depend on it. The job's share is its slope's, as its cost is: each of its whole
  # commands also holds the start-up, on one core, which no load is to blame for.
  busy = [r['cpu_seconds'] / r['seconds'] / r['cores'] for key in _LOOPS for r in loops[key]]
  if rate:
    busy.append(cpu_ms * rate / 1000 / workers)
  figures['cores_busy_share'] = [min(busy), max(busy)]
  if min(busy) < WALL_SHARE:
    figures['job_over_same_wall'] = figures['beyond_codec_wall'] = None
  # the job's steps along the slope: each top-level step's milliseconds (the manifest's
  # step_msecs, elapsed time as Beam's state sampler attributes it) per extra image
  small_steps, large_steps = (manifests[t].get('step_msecs') or {} for t in (small, large))
  figures['step_ms'] = ({step: (large_steps.get(step, 0) - small_steps.get(step, 0)) / (n2 - n1)
                         for step in set(small_steps) | set(large_steps)}
                        if n2 > n1 and large_steps else {})
  return figures


def same_work_comparison(photos, root, sizes, workers, image_size, job_flags, rounds, work,
                         rows_runner, run_job):
  """The job at the two ``sizes`` (repetitions of ``photos``, under ``root``) against the three
  loops on the larger size's files, in ``rounds`` rounds; in each the runs alternate
  (``_ROUND``), so that each loop runs beside each of the job's runs and all meet the same load.
  ``work``: a scratch folder; ``rows_runner``: a :class:`common.Rows` with :data:`ROWS`;
  ``run_job``: bench/writer.py's ``run_pipeline``.

  Per round: the job's steady-state cost per image (the slope between its two sizes: wall ms
  per image per core, and CPU ms per image of the command and every process it started), each
  loop's (its two runs together; CPU of the pool's workers), the ratio job / same-work loop and
  issue 26's (job - tight loop) / (same-work loop - tight loop). Returns the report's
  ``same_work`` section (every run, the rounds, the medians over the rounds)."""
  small, large = sizes
  base = {times: work / f'data_{times}x' for times in sizes}
  links = {times: common.repeat_tree(photos, root, times, base[times]) for times in sizes}
  images, training, loop_work = loop_inputs(job_flags, image_size, links[large], base[large])
  loop_args = {
      'same_work': {'images': images, 'workers': workers, 'work': loop_work},
      'dofn_loop': {'images': images, 'workers': workers, 'work': loop_work,
                    'training': training},
      'tight_loop': {'files': [image[0] for image in images], 'workers': workers,
                     'work': loop_work},
  }
  runs, rounds_out = [], []
  for number in range(1, rounds + 1):
    job, manifests, loops = {}, {}, {key: [] for key in _LOOPS}
    for step in _ROUND:
      if step.startswith('job'):
        times = small if step == 'job small' else large
        output = work / f'out_{times}x'
        wall, peak, written, cpu = run_job(base[times], output, workers, image_size, job_flags)
        job[times] = (written, wall, cpu)
        manifests[times] = json.loads((output / 'manifest.json').read_text())
        runs.append(common.rate_row(
            f'round {number}: job {times}x (end to end)',
            {'images': written, 'seconds': wall, 'cpu_seconds': cpu, 'cores': workers,
             'peak_rss_mib': peak}, 'whole command, start-up included'))
      else:
        result = rows_runner.run(step, loop_args[step])
        loops[step].append(result)
        name, note = _LOOPS[step]
        if 'pixel_sums' in result:
          note += f"; {result['pixel_sums']} with pixel sums ({training})"
        runs.append(common.rate_row(f'round {number}: {name}', result, note))
      _progress(runs[-1])
    rounds_out.append(_round_figures(number, job, loops, manifests, workers))

  keys = [f'{cost}_{unit}_ms' for unit in ('wall', 'cpu') for cost in _COSTS] + [
      'job_over_same_wall', 'job_over_same_cpu', 'beyond_codec_wall', 'beyond_codec_cpu',
      'job_startup_s']
  return {'photos': len(photos), 'sizes': list(sizes), 'workers': workers,
          'image_size': image_size, 'job_flags': list(job_flags), 'rounds': rounds_out,
          'loop_images': len(images), 'training_split': training,
          'training_images': sum(1 for image in images if image[5]),
          'runs': runs, 'median': {key: _median([r[key] for r in rounds_out]) for key in keys},
          'same_as_job': all(r['same_as_job']['same'] for r in rounds_out)}


def print_same_work(section):
  """The comparison's runs, its rounds, where the job's time goes; returns the targets table's
  rows (for ``common.finish_report``)."""
  small, large = section['sizes']
  print(f"{section['photos']} photos repeated {small}x and {large}x for the job; the loops on "
        f"the {large}x files ({section['loop_images']}, {section['training_images']} of them in "
        f"the training split '{section['training_split']}', whose images the job's --stats "
        f"sums); {section['workers']} workers, {section['image_size']} px shorter side; job "
        f"flags: {' '.join(section['job_flags']) or 'none (its defaults)'}; "
        f"rounds: {len(section['rounds'])}\n")
  print(common.rate_table(section['runs'], extra=('note',)))
  print()
  print("Per round: the job's steady state (the slope between its two sizes) and the loops "
        "(their two runs together), per image\n")

  def wall(r, key):
    if r['job_wall_unreliable']:
      return 'unreliable (load changed)'
    low = r['cores_busy_share'][0]
    return r[key] if low >= WALL_SHARE else f'unreliable ({low:.0%} of the cores)'

  print(common.format_table(
      ('round', 'job ms/img/core', 'DoFn loop', 'same-work loop', 'tight loop', 'job CPU ms/img',
       'DoFn loop', 'same-work loop', 'tight loop', 'cores busy / cores (job: its slope)',
       'job / same, wall',
       'job / same, CPU', '(job - tight) / (same - tight), wall',
       '(job - tight) / (same - tight), CPU'),
      [(r['round'], r['job_wall_ms'] if not r['job_wall_unreliable'] else 'unreliable',
        r['dofn_wall_ms'], r['same_wall_ms'], r['tight_wall_ms'], r['job_cpu_ms'],
        r['dofn_cpu_ms'], r['same_cpu_ms'], r['tight_cpu_ms'],
        '{:.2f}-{:.2f}'.format(*r['cores_busy_share']), wall(r, 'job_over_same_wall'),
        r['job_over_same_cpu'], wall(r, 'beyond_codec_wall'), r['beyond_codec_cpu'])
       for r in section['rounds']]))
  print()
  job = section['rounds'][-1]['same_as_job']['job']
  figures = (', '.join(f'{name} {value[:12]}...' for name, value in
                       sorted(job['fingerprints'].items()))
             + f"; {job['num_pixels']:,} pixels summed for the statistics")
  if section['same_as_job']:
    print(f"The same-work loop and the DoFn loop built the job's records byte for byte and "
          f"summed the pixels of the same images (every run: the job's split fingerprints and "
          f"pixel count for the {large}x files, {figures})\n")
  else:
    print(f"NOT the same work: a loop run's split fingerprints or pixel count differ from the "
          f"job's ({figures}; the JSON report has every run's)\n")
  median = section['median']
  rounds = len(section['rounds'])
  names = ('decode, resize, encode (tight loop)',
           'the work beyond them, as a plain loop does it (same-work - tight)',
           "the conversion DoFn's own code beyond that work (DoFn loop - same-work)",
           "the runner and the job's other steps (job - DoFn loop)",
           'the job, steady state (the slope)')

  def parts(r):
    job = r['job_cpu_ms']
    return (r['tight_cpu_ms'], r['same_cpu_ms'] - r['tight_cpu_ms'],
            r['dofn_cpu_ms'] - r['same_cpu_ms'], None if job is None else job - r['dofn_cpu_ms'],
            job)

  by_round = [parts(r) for r in section['rounds']]
  print("Where the job's time per image goes: CPU ms per image, each round's costs taken apart "
        '(the parts of a round add up to its job; their medians need not)\n')
  print(common.format_table(
      ('part', *(f'round {r["round"]}' for r in section['rounds']), 'median'),
      [(name, *(p[i] for p in by_round), _median([p[i] for p in by_round]))
       for i, name in enumerate(names)]))
  print()
  steps = sorted({step for r in section['rounds'] for step in r['step_ms']},
                 key=lambda step: -(_median([r['step_ms'].get(step, 0)
                                            for r in section['rounds']]) or 0))
  if steps:
    rest = [r['job_cpu_ms'] - sum(r['step_ms'].values())
            if r['job_cpu_ms'] is not None and r['step_ms'] else None for r in section['rounds']]
    medians = {step: _median([r['step_ms'].get(step, 0.0) for r in section['rounds']])
               for step in steps}
    total = sum(value for value in medians.values() if value > 0)
    print("The job's steps along the slope: the manifest's step_msecs per extra image (elapsed "
          'ms as Beam\'s state sampler attributes them, summed over the workers: CPU time only '
          'when the cores were free; on shared cores the steps\' times include waiting for '
          'one, and the last row, the runner\'s own work, turns negative)\n')
    print(common.format_table(
        ('step: ms per image', *(f'round {r["round"]}' for r in section['rounds']), 'median',
         'share of the steps'),
        [(step, *(r['step_ms'].get(step, 0.0) for r in section['rounds']), medians[step],
          f'{100 * medians[step] / total:.1f}%' if total else '-') for step in steps]
        + [('(the slope\'s CPU less the steps: the runner\'s own work)', *rest, _median(rest),
            '-')]))
    print()
  return [
      (f'job steady state / same-work loop, CPU ms per image (median of {rounds} rounds)',
       median['job_over_same_cpu'], '-', 'for information'),
      ('the same, by wall ms per image per core', median['job_over_same_wall'], '-',
       'for information'),
      (f'(job - tight loop) / (same-work loop - tight loop), CPU ms per image (median of '
       f'{rounds} rounds)', median['beyond_codec_cpu'], f'<= {SAME_WORK_TARGET}',
       at_most_verdict(median['beyond_codec_cpu'], SAME_WORK_TARGET)),
      ('the same, by wall ms per image per core', median['beyond_codec_wall'],
       f'<= {SAME_WORK_TARGET}', at_most_verdict(median['beyond_codec_wall'], SAME_WORK_TARGET)
       if median['beyond_codec_wall'] is not None else
       f'unreliable (no round with {WALL_SHARE:.0%} of the cores throughout): see CPU'),
  ]

