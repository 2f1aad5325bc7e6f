"""Airflow DAG: the imagerecords job every night on Dataflow, one dated run per logical date.

One task starts the Flex Template that ``deploy/dataflow/launch.sh build`` made, with the run's
logical date as the job's ``--run_date`` (``{{ ds }}``, YYYY-MM-DD), and waits for the Dataflow
job. The job stages the run and publishes it to ``OUTPUT/dt=YYYY-MM-DD/`` (then ``LATEST``) as
its own last step, so the task succeeds exactly when the run was published. It fails when the
run failed (too many failed images, empty input, a vanished class with ``--strict_labels``: the
job ends FAILED, the reason in its error log) or did not start (a bad parameter, or the date is
already published: the launch fails, the reason in the launcher's log). No retries: a failed
run is staged, not published, and clearing the task reruns the date cleanly; a backfill of an
older date publishes that date without moving ``LATEST`` back.

Copy this file into the DAGs folder. Needs ``apache-airflow-providers-google`` and
``apache-airflow-providers-apache-beam`` (the Google provider's Dataflow hooks import it), a
Google Cloud connection (``google_cloud_default``), and these Airflow Variables, read when the
task runs (Admin > Variables, or ``airflow variables set NAME VALUE``):

- ``imagerecords_project``, ``imagerecords_region``: where the job runs;
- ``imagerecords_template``: the template spec (``launch.sh build`` prints it),
  ``gs://BUCKET/templates/imagerecords-0.1.0-beam2.77.0.json``;
- ``imagerecords_image``: the template's image (the workers run it too);
- ``imagerecords_bucket``: bucket name for staging and temp files;
- ``imagerecords_input_dir``, ``imagerecords_output_dir``: ``gs://`` folders.
"""

import datetime

try:  # Airflow 3
  from airflow.sdk import DAG
except ImportError:  # Airflow 2
  from airflow import DAG
from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator

with DAG(
    dag_id='imagerecords_nightly',
    description='Images -> sharded TFRecords, one dated run per night (Dataflow Flex Template)',
    schedule='30 2 * * *',
    start_date=datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    max_active_runs=1,  # nights never overlap
    default_args={'retries': 0},
    tags=['imagerecords'],
) as dag:
  DataflowStartFlexTemplateOperator(
      task_id='convert',
      project_id='{{ var.value.imagerecords_project }}',
      location='{{ var.value.imagerecords_region }}',
      body={
          'launchParameter': {
              'jobName': 'imagerecords-{{ ds_nodash }}',
              'containerSpecGcsPath': '{{ var.value.imagerecords_template }}',
              'parameters': {
                  'input_dir': '{{ var.value.imagerecords_input_dir }}',
                  'output_dir': '{{ var.value.imagerecords_output_dir }}',
                  'run_date': '{{ ds }}',
                  'number_of_worker_harness_threads': '4',
              },
              'environment': {  # FlexTemplateRuntimeEnvironment
                  'sdkContainerImage': '{{ var.value.imagerecords_image }}',
                  'diskSizeGb': 50,
                  'machineType': 'n2-standard-16',
                  'maxWorkers': 20,
                  'stagingLocation': 'gs://{{ var.value.imagerecords_bucket }}/staging',
                  'tempLocation': 'gs://{{ var.value.imagerecords_bucket }}/temp',
              },
          },
      },
      wait_until_finished=True,
  )
