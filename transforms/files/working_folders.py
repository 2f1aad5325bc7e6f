"""The working folders a run makes inside its output directory, each removed when its step
ends (and all of them by ``pipeline.outputs.remove_working_folders`` after a failed run).

Named apart from ``imagerecords.contract.STAGING_DIR`` (``ROOT/_staging/dt=DATE/``: a dated run
before it is published, a folder of the output's layout): these are never part of an output,
and no reader or glob of shards ever sees them (their names start with ``.``).
"""

WORKING_FOLDER_PREFIX = '.staging-'
"""What every working folder's name starts with (``transforms.outputs.authorship`` counts such
an entry as the job's own)."""

WRITER_FOLDER = WORKING_FOLDER_PREFIX + 'write'
"""The writer's staging files and their ``.keys`` (``transforms.outputs.staging``); deleted once
every shard is written."""

SORTED_LINES_FOLDER = WORKING_FOLDER_PREFIX + 'sorted'
"""The runs of an external merge (``transforms.files.sorted_lines``); deleted once its file is
written."""

TFT_FOLDER = WORKING_FOLDER_PREFIX + 'tft'
"""tensorflow-transform's temporary files (``--stats=tft``,
``transforms.analysis.statistics_tft``); deleted when the analysis ends."""

WORKING_FOLDERS = (WRITER_FOLDER, TFT_FOLDER, SORTED_LINES_FOLDER)
"""Every working folder, in the order a failed run's clean-up removes them."""


def is_working_folder(name: str) -> bool:
  """True for the base name of a working folder (one of ``WORKING_FOLDERS``, or a future one
  with the same prefix)."""
  return name.startswith(WORKING_FOLDER_PREFIX)
