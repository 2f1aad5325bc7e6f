"""Runners that fake a remote service's answer at Beam's runner boundary, for launcher tests.

Each is named on the command line as ``--runner=tests.fake_runners.NAME`` (Beam imports a
runner given by its dotted path) and runs nothing.
"""

from apache_beam.runners.dataflow.dataflow_runner import DataflowPipelineResult
from apache_beam.runners.runner import PipelineRunner


class TemplateLaunchRunner(PipelineRunner):
  """What ``DataflowRunner`` answers under ``--template_location`` (the Dataflow Flex Template
  launcher passes it): the job's description is written for the service to start later, no
  job exists yet, and the result is Beam's own ``DataflowPipelineResult`` without a job, whose
  ``state`` is ``DONE`` (Beam 2.77, ``DataflowRunner.run_pipeline``: ``create_job`` returns
  None when ``template_location`` is set). Here nothing is written and nothing is called."""

  def run_pipeline(self, pipeline, options):
    del pipeline  # the service would start it later; here it never runs
    return DataflowPipelineResult(None, self, options)
