"""The launcher's hold on its job on a Flink cluster, through Flink's REST API.

Beam's Flink job server (the 2.62.0 one of ``deploy/flink/README.md``) does two things a
nightly job cannot live with. It does not pass a cancel on to Flink: a launcher stopped by
SIGTERM left its job running on the cluster. And Flink's restart strategy cannot tell a run's
own verdict from bad luck: a run over ``--max_failure_fraction`` (``RunFailed``) or one whose
output another run took over (``ClaimLost``) fails the same way on every attempt, yet the
fixed-delay strategy ran the whole job again 5 times (in Beam's default pipelined batch mode
one failure restarts every task), converting every image 6 times before the job failed.

When the launcher of a ``PortableRunner`` or ``FlinkRunner`` run knows the cluster's REST
address (``--flink_rest_address``, or a ``FlinkRunner``'s ``--flink_master``: :func:`rest_url`),
it:

- names the job ``imagerecords-<run id>`` (Beam's ``--job_name``; one given must name no
  other job running on the cluster), so as to find it among the cluster's jobs
  (``GET /jobs/overview``);
- watches it while it waits (:meth:`FlinkJob.watching`, every ``POLL_S``): once the job's
  exception history (``GET /jobs/<id>/exceptions``) holds a failure by design
  (``transforms.outputs.metadata.FAILURE_BY_DESIGN_LINE``), it cancels the job
  (``PATCH /jobs/<id>?mode=cancel``) and the run ends on that verdict, in one line, after one
  attempt;
- cancels it when SIGINT or SIGTERM stops the launcher (:meth:`FlinkJob.cancel`).

A failure that is bad luck (a TaskManager lost, a worker killed) is left to Flink's restart
strategy. The REST API not answering is bad luck too: the watch tries again at its next poll.
Without that address a stopped launcher's job still publishes nothing: it fails at its next
claim check (``transforms.outputs.claim``), after Flink's restarts.
"""

import contextlib
import json
import logging
import threading
import urllib.request
from typing import Iterator, List, Optional

from apache_beam.options.pipeline_options import (FlinkRunnerOptions, GoogleCloudOptions,
                                                  PipelineOptions, StandardOptions)

from pipeline.options import ConvertOptions
from transforms.outputs.metadata import FAILURE_BY_DESIGN_LINE

_LOG = logging.getLogger('imagerecords')
RUNNERS = ('PortableRunner', 'FlinkRunner')
POLL_S = 0.5  # Flink's restart delay here is 2 s (deploy/flink): one poll fits well inside it
REST_TIMEOUT_S = 5
# Flink's job states after which nothing runs again (JobStatus.isGloballyTerminalState)
TERMINAL_STATES = ('FINISHED', 'CANCELED', 'FAILED')


def rest_url(options: PipelineOptions) -> Optional[str]:
  """The base URL (``http://host:port``) of the Flink REST API of a ``PortableRunner`` or
  ``FlinkRunner`` run, or None: another runner, or no address known to the launcher.

  ``--flink_rest_address`` names it as the launcher reaches it. Without it, a ``FlinkRunner``
  run's ``--flink_master`` does (the launcher submits its jar there itself), unless it is one of
  Beam's placeholders (``[auto]``, ``[local]``, ``[collection]``). A ``PortableRunner`` run's
  ``--flink_master`` is not used: Beam's job server submits to it instead of its own
  ``--flink-master``, and the launcher's name of the cluster (``localhost:8081`` through a port
  forward) is rarely the job server's."""
  runner = options.view_as(StandardOptions).runner
  runner = getattr(runner, '__name__', runner)
  if runner not in RUNNERS:
    return None
  address = options.view_as(ConvertOptions).flink_rest_address
  if not address and runner == 'FlinkRunner':
    address = options.view_as(FlinkRunnerOptions).flink_master
  if not address or address.startswith('['):
    return None
  address = address.rstrip('/')
  return address if '://' in address else f'http://{address}'


class FlinkJob:
  """The launcher's job on the Flink cluster at ``url``, known by its ``name``. Its methods
  raise nothing: a REST API that does not answer is logged at DEBUG and tried again later."""

  def __init__(self, url: str, name: str):
    self.url = url
    self.name = name
    self._stop = threading.Event()

  @classmethod
  def of(cls, options: PipelineOptions, run_id: str) -> Optional['FlinkJob']:
    """The run's job on the cluster :func:`rest_url` names, or None.
    Sets ``--job_name`` to ``imagerecords-<run_id>`` unless the user gave one."""
    url = rest_url(options)
    if url is None:
      return None
    cloud = options.view_as(GoogleCloudOptions)
    if not cloud.job_name:
      cloud.job_name = f'imagerecords-{run_id}'.lower()
    return cls(url, cloud.job_name)

  def _request(self, path: str, method: str = 'GET'):
    request = urllib.request.Request(self.url + path, method=method)
    with urllib.request.urlopen(request, timeout=REST_TIMEOUT_S) as response:
      body = response.read()
    return json.loads(body) if body else None

  def job_id(self) -> Optional[str]:
    """The id of the newest job of this name that still runs (or restarts), or None."""
    try:
      jobs = self._request('/jobs/overview')['jobs']
    except (OSError, ValueError, KeyError) as error:  # URLError, a time-out: bad luck
      _LOG.debug('Flink REST API at %s: %s', self.url, error)
      return None
    ours = [job for job in jobs
            if job.get('name') == self.name and job.get('state') not in TERMINAL_STATES]
    return max(ours, key=lambda job: job.get('start-time', 0))['jid'] if ours else None

  def failures_by_design(self, job_id: str) -> List[str]:
    """The names of the failures by design in the job's exception history (oldest entries
    Flink keeps: ``web.exception-history-size``, 16 by default), e.g. ``['RunFailed']``."""
    try:
      history = self._request(f'/jobs/{job_id}/exceptions')
    except (OSError, ValueError) as error:
      _LOG.debug('Flink REST API at %s: %s', self.url, error)
      return []
    entries = history.get('exceptionHistory', {}).get('entries', [])
    texts = [entry.get('stacktrace', '') for entry in entries]
    return [found[1] for found in map(FAILURE_BY_DESIGN_LINE.search, texts) if found]

  def cancel(self, why: str) -> bool:
    """Cancels the job (if it still runs); True when Flink took the cancel. ``why`` is logged."""
    job_id = self.job_id()
    if job_id is None:
      return False
    try:
      self._request(f'/jobs/{job_id}?mode=cancel', method='PATCH')
    except (OSError, ValueError) as error:
      _LOG.warning('could not cancel Flink job %s (%s): %s', job_id, self.name, error)
      return False
    _LOG.info('cancelled Flink job %s (%s): %s', job_id, self.name, why)
    return True

  def _watch(self) -> None:
    while not self._stop.wait(POLL_S):
      job_id = self.job_id()
      found = job_id and self.failures_by_design(job_id)
      if found:
        self.cancel(f'it failed on {found[0]}, which a restart of the job cannot change')
        return

  @contextlib.contextmanager
  def watching(self) -> Iterator['FlinkJob']:
    """While the block runs (the launcher waits for the job), a daemon thread cancels the
    job once it fails by design; see the module docstring."""
    thread = threading.Thread(target=self._watch, name='flink-job-watch', daemon=True)
    thread.start()
    try:
      yield self
    finally:
      self._stop.set()
      thread.join(REST_TIMEOUT_S * 3)

