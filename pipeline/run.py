"""Entry point: convert a folder of images into sharded TFRecord files.

    python -m pipeline.run --input_dir=DIR --output_dir=DIR [options] [Beam options]

The graph, top to bottom (every step is a PTransform from ``transforms/``)::

    list files ─> label ─> split ─> shuffle ─> decode/resize/encode ─> write shards per split
                    │                                 │      └─> count + fingerprint per split
                    └─> class names (side input) ─────┘
    every step's failures ───────────────────────────────────> labels, failures, manifest, _SUCCESS
"""

import logging
import os
import sys
import time
from typing import List, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

import pipeline
from pipeline import options as opts
from pipeline import outputs
from transforms.convert import ConvertImages
from transforms.elements import FAILURES_TAG
from transforms.label_file import LabelsFromFile, sniff_format
from transforms.labels import AssignLabels, ClassNames, RefuseUnknownClasses, read_label_map
from transforms.listing import ListImageFiles
from transforms.metadata import WriteMetadata
from transforms.splits import AssignSplits, ShuffleOrder, probe_split_folders
from transforms.statistics import SplitStatistics
from transforms.write import WriteSplits

_LOG = logging.getLogger('imagerecords')

# TensorFlow's C++ start-up chatter in every worker process (which inherits the environment).
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def build_pipeline(p: beam.Pipeline, config: dict) -> None:
  """Adds the whole conversion to ``p``; ``config`` comes from ``job_config``."""
  spec = config['spec']

  # PBegin -> SourceFile(path, relpath)
  listed = p | 'list image files' >> ListImageFiles(
      config['input_dir'], config['extensions'],
      exclude=[config['label_file']] if config['label_file'] else [])
  # SourceFile -> (SourceFile, class name)
  if config['label_file']:
    labeled = listed.files | 'labels from file' >> LabelsFromFile(
        config['label_file'], config['label_file_format'])
  else:
    labeled = listed.files | 'assign labels' >> AssignLabels(
        config['label_source'], config['split_folders'])
  label_failures = [labeled[FAILURES_TAG]]
  labeled = labeled.labeled
  if config['strict_labels']:
    strict = labeled | 'strict labels' >> RefuseUnknownClasses(config['label_map'])
    labeled = strict.labeled
    label_failures.append(strict[FAILURES_TAG])
  # (SourceFile, class name) -> LabeledImage(path, relpath, label, split), in shuffled order
  images = labeled | 'assign splits' >> AssignSplits(
      config['split_folders'], config['fractions'])
  shuffled = images.split | 'shuffle order' >> ShuffleOrder(config['shuffle_seed'])
  # one element: the sorted class names, class id = index
  class_names = labeled | 'class names' >> ClassNames(
      config['label_map'], integer_ids=bool(config['label_file']))
  # LabeledImage -> ConvertedExample(split, label, relpath, serialized, ...)
  converted = shuffled | 'convert images' >> ConvertImages(spec, class_names)

  shard_paths = converted.examples | 'write shards' >> WriteSplits(
      config['output_dir'], config['num_shards'], config['compressed'])
  split_stats = converted.examples | 'split statistics' >> SplitStatistics()
  failures = (
      [listed[FAILURES_TAG], *label_failures, images[FAILURES_TAG], converted[FAILURES_TAG]]
      | 'all failures' >> beam.Flatten())
  _ = p | 'write metadata' >> WriteMetadata(
      config['manifest'], shard_paths, class_names, split_stats, failures)


def job_config(options: opts.ConvertOptions) -> dict:
  """Validates the options, probes the input's layout (a few bounded look-ups, no listing) and
  returns everything the graph needs, as plain values that pickle to any worker.

  Raises:
    ValueError: a flag's value is wrong, or the input directory holds no file.
    OSError: the label file or label map cannot be read.
  """
  opts.validate(options)
  input_dir = opts.absolute_dir(options.input_dir)
  output_dir = opts.absolute_dir(options.output_dir)
  label_file = None
  if options.label_source.startswith('file:'):
    label_file = opts.absolute_dir(options.label_source.split(':', 1)[1])
  label_map = read_label_map(options.label_map) if options.label_map else ()
  if not FileSystems.match([FileSystems.join(input_dir, '**')], limits=[1])[0].metadata_list:
    raise ValueError(f'--input_dir={input_dir} does not exist or holds no file')
  split_folders, fractions = opts.resolve_splits(options.splits, probe_split_folders(input_dir))
  splits = list(split_folders) or [name for name, _ in fractions]
  num_shards = opts.parse_num_shards(options.num_shards, splits)
  spec = opts.image_spec(options)
  compressed = options.compression == 'gzip'
  manifest = {
      'tool': {'name': 'imagerecords', 'version': pipeline.__version__},
      'input_dir': input_dir,
      'output_dir': output_dir,
      'options': opts.job_options(options),
      'image': {'format': spec.image_format, 'channels': 3, 'image_size': spec.image_size,
                'resize_mode': spec.resize_mode},
      'split_source': 'folders' if split_folders else 'hash',
      'num_shards': num_shards,
      'compressed': compressed,
      'max_failure_fraction': options.max_failure_fraction,
      'start_time': time.time(),
  }
  return {
      'input_dir': input_dir, 'output_dir': output_dir, 'spec': spec,
      'extensions': opts.extensions(options), 'label_source': options.label_source,
      'label_file': label_file,
      'label_file_format': sniff_format(label_file) if label_file else None,
      'label_map': label_map, 'strict_labels': options.strict_labels,
      'split_folders': split_folders,
      'fractions': fractions, 'num_shards': num_shards, 'compressed': compressed,
      'shuffle_seed': options.shuffle_seed, 'manifest': manifest,
  }


def run(argv: Optional[List[str]] = None) -> int:
  """Runs the job to completion; returns the process exit status.

  0: the output is published (``_SUCCESS`` written). 1: the run failed (too many failed inputs,
  no image, a pipeline error); the reason is logged last and the output has no ``_SUCCESS``.
  2: nothing ran: a bad flag, an unreadable input or label file, or an earlier run's files in
  ``--output_dir`` without ``--overwrite``.
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  if '-h' in argv or '--help' in argv:
    print(opts.help_text())
    return 0
  outputs.configure_logging()
  options = PipelineOptions(argv)
  convert_options = options.view_as(opts.ConvertOptions)
  opts.apply_local_runner_defaults(options, argv)
  try:
    config = job_config(convert_options)
    outputs.prepare_output_dir(config['output_dir'], convert_options.overwrite)
  except (ValueError, OSError, outputs.OutputNotEmpty) as error:
    _LOG.error('%s', error)
    return 2
  _LOG.info('converting %s -> %s (%s splits: %s)', config['input_dir'], config['output_dir'],
            config['manifest']['split_source'], ', '.join(
                f'{s} ({n} shards)' for s, n in config['num_shards'].items()))
  failure = None
  try:
    with beam.Pipeline(options=options) as p:
      build_pipeline(p, config)
  except Exception as error:  # pylint: disable=broad-except
    failure = error
  manifest = outputs.read_manifest(config['output_dir'])
  if manifest is not None:
    print(outputs.summary(manifest), file=sys.stderr)
  if failure is not None:
    reason = (manifest or {}).get('error')
    if reason:  # a verdict of the run (too many failures, ...): the one line says it all
      _LOG.error('run failed: %s', reason)
    else:  # anything else is unexpected: the traceback is what a bug report needs
      _LOG.error('run failed: %s: %s', type(failure).__name__, failure, exc_info=failure)
    return 1
  _LOG.info('done: %s', config['output_dir'])
  return 0


def main() -> None:
  """Console-script entry point (``imagerecords-convert``)."""
  sys.exit(run())


if __name__ == '__main__':
  main()
