"""Writes metadata.json, the Flex Template's parameters, from the job's own options.

    .venv/bin/python deploy/dataflow/make_metadata.py           # rewrite metadata.json
    .venv/bin/python deploy/dataflow/make_metadata.py --check   # exit 1 when it is stale

Every option of ``pipeline.options.ConvertOptions`` becomes one parameter (Dataflow's
``ParameterMetadata``): ``name``, ``label``, ``helpText`` (the option's ``--help`` text),
``isOptional`` (False only for the flags ``--help`` marks required) and ``regexes``, which
Dataflow matches against a value before it starts the launcher. A regex comes from the option
itself where it can (choices, ``type=int``/``float``, true/false options) and from ``REGEXES`` otherwise;
a new free-text option without an entry there stops this script with the option's name, so
the template never silently lacks a check. ``tests/test_deploy.py`` fails while metadata.json
differs from what this script writes.

Paths must be object-store URLs (``gs://``, ``s3://``): a Dataflow worker cannot see the
launching machine's disk.
"""

import argparse
import json
import pathlib
import sys
from typing import Dict, List

ROOT = pathlib.Path(__file__).resolve().parents[2]
METADATA = pathlib.Path(__file__).resolve().parent / 'metadata.json'
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

from pipeline import generated  # pylint: disable=wrong-import-position
from pipeline import options as opts  # pylint: disable=wrong-import-position

_URL = r'(gs|s3)://[a-z0-9][-_.a-z0-9]*[a-z0-9]/\S.*'
_BUCKET_OR_DIR = r'(gs|s3)://[a-z0-9][-_.a-z0-9]*[a-z0-9](/.*)?'
_SPLIT = r'[A-Za-z0-9_]+'
_POSITIVE_INT = r'^[1-9][0-9]*$'

# Free-text options: one anchored regex each (Dataflow checks it; the job validates the rest).
REGEXES: Dict[str, str] = {
    'input_dir': f'^{_BUCKET_OR_DIR}$',
    'output_dir': f'^{_BUCKET_OR_DIR}$',
    'label_source': f'^(directory|none|filename:.+|file:{_URL})$',
    'label_map': f'^{_URL}$',
    'splits': rf'^(auto|folders|{_SPLIT}=[0-9.]+(,{_SPLIT}=[0-9.]+)*)$',
    'num_shards': rf'^([1-9][0-9]*|{_SPLIT}=[1-9][0-9]*(,{_SPLIT}=[1-9][0-9]*)*)$',
    'image_size': _POSITIVE_INT,
    'jpeg_quality': r'^([1-9]|[1-9][0-9]|100)$',
    'max_pixels': _POSITIVE_INT,
    'max_jpeg_scans': _POSITIVE_INT,
    'max_file_bytes': _POSITIVE_INT,
    'extensions': r'^\.?[A-Za-z0-9]+(,\.?[A-Za-z0-9]+)*$',
    'max_failure_fraction': r'^(0(\.[0-9]*)?|\.[0-9]+|1(\.0*)?)$',
    'run_date': r'^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$',
    'masks': r'^(none|voc|folders|pattern:.*\{stem\}.*)$',
    'background': r'^(#?[0-9a-fA-F]{6}|[0-9]{1,3},[0-9]{1,3},[0-9]{1,3})$',
    'embedding_model': rf'^({_URL}|keras\.applications:[A-Za-z_][A-Za-z0-9_]*)$',
    'embedding_weights': f'^{_URL}$',
    'stats': r'^(true|false|tft)$',
    'flink_rest_address': r'^(https?://)?[A-Za-z0-9][-.A-Za-z0-9]*:[0-9]{1,5}/?$',
}
_SWITCH = '^(true|false)$'
_INT = '^-?[0-9]+$'
_FLOAT = r'^-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$'

# Labels shown by the Dataflow console; an option without one is labelled from its name.
LABELS: Dict[str, str] = {
    'input_dir': 'Input folder (gs:// or s3://)',
    'output_dir': 'Output folder (gs:// or s3://)',
    'label_source': 'Label source',
    'label_map': 'Label map of an earlier run (labels.txt)',
    'strict_labels': 'Refuse classes missing from the label map',
    'splits': 'Splits',
    'num_shards': 'Shards per split',
    'image_size': 'Target image size (pixels)',
    'resize_mode': 'Resize mode',
    'image_format': 'Stored image format',
    'jpeg_quality': 'JPEG quality (1-100)',
    'max_pixels': 'Largest image accepted (pixels)',
    'max_jpeg_scans': 'Most scans of a JPEG accepted',
    'extensions': 'Image file extensions',
    'max_failure_fraction': 'Largest fraction of failed images',
    'compression': 'Shard compression',
    'shuffle_seed': 'Record order seed',
    'overwrite': 'Replace an earlier run',
    'run_date': 'Run date (YYYY-MM-DD, nightly mode)',
    'dali_index': 'Write NVIDIA DALI index files',
    'dedup': 'Duplicate files',
    'masks': 'Segmentation masks',
    'background': 'Background colour (R,G,B or #rrggbb)',
    'stats': 'Dataset statistics (true, false, or tft: with tensorflow-transform)',
    'follow_external_symlinks': 'Follow links that leave the input folder',
    'max_file_bytes': 'Largest input file accepted (bytes)',
    'claim_lease_seconds': 'Lease of the run\'s claim on its output (seconds)',
    'flink_rest_address': 'Flink REST API (host:port; Flink runs only)',
    'verbose': 'Every log line on the console',
}

# Help texts of the template where the job's --help (written for a command line) offers what
# the template's regex refuses: a Dataflow worker cannot read the launching machine's disk.
TEMPLATE_HELP: Dict[str, str] = {
    'input_dir': 'Root folder of the images: gs://bucket/dir or s3://bucket/dir (the workers '
                 'read it; a local path is refused).',
    'output_dir': 'Folder to write the TFRecord shards and metadata files into: gs://bucket/dir '
                  'or s3://bucket/dir (a local path is refused).',
}
# ... and notes added to the job's help text for the same reason.
TEMPLATE_NOTES: Dict[str, str] = {
    'label_source': " In the template, 'file:' takes a gs:// or s3:// URL.",
}


# The job's options, read from its parser in one shared place (docs/make_options.py uses it too).
job_actions = opts.job_actions
required_names = opts.required_names
is_switch = opts.is_switch
help_of = opts.help_of


def regex_of(action: argparse.Action) -> str:
  """The one anchored regex a value of ``action`` must match.

  Raises:
    ValueError: a free-text option with no entry in REGEXES.
  """
  if action.dest in REGEXES:
    return REGEXES[action.dest]
  if is_switch(action) or isinstance(action.default, bool):  # store_true, or --flag=true|false
    return _SWITCH
  if action.choices:
    return '^(' + '|'.join(str(choice) for choice in action.choices) + ')$'
  if action.type is int:
    return _INT
  if action.type is float:
    return _FLOAT
  raise ValueError(f'--{action.dest} is a free-text option with no regex: add one to REGEXES in '
                 f'{pathlib.Path(__file__).name}')


def metadata() -> dict:
  """The Flex Template metadata: name, description and one parameter per job option."""
  required = required_names()
  parameters = []
  for action in job_actions():
    name = action.dest
    parameters.append({
        'name': name,
        'label': LABELS.get(name, name.replace('_', ' ').capitalize()),
        'helpText': TEMPLATE_HELP.get(name, help_of(action)) + TEMPLATE_NOTES.get(name, '') + (
            ' (true or false)' if is_switch(action) else ''),
        'isOptional': name not in required,
        'regexes': [regex_of(action)],
    })
  return {
      'name': 'imagerecords',
      'description': 'Converts a folder of images (gs:// or s3://) into sharded TFRecord files '
                     'of tf.train.Example, with labels.txt, manifest.json, failures.jsonl and '
                     '_SUCCESS (see docs/output.md).',
      'parameters': parameters,
  }


def render() -> str:
  """metadata() as the text of metadata.json."""
  return json.dumps(metadata(), indent=2, ensure_ascii=False) + '\n'


def main(argv: List[str]) -> int:
  """Writes metadata.json, or with --check compares it; returns the exit status."""
  try:
    text = render()
  except ValueError as error:
    print(error, file=sys.stderr)
    return 1
  return generated.write_or_check_generated(METADATA, text, argv,
                                       str(pathlib.Path(__file__).relative_to(ROOT)),
                                       f'{len(json.loads(text)["parameters"])} parameters')


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
