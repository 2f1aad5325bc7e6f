"""The checks of a run's flags before anything else happens: every flag known (a typo is an
error, not a default), none empty, Beam's ``--labels`` not mistaken for a label file, and each
value within what the job can do. Each raises ValueError with one line that names the flag.
"""

import difflib
import os
import re
from typing import Sequence

from apache_beam.options.pipeline_options import (GoogleCloudOptions, PipelineOptions,
                                                  StandardOptions)
from imagerecords import contract

from pipeline import options as opts
from transforms import private_apis
from transforms.analysis import near_duplicates
from transforms.image import embedding
from transforms.inputs.labels import check_label_source
from transforms.inputs.pairing import parse_masks


def check_flags(argv: Sequence[str]) -> None:
  """Raises ValueError unless every flag in ``argv`` is defined by this job
  (``pipeline.options.ConvertOptions``) or by one of Beam's option classes (every runner's:
  Dataflow, Flink, portable, local, ...).

  Beam itself only logs "Discarding unparseable args" and goes on with the defaults, so a typo
  (``--image_sise=64``) would run the whole job at the default size. The parser is Beam's own:
  the one ``PipelineOptions.get_all_options`` assembles from every registered options class
  (the runner modules register theirs on import), parsed the same way (no abbreviations).
  The suggestion is Beam's too: ``difflib.get_close_matches`` over the parser's flags, as in
  ``PipelineOptions._warn_on_unknown_options``.

  Args:
    argv: the arguments after the program name, e.g. ``['--input_dir=in', '--project=p']``.
      Tokens after a bare ``--`` and values that do not start with ``-`` are not flags.

  Raises:
    ValueError: one line naming the unknown flags, each with Beam's suggestion when it has
      one, e.g. ``unknown flag --image_sise (did you mean --image_size?)``.
  """
  found = {}

  def look_up(parser):  # called with the parser once every options class has added its flags
    found['unknown'] = parser.parse_known_args(list(argv))[1]
    found['known'] = [flag for action in private_apis.parser_actions(parser)
                      for flag in action.option_strings]

  # retain_unknown_options: Beam adds the unknown flags to its parser (after look_up ran)
  # instead of logging that it discards them; the parsed values are not used.
  PipelineOptions(list(argv)).get_all_options(
      add_extra_args_fn=look_up, retain_unknown_options=True)
  problems = []
  for token in found['unknown']:
    if token == '--':
      break
    if not token.startswith('-'):
      continue  # the value of an unknown flag written as two tokens (--image_sise 64)
    name = token.split('=', 1)[0]
    suggestions = difflib.get_close_matches(name, found['known'])
    problems.append(f'{name} (did you mean {suggestions[0]}?)' if suggestions else name)
  if problems:
    raise ValueError(f'unknown flag{"s" if len(problems) > 1 else ""} {", ".join(problems)}: '
                     'defined neither by this job nor by Beam (see --help)')


def check_not_empty(options: opts.ConvertOptions) -> None:
  """Raises ValueError when one of the job's flags was given an empty value (``--run_date=``,
  ``--input_dir=``, ``--label_map=``, ``--masks=``, ...; blanks count as empty).

  A scheduler's template that rendered nothing (``--run_date={{ ds }}`` without a date) leaves
  such a flag, and Beam's parser takes the empty string; most of the job's flags would then
  mean their default (a plain run for ``--run_date``, no label map, classification for
  ``--masks``) without a word. No flag of this job means anything when empty.

  Raises:
    ValueError: one line naming the first such flag.
  """
  for action in opts.job_actions():
    value = getattr(options, action.dest, None)
    if isinstance(value, str) and not value.strip():
      raise ValueError(f'--{action.dest} is empty: give it a value or leave the flag out (a '
                       "scheduler's template that rendered nothing?)")


DATAFLOW_LABEL_CHARACTERS = re.compile(r'[\w\-=]*')
"""What a Dataflow job label (``key=value``) may hold: Google Cloud labels take lower-case
letters, digits, ``_`` and ``-`` (international letters too), never a ``.``, ``/`` or ``:``."""


def check_dataflow_labels(options: PipelineOptions) -> None:
  """Raises ValueError when Beam's ``--labels`` (Dataflow job labels, ``key=value`` or a JSON
  object) is given where it cannot mean that: a value that names a file (it exists, or holds a
  character no Dataflow label holds: ``--labels=val_annotations.txt``), or any value with a
  runner that is not Dataflow, which ignores it. Beam takes ``--labels`` for its own flag, so
  without this check a label file meant by it is silently dropped and every image labelled by
  its folder name.

  Raises:
    ValueError: one line naming the value and the hint ``--label_source=file:...``.
  """
  values = options.view_as(GoogleCloudOptions).labels or []
  runner = options.view_as(StandardOptions).runner
  runner_name = runner if isinstance(runner, str) or runner is None else type(runner).__name__
  dataflow = 'dataflow' in (runner_name or '').lower()
  for value in values:
    text = str(value)
    names_a_file = '{' not in text and (
        os.path.exists(text) or not DATAFLOW_LABEL_CHARACTERS.fullmatch(text))
    if names_a_file or not dataflow:
      why = (f'the runner is {runner_name or "the local runner"}, which takes no job labels'
             if not names_a_file else 'a Dataflow job label is key=value, never a file')
      raise ValueError(
          f"--labels={text} is Beam's flag for Dataflow job labels, not this job's labels "
          f'({why}): for a label file pass --label_source=file:'
          f'{text if names_a_file else "PATH"} (see --help for the other label sources)')


def validate(options: opts.ConvertOptions) -> None:
  """Checks what argparse cannot; raises ValueError with the flag's name.

  (--input_dir and --output_dir are checked here, not by argparse's ``required``: every
  PipelineOptions subclass is parsed whenever any options are, a TestPipeline's too.)
  """
  check_not_empty(options)
  check_dataflow_labels(options)
  for flag in ('input_dir', 'output_dir'):
    if not getattr(options, flag):
      raise ValueError(f'--{flag} is required (see --help)')
  if not 0 <= options.max_failure_fraction <= 1:
    raise ValueError('--max_failure_fraction must be within [0, 1]')
  if options.max_pixels < 1:
    raise ValueError('--max_pixels must be positive')
  if options.max_jpeg_scans < 1:
    raise ValueError('--max_jpeg_scans must be positive')
  if options.max_file_bytes < 1:
    raise ValueError('--max_file_bytes must be positive')
  if not 0 <= options.near_duplicate_distance <= near_duplicates.MAX_DISTANCE:
    raise ValueError(f'--near_duplicate_distance must be within 0-{near_duplicates.MAX_DISTANCE} '
                     f'bits, got {options.near_duplicate_distance}')
  if options.dedup == 'keep_first_near' and (options.image_format == 'original'
                                             or options.masks != 'none'
                                             or not options.image_checks):
    raise ValueError('--dedup=keep_first_near needs the pixels the conversion measures, which '
                     '--image_format=original, --masks and --image_checks=false do not measure '
                     '(use keep_first)')
  if not options.claim_lease_seconds > 0:
    raise ValueError('--claim_lease_seconds must be positive')
  if not opts.extensions(options):
    raise ValueError('--extensions names no extension')
  check_label_source(options.label_source)
  if options.strict_labels and not (options.label_map or options.run_date):
    raise ValueError('--strict_labels needs --label_map (or --run_date: the previous run\'s)')
  if options.stats == opts.STATS_TFT and options.output_dir.startswith('s3://'):
    raise ValueError('--stats=tft writes its transform with TensorFlow, which has no s3:// '
                     'filesystem in 2.21; pass --stats (the default) for an s3:// --output_dir')
  if options.stats == opts.STATS_TFT and any(c in options.output_dir for c in '[*?'):
    raise ValueError('--stats=tft writes its transform as a TensorFlow SavedModel, and '
                     'TensorFlow loads one through glob patterns: in a folder whose path holds '
                     f'[, * or ? ({options.output_dir}) it could not be read back; pass --stats '
                     '(the default) or choose another --output_dir')
  if options.stats == opts.STATS_TFT and options.image_format == contract.RAW_FORMAT:
    raise ValueError('--stats=tft: its transform decodes encoded images, and '
                     '--image_format=raw stores none; pass --stats (the default)')
  if options.dali_index and options.compression == 'gzip':
    raise ValueError('--dali_index needs uncompressed shards: DALI reads records at byte '
                     'offsets of the uncompressed file; drop --compression=gzip')
  if parse_masks(options.masks) and (options.label_source != 'directory' or options.strict_labels):
    raise ValueError('--masks: segmentation records carry no class label; drop --label_source '
                     'and --strict_labels (--label_map names the mask classes)')
  opts.image_spec(options)
  spec = opts.embedding_spec(options)
  if spec:
    embedding.check_spec(spec)
  elif options.embedding_weights:
    raise ValueError('--embedding_weights needs --embedding_model')
