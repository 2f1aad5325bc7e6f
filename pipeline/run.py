"""Entry point: convert a folder of images into sharded TFRecord files.

    python -m pipeline.run --input_dir=DIR --output_dir=DIR [options] [Beam options]

The graph, top to bottom (every step is a PTransform from ``transforms/``)::

    list files ─> label ─> split ─> [drop duplicates] ─> [reuse] ─> shuffle ─> decode/resize/encode
                    └─> class names (side input) ─────────┼─────────────────────┘      │
    converted examples <─── the previous run's records ───┴─── [embed: RunInference] ──┘
      (--run_date: unchanged images keep their record, verified in the previous run's shards
       and copied from there by the writer; their examples reach the steps below in lists;
       --embedding_model: a new record gets image/embedding, transforms.image.embedding)
      ├─> write shards per split (fixed --num_shards)
      ├─> count + fingerprint per split
      ├─> groups of exact and near duplicates (perceptual hashes), leakage, label conflicts
      │     (--dedup=keep_first_near: only the first file of a near group goes on)
      ├─> quality flags (placeholders, blank, dark, bright, grayscale, small, odd aspect)
      ├─> images.jsonl, and its diff against the previous run (--run_date)
      └─> the training split's pixel statistics (--stats; --stats=tft: and transform_fn/)
    all of the above + every step's failures (failures.jsonl) ─> labels, manifest, _SUCCESS
                                                 (--run_date: then publish to dt=DATE/, LATEST)

With ``--masks`` (segmentation), "label ─> split" is "pair images with masks" (which splits
too) and the class names are the masks' (``transforms.inputs.pairing``; their pixels:
``transforms.image.masks``).
"""

import _thread
import contextlib
import dataclasses
import logging
import os
import sys
from typing import Iterator, List, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (GoogleCloudOptions, PipelineOptions,
                                                  StandardOptions)
from apache_beam.runners.runner import PipelineState

from pipeline import (flink_job, interrupt, local_runner, nightly, outputs, progress, usage,
                      validation)
from pipeline import options as opts
from pipeline.config import JobConfig
from transforms import process_exit
from transforms.analysis.dedup import KEEP_FIRST_NEAR, DropDuplicates, ExactGroups, ReportDuplicates
from transforms.analysis.near_duplicates import (DropNearDuplicates, DroppedNear,
                                                 NearDuplicateGroups)
from transforms.analysis.quality import ReportQuality
from transforms.analysis.statistics import SplitStatistics, TrainingStatistics, training_split
from transforms.analysis.statistics_tft import AnalyzeTrainingSplit
from transforms.batches import ExampleBatches
from transforms.elements import FAILURES_TAG
from transforms.image.convert import ConvertImages
from transforms.image.embedding import AddEmbeddings
from transforms.inputs import pairing
from transforms.inputs.label_file import LabelsFromFile
from transforms.inputs.labels import AssignLabels, ClassNames, RefuseUnknownClasses
from transforms.inputs.listing import ListImageFiles
from transforms.inputs.splits import AssignSplits, ShuffleOrder
from transforms.outputs import claim
from transforms.outputs.authorship import NotWrittenByThisJob
from transforms.outputs.failures import WriteFailures
from transforms.outputs.image_index import DiffAgainstPrevious, WriteImageIndex
from transforms.outputs.incremental import CountConverted, DropReused, ReusePreviousRecords
from transforms.outputs.metadata import WriteMetadata
from transforms.outputs.publish import PublishRun
from transforms.outputs.write import WriteSplits

_LOG = logging.getLogger('imagerecords')

# TensorFlow's C++ start-up chatter in every worker process (which inherits the environment).
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def build_pipeline(p: beam.Pipeline, config: JobConfig) -> None:
  """Adds the whole conversion to ``p``; ``config`` comes from ``JobConfig.from_options``."""
  spec = config.spec

  # PBegin -> SourceFile(path, relpath)
  # (links, special files and folders that cannot be listed are reported, never dropped)
  listed = p | 'list image files' >> ListImageFiles(
      config.input_dir, config.extensions,
      exclude=[config.label_file] if config.label_file else [],
      folders=config.masks.listed_folders if config.masks else (),
      follow_external_symlinks=config.follow_external_symlinks,
      max_file_bytes=config.max_file_bytes)
  # SourceFile -> LabeledImage(path, relpath, label, split[, mask]); class names side input
  images, label_failures, class_names = _label_and_split(p, listed.files, config)
  # --dedup=keep_first: hashed, one LabeledImage per group of byte-identical files
  deduped = images.split | 'drop duplicates' >> DropDuplicates(config.dedup)
  stats_split = training_split(list(config.num_shards)) if config.stats else None
  # --run_date: unchanged images take the previous run's records; the rest are converted
  to_convert, reused, night_counts = _reuse_previous_night(deduped['images'], config,
                                                           stats_split)
  # one element: how many images there are to convert, known before the first is converted
  # (a side input of the conversion: its progress files and the images_to_convert gauge)
  total = to_convert | 'how many to convert' >> beam.combiners.Count.Globally()
  shuffled = to_convert | 'shuffle order' >> ShuffleOrder(config.shuffle_seed, count=total)
  # LabeledImage -> ConvertedExample(split, label, relpath, serialized, ...)
  # --stats: the training split's examples carry their stored pixels' sums
  # --image_checks: examples carry their stored pixels' measures (perceptual hash, quality)
  converted = shuffled | 'convert images' >> ConvertImages(
      spec, class_names, stats_split, measure=config.image_checks, total=total,
      progress_dir=config.progress_dir)
  new_examples = converted.examples
  if config.embedding:  # --embedding_model: + image/embedding, by RunInference
    new_examples = new_examples | 'embed images' >> AddEmbeddings(config.embedding)
  # the examples of every source: the writer takes each apart (the records are never
  # flattened); the per-image analysis steps read them all, in lists, without their records
  # (a night's reused records come in lists already, and to the writer as keys files)
  records = (new_examples,)
  batches = records | 'examples in batches' >> ExampleBatches(_reused_lists(reused))

  # groups of byte-identical files and of near-identical pictures (perceptual hashes)
  groups = [batches | 'exact duplicate groups' >> ExactGroups(), deduped['groups']]
  if config.image_checks:
    near_groups = batches | 'near-duplicate groups' >> NearDuplicateGroups(
        config.near_duplicate_distance, keep_first=config.dedup == KEEP_FIRST_NEAR)
    groups.append(near_groups)
  all_groups = groups | 'all duplicate groups' >> beam.Flatten()
  near_failures = []
  if config.dedup == KEEP_FIRST_NEAR:  # only the first file of each near group is written
    dropped = near_groups | 'near duplicates not written' >> DroppedNear()
    near_failures.append(dropped[FAILURES_TAG])
    records = records | 'drop near duplicates' >> DropNearDuplicates(dropped['files'])
    if reused is not None:
      reused = reused | 'drop reused near duplicates' >> DropReused(
          dropped['files'], config.shuffle_seed, config.claim)
    batches = records | 'examples kept in batches' >> ExampleBatches(_reused_lists(reused))
  shards = records | 'write shards' >> WriteSplits(
      config.output_dir, config.num_shards, config.compressed,
      dali_index=config.dali_index, claim=config.claim, shuffle_seed=config.shuffle_seed,
      staged=reused and reused['staged'])
  split_stats = batches | 'split statistics' >> SplitStatistics()
  failure_summary = (
      [listed[FAILURES_TAG], *label_failures, images[FAILURES_TAG], deduped[FAILURES_TAG],
       converted[FAILURES_TAG], *near_failures]
      | 'all failures' >> beam.Flatten()
      # failures.jsonl, and one element: their counts and most common reasons
      | 'report failures' >> WriteFailures(config.output_dir))
  # duplicates.jsonl, and one element: the manifest's duplicates section (counts, a few groups)
  duplicates = all_groups | 'report duplicates' >> ReportDuplicates(config.output_dir)
  # quality.jsonl (flagged images), and one element: the manifest's quality section (counts)
  quality = None
  if config.image_checks:
    quality = batches | 'report quality' >> ReportQuality(config.output_dir, spec.channels)
  # images.jsonl (file, sha256, split, label per example) and, on a later night, its diff
  index = batches | 'image index' >> WriteImageIndex(config.output_dir)
  diff = None
  if config.previous_index and reused is None:
    diff = batches | 'diff against the previous run' >> DiffAgainstPrevious(
        config.previous_index, config.previous_run)
  elif config.previous_index:  # the reuse step paired the files: the converted ones are left
    diff = (records
            | 'converted examples in batches' >> ExampleBatches()
            | 'diff against the previous run' >> DiffAgainstPrevious(
                config.previous_index, config.previous_run,
                previous_entries=reused['previous'], unchanged_batches=reused['batches']))
  statistics = None
  if config.stats == opts.STATS_TFT:  # the same numbers, and OUT/transform_fn/ (TFT)
    statistics = batches | 'training statistics (tft)' >> AnalyzeTrainingSplit(
        config.output_dir, stats_split, spec.image_size, spec.channels)
  elif config.stats:  # --stats: exact pixel mean/std of the training split, Beam alone
    statistics = batches | 'training statistics' >> TrainingStatistics(
        stats_split, spec.channels)
  manifest = p | 'write metadata' >> WriteMetadata(
      config.metadata, shards, class_names, split_stats, failure_summary, duplicates,
      diff=diff, written=index, statistics=statistics, incremental=night_counts,
      quality=quality, claim=config.claim)
  if config.publish_dir:  # --run_date: staging -> OUTPUT/dt=DATE, _SUCCESS, LATEST
    _ = manifest | 'publish the run' >> PublishRun(
        config.output_root, config.output_dir, config.publish_dir,
        claim=config.claim, run_id=config.run_id)


def _reuse_previous_night(images, config: JobConfig, stats_split):
  """PCollection[LabeledImage] -> (the images to convert, the previous run's records of the
  unchanged ones or None, the one-element night counts or None): see
  transforms.outputs.incremental. The records: a dict of ``batches`` (their examples in lists,
  without record bytes), ``staged`` (the writer's keys files of them) and ``previous`` (the
  previous index entries of the files not reused, for the diff)."""
  plan = config.incremental
  if plan is None:  # not a dated run
    return images, None, None
  if not plan.reuse:  # the first night, or a full rebuild (the plan logged why)
    return images, None, images | 'count images to convert' >> CountConverted()
  measured = config.image_checks and config.spec.image_format != 'original'
  night = images | 'reuse unchanged records' >> ReusePreviousRecords(
      plan.previous_index, plan.previous_shards, config.output_dir, stats_split,
      measured=measured, shuffle_seed=config.shuffle_seed, claim=config.claim)
  reused = {name: night[name] for name in ('batches', 'staged', 'previous')}
  return night['convert'], reused, night['counts']


def _reused_lists(reused) -> tuple:
  """The already-batched sources of ExampleBatches: a night's reused examples, or none."""
  return () if reused is None else (reused['batches'],)


def _label_and_split(p: beam.Pipeline, files, config: JobConfig):
  """PCollection[SourceFile] -> (images with a ``split`` output and a failures output, the
  label steps' failure PCollections, a one-element PCollection of the class names)."""
  if config.masks:
    # segmentation: LabeledImage(..., label=None, mask=its mask's SourceFile), split by the
    # VOC split lists, the split folders or the path hash
    images = files | 'pair images with masks' >> pairing.PairImagesWithMasks(
        config.masks, config.input_dir, config.split_lists, config.split_folders,
        config.fractions)
    # the masks' class names (--label_map, or a VOC root's class_names.txt)
    class_names = p | 'mask class names' >> beam.Create([list(config.label_map)])
    return images, [], class_names
  # SourceFile -> (SourceFile, class name)
  if config.label_file:
    labeled = files | 'labels from file' >> LabelsFromFile(
        config.label_file, config.label_file_format)
  else:
    labeled = files | 'assign labels' >> AssignLabels(
        config.label_source, config.split_folders)
  label_failures = [labeled[FAILURES_TAG]]
  labeled = labeled.labeled
  if config.strict_labels:
    strict = labeled | 'strict labels' >> RefuseUnknownClasses(config.label_map)
    labeled = strict.labeled
    label_failures.append(strict[FAILURES_TAG])
  # (SourceFile, class name) -> LabeledImage(path, relpath, label, split)
  images = labeled | 'assign splits' >> AssignSplits(
      config.split_folders, config.fractions, config.file_splits)
  # the sorted class names (or those of --label_map first), class id = index
  class_names = labeled | 'class names' >> ClassNames(
      config.label_map, integer_ids=bool(config.label_file))
  return images, label_failures, class_names


def run(argv: Optional[List[str]] = None) -> int:
  """Runs the job to completion; returns the process exit status.

  0: the output is published (``_SUCCESS`` written; with ``--run_date``, moved into
  ``dt=DATE/`` and named by ``LATEST``). 1: the run failed (too many failed inputs, no image,
  fewer than two classes without ``--allow_single_class``, a class of the label map vanished
  under ``--strict_labels``, a full disk, a lost claim, a pipeline error); the reason is
  logged last in one line (the summary before it says FAILED, never "wrote"), the whole log
  is kept in the output's ``.imagerecords/`` folder, the run's working folders are removed and
  nothing is published. 2: nothing ran: a bad flag (unknown, empty, or Beam's ``--labels``
  naming a file), an empty or unreadable input, an unreadable label file, another run using
  the same output (or date), an earlier run's files in ``--output_dir`` (or a published
  ``--run_date``) without ``--overwrite``, files the job did not write where it would replace
  or delete them (``transforms.outputs.authorship``), or an input and an output folder one
  inside the other. 130 or 143: SIGINT or SIGTERM stopped the run before it was published
  (``pipeline.interrupt``; after publication it exits 0).
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  if '-h' in argv or '--help' in argv:
    print(usage.help_text())
    return 0
  if '--help_beam' in argv:
    print(usage.beam_help_text())
    return 0
  # before Beam parses the options (which may log, setting up logging its own way)
  log_path = outputs.configure_logging(verbose='--verbose' in argv)
  options = PipelineOptions(argv)
  convert_options = options.view_as(opts.ConvertOptions)
  try:
    with interrupt.signals_interrupt():
      try:
        return _claim_and_run(options, convert_options, argv, log_path)
      except interrupt.Interrupted as interruption:  # before the run wrote anything
        _LOG.error('interrupted (%s); nothing published', interruption.name)
        return interruption.exit_status
  finally:
    outputs.close_run_log()
    if not outputs.is_kept(log_path):
      os.remove(log_path)


def _claim_and_run(options: PipelineOptions, convert_options: opts.ConvertOptions,
                   argv: List[str], log_path: str) -> int:
  """:func:`run` once the logging is set: claims the output, runs, releases the claim."""
  small_input = local_runner.apply_local_runner_defaults(options, argv)
  FileSystems.set_options(options)  # the launcher's own look-ups (s3:// needs its options)
  try:  # the flags first: a bad one touches nothing
    validation.check_flags(argv)
    validation.validate(convert_options)
    output_root = opts.absolute_dir(convert_options.output_dir)
    if convert_options.run_date:
      nightly.check_run_date(convert_options.run_date)
    # before the claim, the first write: neither folder may hold the other
    outputs.check_apart(opts.absolute_dir(convert_options.input_dir), output_root,
                        convert_options.run_date)
    held = claim.acquire(output_root, convert_options.run_date,
                         convert_options.claim_lease_seconds)
  except (ValueError, OSError, claim.OutputClaimed) as error:
    _LOG.error('%s', error)
    return 2
  held.on_lost = _thread.interrupt_main  # the heartbeat found the claim taken: stop the run
  held.start_heartbeat()
  status = 1
  try:
    try:
      status = _run_claimed(options, convert_options, argv, held, log_path, output_root,
                            small_input)
    finally:  # a launch that stopped before writing anything leaves no claim file either
      held.release(forget=status == 2)
  except interrupt.Interrupted:  # from the heartbeat (or a signal, which goes on)
    if not held.lost:
      raise
    # The output is another run's now: nothing here is cleaned up or published.
    _LOG.error('run failed: %s', held.lost)
    status = 1
  return status


@contextlib.contextmanager
def _progress(options: PipelineOptions) -> Iterator[Optional[str]]:
  """On a local runner, the whole job's progress on the console while the block runs
  (``pipeline.progress``); yields the conversion's ``progress_dir``, None elsewhere (Dataflow,
  Flink: Beam metrics show it)."""
  if options.view_as(StandardOptions).runner not in local_runner.LOCAL_RUNNERS:  # set by then
    yield None
    return
  console = outputs.console_handler()
  with progress.show_progress(console.stream if console else sys.stderr, console) as folder:
    yield folder


def _run_claimed(options: PipelineOptions, convert_options: opts.ConvertOptions,
                 argv: List[str], held: claim.Claim, log_path: str, output_root: str,
                 small_input: Optional[int] = None) -> int:
  """The run, its output claimed: prepares the output, runs the pipeline, reports.
  ``small_input``: the file count of an input small enough to convert in this process."""
  night = None
  try:
    config = JobConfig.from_options(convert_options, held.token)
    night = local_runner.choose_night_mode(options, argv, config)  # converts little?
    claim.check(held.token)  # still ours after the look-ups (a stalled launch may have lost it)
    outputs.prepare_output_dir(config.output_dir, convert_options.overwrite,
                               outputs.entries_written(config), config.run_id)
  except claim.ClaimLost as error:
    _LOG.error('run failed: %s', error)
    return 1
  except (ValueError, OSError, outputs.OutputNotEmpty, nightly.AlreadyPublished,
          NotWrittenByThisJob) as error:
    _LOG.error('%s', error)
    return 2
  _LOG.info('converting %s -> %s (%s splits: %s)', config.input_dir, config.output_dir,
            config.metadata.launch.split_source, ', '.join(
                f'{s} ({n} shards)' for s, n in config.num_shards.items()))
  if small_input is not None:
    _LOG.info('%d files in the input folder: converting in this process (no worker processes '
              'below %d files; --direct_running_mode=multi_processing starts them)', small_input,
              local_runner.IN_PROCESS_BELOW_FILES)
  if night is not None:
    _LOG.info('about %d files to convert and %d to reuse from the previous night: converting '
              'in this process (--direct_running_mode=multi_processing starts worker '
              'processes)', night.to_convert, night.to_reuse)
  try:
    return _run_prepared(options, convert_options, config, held, log_path, output_root)
  except interrupt.Interrupted as interruption:
    if held.lost:
      raise  # the heartbeat's: the output is another run's now
    return _interrupted(interruption, config)


def _interrupted(interruption: interrupt.Interrupted, config: JobConfig) -> int:
  """After SIGINT or SIGTERM, the run's output claimed: 0 when this run was published by then
  (a scheduler must not retry it), else its working folders removed and 128 + signal."""
  published = config.publish_dir or config.output_dir
  if outputs.published_by(published, config.run_id):
    _LOG.warning('interrupted (%s) after the run was published: %s is complete',
                 interruption.name, published)
    return 0
  outputs.remove_working_folders(config.output_dir)
  _LOG.error('interrupted (%s); nothing published (the next run replaces what this one left '
             'in %s)', interruption.name, config.output_dir)
  return interruption.exit_status


def _run_prepared(options: PipelineOptions, convert_options: opts.ConvertOptions,
                  config: JobConfig, held: claim.Claim, log_path: str, output_root: str) -> int:
  """The run, its output claimed and prepared: runs the pipeline, reports. Raises
  interrupt.Interrupted on SIGINT or SIGTERM."""
  failure, p = None, None
  # --flink_rest_address: the job is watched and cancelled on the cluster (pipeline.flink_job)
  flink = flink_job.FlinkJob.of(options, config.run_id)
  try:
    with outputs.worker_output_to_log(log_path, convert_options.verbose), _progress(options) as (
        progress_dir), flink.watching() if flink else contextlib.nullcontext():
      config = dataclasses.replace(config, progress_dir=progress_dir)
      with beam.Pipeline(options=options) as p:
        build_pipeline(p, config)
  except interrupt.Interrupted:
    interrupt.cancel_submitted(p, flink)
    raise
  except Exception as error:  # pylint: disable=broad-except
    # The boundary of the whole run: any error of any step ends here, to be reported in one
    # line (its traceback goes to the log file) and cleaned up after.
    interruption = interrupt.interruption_behind(error)
    if interruption:
      interrupt.cancel_submitted(p, flink)
      raise interruption from error
    failure = error
  launched = None if failure is not None else launched_not_run(p.result, options)
  if launched:
    # The job runs on after this process: its own last steps write the manifest, _SUCCESS
    # and LATEST. Nothing of the output is read or written here, and nothing is called done.
    _LOG.info('job submitted, not run yet (%s); it publishes %s as its last step', launched,
              config.publish_dir or config.output_dir)
    held.leave_to_lapse()  # no launcher renews it now: it covers the job for one more lease
    return 0
  if failure is None and held.lost:
    failure = claim.ClaimLost(held.lost)
  published = failure is None and config.publish_dir or config.output_dir
  try:
    manifest = outputs.read_manifest(published)
  except (OSError, ValueError):  # a manifest cut short by a full disk: none to show
    manifest = None
  if manifest is not None and failure is None:
    # as every runner reports them
    manifest = dataclasses.replace(manifest, metrics=outputs.beam_counters(p.result),
                                   step_msecs=outputs.step_msecs(p.result))
    try:
      claim.check(held.token)  # another run owns the output now: leave its manifest alone
      outputs.write_manifest(published, manifest)
    except claim.ClaimLost as error:
      failure = error
    except OSError as error:
      # The job published the run (its manifest, _SUCCESS, LATEST) before this rewrite, which
      # only adds the runner's counters: a launcher that may not write there (SDK workers in a
      # container as another user own the folder they made) leaves the job's manifest as it is.
      _LOG.warning('manifest.json of %s keeps the job\'s own content: the runner\'s counters '
                   'could not be added: %s', published, error)
  if manifest is not None:  # says "wrote" only once the run is published; else FAILED
    print(outputs.summary(manifest, published=failure is None), file=sys.stderr)
  if failure is None:
    _LOG.info('done: %s', published)
    return 0
  _LOG.info('the run failed: %s: %s', type(failure).__name__, failure, exc_info=failure,
            extra=outputs.LOG_FILE_ONLY)  # the traceback, for the log file
  reason = outputs.failure_reason(failure, manifest, held.lost, config.output_dir)
  if not (held.lost or outputs.is_claim_lost(failure)):  # else the folders are another run's
    outputs.remove_working_folders(config.output_dir)
  kept = outputs.keep_run_log(log_path, output_root, held.token.run_id)
  _LOG.info('the whole log of this run: %s%s', kept,
            '' if convert_options.verbose else ' (--verbose shows it here)')
  _LOG.error('run failed: %s', reason)
  return 1


def launched_not_run(result, options: PipelineOptions) -> Optional[str]:
  """Why ``result`` (a ``PipelineResult`` once ``with beam.Pipeline`` exited) is a launch whose
  job runs on elsewhere, or None when the job ran to completion here.

  - A template launch: the Dataflow Flex Template launcher runs the entry point with
    ``--template_location``, and Beam's ``DataflowRunner`` then only writes the job's
    description there; its ``DataflowPipelineResult`` holds no job and reports
    ``PipelineState.DONE`` (Beam 2.77, ``dataflow_runner.py``: ``state``: "if not
    self.has_job: return PipelineState.DONE"), so DONE alone cannot tell.
  - An asynchronous runner: any state other than DONE.
  """
  template = options.view_as(GoogleCloudOptions).template_location
  if template or getattr(result, 'has_job', True) is False:
    return f'a template launch, no job yet{f": {template}" if template else ""}'
  state = getattr(result, 'state', None)
  if state != PipelineState.DONE:
    return f'state {state}'
  return None


def main() -> None:
  """Console-script entry point (``imagerecords-convert``)."""
  process_exit.skip_final_collections()  # its user waits for the interpreter's exit
  sys.exit(run())


if __name__ == '__main__':
  main()
