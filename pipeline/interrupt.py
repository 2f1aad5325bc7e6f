"""Ctrl-C and SIGTERM in the launcher: an exception the run ends on cleanly, not a traceback.

A terminal's Ctrl-C sends SIGINT to the launcher's whole process group (its SDK workers too); a
scheduler (Airflow, Kubernetes, systemd) sends SIGTERM to the launcher, or to the group, and
SIGKILL some seconds later. Python's defaults are a ``KeyboardInterrupt`` traceback through
Beam's frames for the first and an immediate death for the second, which leaves the worker
processes running until their channels time out, the claim held until its lease lapses, and the
run's temporary log behind.

While :func:`signals_interrupt` is active, the first SIGINT or SIGTERM stops the launcher's
child processes (the local runner's SDK workers: SIGTERM, then SIGKILL after
``CHILDREN_GRACE_S``) and raises :class:`Interrupted` in the main thread, wherever it is. Beam's
runner, waiting there for a stage, then closes its worker handlers (``FnApiRunner.run_stages``'
``finally``), which wait for each worker process to end: without the first step they wait until
the worker's own gRPC channels time out (80 s measured). ``pipeline.run`` then reports the
interruption in one line, cleans up and exits ``128 + signal`` (130, 143), as a shell does. A
job that a runner runs elsewhere (Flink, Dataflow) is cancelled first (:func:`cancel_submitted`).
A second signal during that clean-up ends the process at once with the same status.
"""

import contextlib
import logging
import os
import signal
import threading
from typing import Iterator, Optional

import psutil
from apache_beam.runners.runner import PipelineState

_LOG = logging.getLogger('imagerecords')
SIGNALS = (signal.SIGINT, signal.SIGTERM)
CHILDREN_GRACE_S = 3.0


class Interrupted(BaseException):
  """SIGINT or SIGTERM reached the launcher. A ``BaseException``, as ``KeyboardInterrupt``: no
  step's ``except Exception`` may take it for a failed image or a failed run."""

  def __init__(self, signum: int):
    super().__init__(signal.Signals(signum).name)
    self.signum = signum

  @property
  def name(self) -> str:
    """``SIGINT`` or ``SIGTERM``."""
    return signal.Signals(self.signum).name

  @property
  def exit_status(self) -> int:
    """128 + the signal's number, as a shell reports a process a signal ended: 130, 143."""
    return 128 + self.signum


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
  """While active, SIGINT and SIGTERM raise :class:`Interrupted` in the main thread, once; a
  second one exits the process at once (``os._exit``, status 128 + signal). Outside the main
  thread (where Python cannot set handlers) it changes nothing. The earlier handlers come
  back on exit."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def handler(signum, unused_frame):
    if _received:
      _LOG.error('%s again: stopping now', signal.Signals(signum).name)
      logging.shutdown()
      os._exit(128 + signum)  # pylint: disable=protected-access
    _received.append(signum)
    stop_children()
    raise Interrupted(signum)

  previous = {signum: signal.signal(signum, handler) for signum in SIGNALS}
  try:
    yield
  finally:
    for signum, earlier in previous.items():
      signal.signal(signum, earlier)
    _received.clear()


_received = []  # the signal :func:`signals_interrupt` took, while it is active


def interruption_behind(error: BaseException) -> Optional[Interrupted]:
  """The :class:`Interrupted` that ``error`` stands for, or None: Beam's in-process runner
  re-raises an exception of a step as a ``RuntimeError`` naming it, so a signal that arrived
  while a step ran reaches the launcher as that step's error. Any error while a signal taken by
  :func:`signals_interrupt` is pending is that signal's."""
  chain = error
  while chain is not None:
    if isinstance(chain, Interrupted):
      return chain
    chain = chain.__cause__ or chain.__context__
  return Interrupted(_received[0]) if _received else None


def cancel_submitted(pipeline, flink=None) -> None:
  """Asks the runner to cancel the job of ``pipeline`` (a ``beam.Pipeline`` or None) when it
  runs elsewhere and the launcher was waiting for it (Flink through Beam's job server,
  Dataflow): Beam sets ``Pipeline.result`` once the job is submitted, before waiting. Beam's
  Flink job server does not pass the cancel on: ``flink`` (a ``pipeline.flink_job.FlinkJob``,
  with ``--flink_rest_address``) cancels the job on the cluster itself. Without it, a job left
  running fails at its next claim check (``transforms.outputs.claim.check``: this launcher
  released the claim) and publishes nothing. Local runners return no result before the run
  ends: nothing to do."""
  if flink is not None:
    flink.cancel('the launcher was interrupted')
  result = getattr(pipeline, 'result', None)
  if result is None or PipelineState.is_terminal(result.state):
    return
  try:
    result.cancel()
    _LOG.info('cancelled the submitted job (%s)', result.state)
  except Exception as error:  # pylint: disable=broad-except
    # any runner's client error (gRPC, HTTP): the interruption is reported all the same, and
    # the job, if it runs on, cannot publish: its claim is released (transforms.outputs.claim)
    _LOG.warning('could not cancel the submitted job: %s', error)


def stop_children(grace_s: float = CHILDREN_GRACE_S) -> int:
  """Ends every descendant process of this one (SIGTERM, then SIGKILL to those alive after
  ``grace_s`` seconds); returns how many there were. Processes that end meanwhile are skipped."""
  children = psutil.Process().children(recursive=True)
  for child in children:
    try:
      child.terminate()
    except psutil.NoSuchProcess:
      pass
  _, alive = psutil.wait_procs(children, timeout=grace_s)
  for child in alive:
    try:
      child.kill()
    except psutil.NoSuchProcess:
      pass
  return len(children)
