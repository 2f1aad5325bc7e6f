"""One progress display for the whole job on the local runner: a live bar on a terminal, a
plain line every 10 s otherwise.

The conversion's DoFn instances, in whichever worker process, leave their counts in a local
folder (``transforms.image.progress``); while the pipeline runs, a thread of the launcher adds them
up and shows the phase, images done of the total (known once the listing, labelling and
de-duplication have ended), the percentage, the rate (over the last :data:`RATE_WINDOW_S`
seconds, so start-up and a burst do not skew it) and the time left. The phases follow from
the counts: ``listing`` (no total yet), ``converting``, then ``writing shards and reports``
(every image handled: the shards, statistics, manifest and publication run on).

* standard error is a terminal: a tqdm bar with one clock from the job's start, redrawn twice
  a second, cleared for any log line that comes meanwhile and redrawn after it;
* otherwise (a file, a pipe, a scheduler's log): one INFO line every :data:`LINE_EVERY_S`
  seconds, e.g. ``converted 1,234 of 4,378 images (28%), 812 images/s, 4 s left, 0 failed``.

On Dataflow and Flink the same counts are Beam metrics in the runner's UI (see
``transforms.image.progress``); nothing is shown here.
"""

import collections
import contextlib
import logging
import shutil
import tempfile
import threading
import time
from typing import Iterator, Optional, TextIO

from tqdm import tqdm

from transforms.image.progress import Progress, read_progress

_LOG = logging.getLogger('imagerecords')

LINE_EVERY_S = 10.0
"""Seconds between two plain progress lines (standard error not a terminal)."""
BAR_EVERY_S = 0.5
"""Seconds between two reads of the counts for the live bar."""
RATE_WINDOW_S = 10.0
"""The rate is images handled over the last this many seconds (at least 1 s of them)."""
LISTING = 'listing and labelling the input'
CONVERTING = 'converting'
WRITING = 'writing shards and reports'

def _duration(seconds: float) -> str:
  """'4 s', '3 min 05 s', '2 h 01 min'."""
  seconds = int(round(seconds))
  if seconds < 60:
    return f'{seconds} s'
  if seconds < 3600:
    return f'{seconds // 60} min {seconds % 60:02d} s'
  return f'{seconds // 3600} h {seconds % 3600 // 60:02d} min'


def phase(progress: Progress) -> str:
  """LISTING (no total yet), CONVERTING, or WRITING (every image converted or failed)."""
  if progress.total is None:
    return LISTING
  return WRITING if progress.done + progress.failed >= progress.total else CONVERTING


def describe(progress: Progress, rate: Optional[float]) -> str:
  """The plain line for ``progress`` at ``rate`` images/s (None: nothing converted yet)."""
  failed = f', {progress.failed:,} failed'
  if progress.total is None:
    return (f'converted {progress.done:,} images{failed} (listing and labelling the input; '
            'the total comes when they end)')
  if phase(progress) == WRITING:
    return (f'{WRITING}: all {progress.total:,} images converted or failed '
            f'({progress.failed:,} failed)')
  handled = progress.done + progress.failed
  percent = 100. * handled / progress.total if progress.total else 100.
  line = f'converted {progress.done:,} of {progress.total:,} images ({percent:.0f}%)'
  if rate:
    line += f', {rate:,.0f} images/s, {_time_left(progress, rate)} left'
  return line + failed


def _time_left(progress: Progress, rate: float) -> str:
  """The images still to handle at ``rate`` images/s, as a duration ('4 s')."""
  return _duration(max(progress.total - progress.done - progress.failed, 0) / rate)


class _Meter:
  """Turns successive counts into a rate: images handled per second over the last
  RATE_WINDOW_S seconds (None until a second of conversion has been seen)."""

  def __init__(self):
    self._seen = collections.deque()  # (time, images handled), oldest first

  def rate(self, progress: Progress) -> Optional[float]:
    now, handled = time.monotonic(), progress.done + progress.failed
    if not handled:
      return None
    self._seen.append((now, handled))
    while len(self._seen) > 2 and now - self._seen[1][0] >= RATE_WINDOW_S:
      self._seen.popleft()
    first_time, first_count = self._seen[0]
    elapsed = now - first_time
    return (handled - first_count) / elapsed if elapsed >= 1.0 else None


_BAR_FORMATS = {
    LISTING: '{desc} [{elapsed}]',
    CONVERTING: '{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]',
    WRITING: '{desc} [{elapsed}{postfix}]',
}
"""tqdm's bar per phase; ``{elapsed}`` counts from the job's start in each."""


def _postfix(progress: Progress, rate: Optional[float]) -> str:
  """The bar's end: the rate over the window and the time left, the failures."""
  parts = []
  if rate and phase(progress) == CONVERTING:
    parts.append(f'{rate:,.0f} img/s, {_time_left(progress, rate)} left')
  if progress.failed:
    parts.append(f'{progress.failed:,} failed')
  return ', '.join(parts)


class _ClearBar(logging.Filter):
  """On the console handler while the bar shows: clears the bar before a log line is
  written (it is redrawn at its next refresh), so that the two never share a line."""

  def __init__(self, bar: tqdm, lock: threading.Lock):
    super().__init__()
    self._bar, self._lock = bar, lock

  def filter(self, record):
    with self._lock:
      self._bar.clear()
    return True


@contextlib.contextmanager
def show_progress(stream: Optional[TextIO], console: Optional[logging.Handler] = None
                  ) -> Iterator[str]:
  """While the block runs, shows the job's progress on ``stream`` (a tqdm bar if it is a
  terminal, else INFO lines every 10 s through the ``imagerecords`` logger); yields the local
  folder to pass to the conversion as ``progress_dir``, removed when the block ends.

  ``console``: the logging handler that writes to ``stream``, cleared around while the bar
  shows. ``stream`` None: no display (the folder is still made and removed).
  """
  progress_dir = tempfile.mkdtemp(prefix='imagerecords-progress-')
  done = threading.Event()
  interactive = stream is not None and stream.isatty()
  lock = threading.Lock()
  bar = tqdm(total=None, unit='img', file=stream, dynamic_ncols=True, leave=False,
             desc=LISTING, bar_format=_BAR_FORMATS[LISTING], disable=not interactive,
             mininterval=BAR_EVERY_S)
  clear = _ClearBar(bar, lock) if interactive and console else None
  if clear:
    console.addFilter(clear)

  def watch():
    meter = _Meter()
    last_line, last_phase = time.monotonic(), LISTING
    while not done.wait(BAR_EVERY_S if interactive else 1.0):
      progress = read_progress(progress_dir)
      rate = meter.rate(progress)
      now_phase = phase(progress)
      if interactive:
        handled = progress.done + progress.failed
        with lock:
          if progress.total is not None and bar.total != progress.total:
            bar.total = progress.total
          if handled > bar.n:
            bar.update(handled - bar.n)
          bar.set_description_str(now_phase, refresh=False)
          bar.bar_format = _BAR_FORMATS[now_phase]
          bar.set_postfix_str(_postfix(progress, rate), refresh=False)
          bar.refresh()
      elif stream is not None and (time.monotonic() - last_line >= LINE_EVERY_S or (
          now_phase != last_phase and now_phase == WRITING)):
        last_line = time.monotonic()
        _LOG.info('%s', describe(progress, rate))
      last_phase = now_phase

  thread = threading.Thread(target=watch, name='imagerecords-progress', daemon=True)
  thread.start()
  try:
    yield progress_dir
  finally:
    done.set()
    thread.join()
    if clear:
      console.removeFilter(clear)
    with lock:
      bar.close()
    shutil.rmtree(progress_dir, ignore_errors=True)
