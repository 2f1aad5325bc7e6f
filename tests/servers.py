"""Servers a test needs (a Beam job service, a worker pool, an S3 endpoint), started on
loopback as child processes and stopped by their process ids."""

import pathlib
import socket
import subprocess
import sys
import time
from typing import List

import pytest

from deploy.flink.local_cluster import free_ports  # noqa: F401  (the tests' servers share it)

START_TIMEOUT_S = 60


def tail(path: pathlib.Path, chars: int = 4000) -> str:
  return path.read_text(errors='replace')[-chars:] if path.exists() else '(no log)'


def wait_for_port(port: int, process: subprocess.Popen, log: pathlib.Path) -> None:
  """Returns once ``localhost:port`` accepts connections; fails the test when the process dies
  or START_TIMEOUT_S passes first."""
  deadline = time.monotonic() + START_TIMEOUT_S
  while time.monotonic() < deadline:
    if process.poll() is not None:
      pytest.fail(f'{process.args} exited with {process.returncode}:\n{tail(log)}')
    try:
      with socket.create_connection(('localhost', port), timeout=1):
        return
    except OSError:
      time.sleep(0.2)
  pytest.fail(f'{process.args} did not listen on port {port} within {START_TIMEOUT_S} s:\n'
              f'{tail(log)}')


def stop(process: subprocess.Popen, first_signal: int) -> None:
  """Sends ``first_signal`` to the process (by its id), then SIGKILL if it is still there
  after 10 s."""
  if process.poll() is None:
    process.send_signal(first_signal)
    try:
      process.wait(timeout=10)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait(timeout=10)


def spawn(module_args, cwd, env, log_path) -> subprocess.Popen:
  """``python -m MODULE ARGS...`` in ``cwd``, its output in ``log_path``."""
  with open(log_path, 'wb') as log:
    return subprocess.Popen([sys.executable, '-m', *module_args], cwd=cwd, env=env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
