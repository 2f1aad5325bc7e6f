#!/usr/bin/env bash
# One nightly run of the imagerecords job, for cron (deploy/schedule/crontab runs it under
# `flock -n`, so two nights never overlap):
#
#   INPUT_DIR=/data/images OUTPUT_DIR=/data/records deploy/schedule/nightly.sh [job flags...]
#
# Runs `python -m pipeline.run --run_date=<today, UTC>`: the run is staged under
# OUTPUT_DIR/_staging/ and published to OUTPUT_DIR/dt=YYYY-MM-DD/ (then OUTPUT_DIR/LATEST) only
# when it succeeded; the previous published run pins the class ids. Extra arguments go to the
# job unchanged (e.g. --runner=... for a cluster, --max_failure_fraction=0.01).
#
# Silent on success; on failure it prints one line (exit status, meaning, the job's reason) to
# stderr, which cron mails to MAILTO. The full log of each run is LOG_DIR/nightly-DATE.log.
#
# Exit status (the job's): 0 published; 1 the run failed (alert: too many failed images, empty
# input, a vanished class with --strict_labels, a pipeline error); 2 nothing ran (a bad flag,
# the date is already published, an unreadable input). `flock -n -E 2` adds: 2 when the
# previous run still holds the lock.
#
# Variables: INPUT_DIR, OUTPUT_DIR (required); RUN_DATE (default: today's UTC date, YYYY-MM-DD);
# PYTHON (default: the repository's .venv); LOG_DIR (default: $OUTPUT_DIR/../imagerecords-logs
# for local output, else ./logs in the repository).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
: "${INPUT_DIR:?set INPUT_DIR (the image folder: local path, gs:// or s3://)}"
: "${OUTPUT_DIR:?set OUTPUT_DIR (the root of the dated runs)}"
RUN_DATE="${RUN_DATE:-$(date -u +%F)}"
PYTHON="${PYTHON:-$repo/.venv/bin/python}"
if [[ -z "${LOG_DIR:-}" ]]; then
  if [[ "$OUTPUT_DIR" == *://* ]]; then LOG_DIR="$repo/logs"; else LOG_DIR="$(dirname "$OUTPUT_DIR")/imagerecords-logs"; fi
fi
mkdir -p "$LOG_DIR"
log="$LOG_DIR/nightly-$RUN_DATE.log"

cd "$repo"
status=0
"$PYTHON" -m pipeline.run --input_dir="$INPUT_DIR" --output_dir="$OUTPUT_DIR" \
    --run_date="$RUN_DATE" "$@" >>"$log" 2>&1 || status=$?

case "$status" in
  0) exit 0 ;;
  1) meaning='run failed' ;;
  2) meaning='nothing ran' ;;
  *) meaning='killed or crashed' ;;
esac
echo "imagerecords nightly $RUN_DATE: exit $status ($meaning): $(tail -n 1 "$log")" >&2
exit "$status"
