"""Shared helpers of the benchmarks: data sets of real photos, measured runs, tables, JSON.

Every benchmark row runs in its own process, started by :class:`Rows` (or, for the Beam job,
:func:`run_measured`), so that each row's peak memory is its own: the parent polls the row's
whole process tree (the process and every descendant, e.g. Beam's SDK workers or a
``multiprocessing.Pool``) every 50 ms and keeps the largest sum of their resident set sizes
(``/proc/PID/statm``). Pages shared between a parent and its forked children are counted once per
process, so the figure is an upper bound of the memory the row really holds.

Conventions of every table:

* ``images/s``: images converted (or read) per second of wall time, start-up excluded unless a
  row says otherwise;
* ``ms/img/core``: wall milliseconds per image times the cores the row keeps busy
  (1 for a single-threaded loop, ``workers`` for a process pool or the Beam job, ``nproc`` for a
  multi-threaded ``tf.data`` pipeline): the cost of one image on one core;
* ``CPU ms/img``: CPU time (user + system, all threads and processes of the row) per image:
  the work, whatever else runs on the machine; the ratios of wall rates can drift when other
  jobs share the cores, these do much less;
* ``cores busy``: CPU ms/img times images/s: how many cores the row kept busy on average (at
  most ``nproc``); a row below its ``cores`` was starved, by its own structure or by other jobs;
* ``peak RSS``: MiB, as described above.
"""

import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'
_PAGE = os.sysconf('SC_PAGE_SIZE')
_POLL_S = 0.05


def shared_data(name: str) -> pathlib.Path:
  """``../shared/data/NAME``; exits with a message when it is missing."""
  path = SHARED_DATA / name
  if not path.is_dir():
    sys.exit(f'{path} is missing: the benchmarks read the real photos in ../shared/data')
  return path


def image_files(root: pathlib.Path, limit: Optional[int] = None) -> List[pathlib.Path]:
  """The JPEG files under ``root`` (``.jpg``/``.jpeg``, any case), sorted; the first ``limit``."""
  files = sorted(p for p in root.rglob('*')
                 if p.is_file() and p.suffix.lower() in ('.jpg', '.jpeg'))
  return files[:limit] if limit else files


FOLLOW_LINKS = '--follow_external_symlinks'


def one_class_flags(repo: Optional[pathlib.Path] = None) -> List[str]:
  """``['--allow_single_class']`` where the job of ``repo`` (None: this checkout) has that
  flag, else []: a bench's first ``--limit`` photos by path are often of one class (all
  ``train/ants/`` of hymenoptera), which the job refuses to publish without it; older
  checkouts (a before/after's baseline) neither have the flag nor need it."""
  options = pathlib.Path(repo or REPO) / 'pipeline' / 'options.py'
  return ['--allow_single_class'] if "'--allow_single_class'" in options.read_text() else []
"""The job's flag that takes the links of :func:`repeat_tree` (they point outside the input
folder, which the job otherwise reports instead of reading); every bench run passes it."""


def repeat_tree(files: Sequence[pathlib.Path], root: pathlib.Path, times: int,
                dest: pathlib.Path) -> List[pathlib.Path]:
  """Symlinks each of ``files`` (under ``root``) ``times`` times into ``dest``, same layout.

  Copy ``k`` of ``a/b/x.jpg`` is ``dest/a/b/x__rK.jpg``: distinct file names (so labels and
  split folders are kept and no two inputs share a path), the same real photos. Returns the
  links, sorted. The job reads them with :data:`FOLLOW_LINKS`.
  """
  links = []
  for path in files:
    rel = path.relative_to(root)
    for k in range(times):
      link = dest / rel.parent / f'{rel.stem}__r{k}{rel.suffix}'
      link.parent.mkdir(parents=True, exist_ok=True)
      link.symlink_to(path.resolve())
      links.append(link)
  return sorted(links)


def process_tree(pid: int) -> List[int]:
  """``pid`` and all its descendants (through ``/proc/PID/task/TID/children``)."""
  pids, todo = [], [pid]
  while todo:
    current = todo.pop()
    pids.append(current)
    try:
      for task in os.listdir(f'/proc/{current}/task'):
        with open(f'/proc/{current}/task/{task}/children') as handle:
          todo.extend(int(child) for child in handle.read().split())
    except OSError:
      continue
  return pids


def _tree_rss(pid: int) -> int:
  """Sum of the resident set sizes of ``pid``'s process tree, in bytes."""
  total = 0
  for member in process_tree(pid):
    try:
      with open(f'/proc/{member}/statm') as handle:
        total += int(handle.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
      pass
  return total


def run_measured(cmd: Sequence[str], env: Optional[Dict[str, str]] = None,
                 cwd: Optional[str] = None, cpu: bool = False) -> Tuple:
  """Runs ``cmd``; returns (exit status, wall seconds, peak tree RSS in bytes, stdout+stderr),
  and with ``cpu`` also the CPU seconds (user + system) of ``cmd`` and of every descendant it
  waited for (``RUSAGE_CHILDREN``; so the caller must run nothing else meanwhile)."""
  import resource  # pylint: disable=import-outside-toplevel
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  env = dict(os.environ if env is None else env)
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  with tempfile.TemporaryFile() as log:
    start = time.perf_counter()
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                               cwd=cwd or str(REPO))
    peak = 0
    while process.poll() is None:
      peak = max(peak, _tree_rss(process.pid))
      time.sleep(_POLL_S)
    wall = time.perf_counter() - start
    log.seek(0)
    output = log.read().decode('utf-8', 'replace')
  if not cpu:
    return process.returncode, wall, peak, output
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  return process.returncode, wall, peak, output, seconds


class Rows:
  """Runs a benchmark's rows: each in a fresh child process (the default), or all in this one.

  Args:
    script: the benchmark script; a child runs ``python SCRIPT --_row=NAME --_args=FILE`` (the
      row's keyword arguments as JSON) and prints the row's result as its last line of JSON (see
      :func:`child_main`).
    rows: row name -> function returning a JSON-able dict; its timing is measured inside.
    in_process: run the functions here instead (quick checks: one interpreter start-up, but
      every row's ``peak_rss_mib`` is then this process's peak so far).
  """

  def __init__(self, script: str, rows: Dict[str, callable], in_process: bool = False):
    self._script = script
    self._rows = rows
    self._in_process = in_process

  def run(self, row: str, args: dict) -> dict:
    """The row's result dict with ``peak_rss_mib`` added. Raises RuntimeError if it failed."""
    if self._in_process:
      import resource  # pylint: disable=import-outside-toplevel
      result = self._rows[row](**args)
      result['peak_rss_mib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
      return result
    with tempfile.NamedTemporaryFile('w', suffix='.json') as arguments:
      json.dump(args, arguments)  # a file: thousands of paths do not fit in a command line
      arguments.flush()
      cmd = [sys.executable, self._script, f'--_row={row}', f'--_args={arguments.name}']
      status, _, peak, output = run_measured(cmd)
    lines = [line for line in output.splitlines() if line.startswith('{')]
    if status != 0 or not lines:
      raise RuntimeError(f'row {row} failed (exit {status}):\n{output[-3000:]}')
    result = json.loads(lines[-1])
    result['peak_rss_mib'] = peak / 2**20
    return result


def child_main(rows: Dict[str, callable]) -> bool:
  """In a row's child process (``--_row`` given): runs the row, prints its JSON; True.

  Returns False in the parent (no ``--_row``), which then runs the benchmark itself.
  """
  row = next((a.split('=', 1)[1] for a in sys.argv[1:] if a.startswith('--_row=')), None)
  if row is None:
    return False
  path = next(a.split('=', 1)[1] for a in sys.argv[1:] if a.startswith('--_args='))
  args = json.loads(pathlib.Path(path).read_text())
  print(json.dumps(rows[row](**args)), flush=True)
  return True


def machine() -> dict:
  """nproc, CPU model, Python, load average (1, 5, 15 min) and the UTC time, now."""
  model = platform.processor() or platform.machine()
  try:
    for line in subprocess.run(['lscpu'], capture_output=True, text=True).stdout.splitlines():
      if line.startswith('Model name:'):
        model = line.split(':', 1)[1].strip()
        break
  except OSError:
    pass
  return {
      'nproc': os.cpu_count(),
      'cpu_model': model,
      'python': platform.python_version(),
      'load_average': [round(x, 2) for x in os.getloadavg()],
      'utc': time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime()),
  }


def format_table(columns: Sequence[str], rows: Sequence[Sequence]) -> str:
  """A Markdown table; floats get a sensible number of digits."""
  def cell(value):
    if value is None:
      return '-'
    if isinstance(value, float):
      return f'{value:,.0f}' if abs(value) >= 100 else f'{value:.3g}' if abs(value) < 1 else (
          f'{value:.2f}' if abs(value) < 10 else f'{value:.1f}')
    return str(value)
  lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  lines += ['| ' + ' | '.join(cell(v) for v in row) + ' |' for row in rows]
  return '\n'.join(lines)


def verdict(value: Optional[float], target: float) -> str:
  """'met' or 'NOT met' for ``value >= target``; 'not measured' for None."""
  if value is None:
    return 'not measured'
  return 'met' if value >= target else 'NOT met'


def write_json(path: Optional[str], report: dict) -> None:
  """Writes ``report`` as indented JSON to ``path`` (nothing when ``path`` is None)."""
  if path:
    pathlib.Path(path).write_text(json.dumps(report, indent=2) + '\n')


RATE_COLUMNS = ('row', 'images', 'seconds', 'images/s', 'ms/img/core', 'CPU ms/img',
                'cores busy', 'peak RSS MiB')


def print_machine(report: dict) -> None:
  """Prints the machine line of a report: cores, CPU model, load average before and after."""
  print(f"machine: {report['machine_before']['nproc']} cores, "
        f"{report['machine_before']['cpu_model']}; load average before "
        f"{report['machine_before']['load_average']}, after "
        f"{report['machine_after']['load_average']}")


def rate_row(name: str, result: dict, note: str = '') -> dict:
  """A row of :func:`rate_table` from a measured ``result`` (images, seconds, cpu_seconds,
  cores, and peak_rss_mib when known)."""
  rate = result['images'] / result['seconds']
  return {'row': name, 'images': result['images'], 'seconds': result['seconds'],
          'images_per_s': rate, 'ms_per_image_per_core': 1000 * result['cores'] / rate,
          'cpu_ms_per_image': 1000 * result['cpu_seconds'] / result['images'],
          'cores': result['cores'], 'peak_rss_mib': result.get('peak_rss_mib'), 'note': note}


def steady_state(points: Sequence[Tuple[int, float, float]]
                 ) -> Tuple[Optional[float], Optional[float], Optional[float], bool]:
  """The line through the smallest and largest of a job's (images, wall seconds, CPU seconds)
  ``points``: (its rate, images/s (the slope); its start-up, s (the intercept); CPU ms per extra
  image; whether the load changed between the two runs), the first three None when the points
  give no slope. The load changed when the slope keeps more cores busy than the machine has
  (the smaller run slowed more): its wall rate is then no rate, its CPU slope still a cost."""
  (n1, t1, c1), (n2, t2, c2) = min(points), max(points)
  if n2 <= n1 or t2 <= t1:
    return None, None, None, False
  rate = (n2 - n1) / (t2 - t1)
  return (rate, t1 - n1 / rate, 1000 * (c2 - c1) / (n2 - n1),
          (c2 - c1) / (t2 - t1) > 1.05 * os.cpu_count())


def rate_table(rows: Sequence[dict], extra: Sequence[str] = ()) -> str:
  """The table of measured rows (RATE_COLUMNS, then the ``extra`` keys of each row);
  'cores busy' is CPU time over wall time, how much of the machine a row really had."""
  return format_table(RATE_COLUMNS + tuple(extra), [
      (r['row'], r['images'], r['seconds'], r['images_per_s'], r['ms_per_image_per_core'],
       r['cpu_ms_per_image'], r['cpu_ms_per_image'] * r['images_per_s'] / 1000,
       r['peak_rss_mib'], *(r[key] for key in extra)) for r in rows])


def finish_report(report: dict, targets: Sequence[tuple], json_path: Optional[str]) -> None:
  """Prints the targets table ((measure, value, target, verdict) rows), adds it to ``report``
  and writes ``report`` as JSON to ``json_path`` when one is given."""
  print(format_table(('target', 'measured', 'wanted', 'verdict'), targets))
  report['targets'] = [dict(zip(('measure', 'value', 'target', 'verdict'), t))
                       for t in targets]
  write_json(json_path, report)


def add_row_flags(parser) -> None:
  """The flags of the benchmarks that run rows (writer.py, reader.py): --json, --in_process."""
  parser.add_argument('--json', default=None, help='Also write the results to this JSON file.')
  parser.add_argument('--in_process', action='store_true',
                      help='Run every row in this process (quick checks; peak RSS is then '
                      'cumulative). Default: each row in a fresh process.')


def add_job_flags(parser, name: str = '--flags') -> None:
  """The option of the benchmarks that run the whole job (memory.py, million.py, writer.py):
  more flags for every run of it, one string split as a shell would (e.g. "--stats=false")."""
  parser.add_argument(name, default='',
                      help='More flags for every run of the job, one string split as a shell '
                      'would (e.g. "--stats=false").')


def tiny_imagenet_labels(source: pathlib.Path) -> Dict[str, str]:
  """Tiny ImageNet's validation labels: file name -> WordNet id (``val_annotations.txt`` of
  ``source``, tab-separated, the file name and its wnid first)."""
  return dict(line.split('\t')[:2] for line in
              (source / 'val_annotations.txt').read_text().splitlines() if line)


def distinct_copies(dest: pathlib.Path, copies: int, limit: Optional[int] = None) -> int:
  """Writes ``copies`` distinct files of each of Tiny ImageNet's 1,000 validation photos (64x64
  JPEGs, ``../shared/data/tiny_imagenet_val``) into ``dest/<wnid>/<stem>_<copy>.JPEG``, 200
  class folders; returns the number of files.

  Copy ``k`` of a photo is its JPEG with a comment segment (``COM``, marker 0xFFFE) naming the
  copy inserted after the start-of-image marker: the bytes (and SHA-256) differ, the pixels do
  not, so every file is a distinct input (no byte-identical duplicates) that costs the codec
  what the photo costs. A file set already complete (the same count) is kept: writing a million
  files takes minutes. ``limit``: the first ``limit`` photos only (by file name; smoke tests).
  """
  source = shared_data('tiny_imagenet_val')
  classes = tiny_imagenet_labels(source)
  photos = [(classes[path.name], path.stem, path.read_bytes())
            for path in sorted((source / 'images').iterdir()) if path.name in classes][:limit]
  marker = dest.parent / f'{dest.name}.complete'  # beside it: not one of the files listed
  if marker.exists():
    return len(photos) * copies
  for wnid in {wnid for wnid, _, _ in photos}:
    (dest / wnid).mkdir(parents=True, exist_ok=True)
  for copy in range(copies):
    for wnid, stem, data in photos:
      if data[:2] != b'\xff\xd8':
        raise ValueError(f'{stem}: not a JPEG')
      comment = f'imagerecords bench copy {copy}'.encode('ascii')
      segment = b'\xff\xfe' + (len(comment) + 2).to_bytes(2, 'big') + comment
      (dest / wnid / f'{stem}_{copy}.JPEG').write_bytes(data[:2] + segment + data[2:])
  marker.touch()
  return len(photos) * copies
