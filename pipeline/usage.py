"""The job's ``--help`` (``python -m pipeline.run --help``) and ``--help_beam``: the options of
``pipeline.options`` in groups, an example first, and Beam's own options apart."""

import argparse

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import options as opts
from transforms import private_apis

HELP_GROUPS = (
    ('input and labels', ('input_dir', 'label_source', 'allow_single_class', 'label_map',
                          'strict_labels', 'masks', 'extensions', 'follow_external_symlinks',
                          'max_file_bytes', 'max_failure_fraction')),
    ('images', ('image_size', 'resize_mode', 'image_format', 'jpeg_quality',
                'chroma_subsampling', 'channels', 'background', 'max_pixels', 'max_jpeg_scans')),
    ('output and shards', ('output_dir', 'splits', 'num_shards', 'compression', 'shuffle_seed',
                           'overwrite', 'dali_index', 'claim_lease_seconds', 'verbose')),
    ('nightly', ('run_date', 'full_rebuild')),
    ('analysis', ('stats', 'image_checks', 'dedup', 'near_duplicate_distance')),
    ('embeddings', ('embedding_model', 'embedding_weights', 'embedding_pooling',
                    'embedding_preprocessing', 'embedding_image_size', 'embedding_batch_size')),
    ('runner', ('flink_rest_address',)),
)
"""The groups of ``--help``, in the order a user meets the choices; every option of
ConvertOptions is in one (tests/test_first_hour.py checks)."""

HELP_DESCRIPTION = """\
Convert a folder of images into sharded TFRecord files of tf.train.Example.

example:
  python -m pipeline.run --input_dir=photos --output_dir=out --image_size=224
  (photos/CLASS/*.jpg: one class per folder; splits train/validation 80/20 by a hash of the
  path, or the split folders train/, val/, test/ when the input has them)
"""

HELP_EPILOG = """\
runner (Beam's own options, passed through to Beam):
  --runner=DataflowRunner|FlinkRunner|PortableRunner, --project, --region, --temp_location,
  --job_endpoint, --environment_type, --direct_num_workers, ... Locally the default is Beam's
  FnApiRunner, one worker process per core (below 1,000 files, or a --run_date night that
  converts little: in this process). All of them: python -m pipeline.run --help_beam
"""


def beam_help_text() -> str:
  """The --help text of Beam's own options (``--help_beam``): every ``PipelineOptions`` class
  Beam defines, one group each."""
  parser = argparse.ArgumentParser(prog='python -m pipeline.run', conflict_handler='resolve',
                                   add_help=False, usage='%(prog)s ... [Beam options]')
  for cls in PipelineOptions.__subclasses__():
    if cls.__module__.startswith('apache_beam.'):
      private_apis.declare_options(cls, parser.add_argument_group(cls.__name__))
  return parser.format_help()


def help_text() -> str:
  """The --help text of the job's own options: an example first, the options in
  :data:`HELP_GROUPS`, Beam's options named last with how to list them."""
  actions = {action.dest: action for action in opts.job_actions()}
  for action in actions.values():  # what to give, where argparse would show the dest's name
    if action.metavar is None and not action.choices and action.nargs != 0:
      action.metavar = ('DIR' if action.dest.endswith('_dir') else 'N' if action.type is int
                        else 'X' if action.type is float else 'VALUE')
  parser = argparse.ArgumentParser(
      prog='python -m pipeline.run', description=HELP_DESCRIPTION, epilog=HELP_EPILOG,
      usage='%(prog)s --input_dir=DIR --output_dir=DIR [options] [Beam options]',
      formatter_class=argparse.RawDescriptionHelpFormatter)
  for title, names in HELP_GROUPS:
    group = parser.add_argument_group(title)
    for name in names:
      group._add_action(actions[name])  # pylint: disable=protected-access
  return parser.format_help()
