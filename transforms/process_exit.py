"""A quick exit for the processes of a local run: the launcher and its worker processes.

When a Python process exits, CPython clears every module and runs full garbage collections
over every object still alive. With Apache Beam imported that is hundreds of thousands of
objects, and those collections cost more than a second of CPU per process on these machines
(docs/benchmarks.md, "Start-up", "By phase"). The launcher of a local run waits for each of
its worker processes to exit, one after the other, and its user waits for the launcher.

``gc.freeze()`` moves every object alive into the collector's permanent generation, which
those last collections skip. It is called from an ``atexit`` handler, so that it runs once the
process's work is done; the other handlers (logging's flush, Beam's own) run as before.
Objects are still freed by their reference counts as the modules are
cleared, and files are still flushed and closed; what is skipped is only the collection of
reference cycles, whose memory the operating system takes back anyway, and the ``__del__`` of
objects caught in them, which Python never promises to run at exit.
"""

import atexit
import gc

_registered = False


def skip_final_collections() -> None:
  """Registers (once per process) an ``atexit`` handler that calls ``gc.freeze()``."""
  global _registered  # pylint: disable=global-statement
  if not _registered:
    atexit.register(gc.freeze)
    _registered = True
