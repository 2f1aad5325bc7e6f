#!/usr/bin/env bash
# Build and run the imagerecords Dataflow Flex Template. Run from anywhere; needs the gcloud CLI,
# logged in (gcloud auth login) with the roles listed in deploy/dataflow/README.md.
#
#   PROJECT=my-project BUCKET=my-bucket deploy/dataflow/launch.sh build
#   PROJECT=my-project BUCKET=my-bucket deploy/dataflow/launch.sh run \
#       --input_dir=gs://my-bucket/flowers --output_dir=gs://my-bucket/records/flowers \
#       --num_shards=train=64,validation=8
#
# build: builds and pushes the image with Cloud Build (deploy/dataflow/cloudbuild.yaml), then
#        writes the template spec (image + metadata.json) to $TEMPLATE.
# run:   starts a job from the template; every --name=value after `run` is a job parameter
#        (metadata.json lists them), passed so that commas and '=' inside values survive.
#        Prints the job id; the job's state is in the console or `gcloud dataflow jobs show`.
#
# Variables (environment):
#   PROJECT        Google Cloud project id (required)
#   BUCKET         bucket name for the template spec, staging and temp files (required)
#   REGION         Dataflow region (us-central1)
#   REPOSITORY     Artifact Registry Docker repository in REGION (imagerecords); create it once:
#                  gcloud artifacts repositories create imagerecords --repository-format=docker \
#                    --location=$REGION
#   TAG            image tag: the job's version (pipeline/__init__.py) and the image's Beam
#                  version, e.g. 0.1.0-beam2.77.0 (the Flink and CronJob manifests use it too)
#   IMAGE          full image name ($REGION-docker.pkg.dev/$PROJECT/$REPOSITORY/imagerecords:$TAG)
#   TEMPLATE       template spec path (gs://$BUCKET/templates/imagerecords-$TAG.json)
#   MACHINE_TYPE   worker machine type (n2-standard-16: see README.md for the choice)
#   MAX_WORKERS    autoscaling ceiling (20)
#   THREADS        --number_of_worker_harness_threads per SDK process (4)
#   DISK_GB        worker boot disk in GB (50; the image alone is several GB)
#   JOB_NAME       job name (imagerecords-<UTC time>)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

: "${PROJECT:?set PROJECT to your Google Cloud project id}"
: "${BUCKET:?set BUCKET to a bucket name (no gs:// prefix) for the template, staging and temp}"
REGION="${REGION:-us-central1}"
REPOSITORY="${REPOSITORY:-imagerecords}"
version="$(sed -n "s/^__version__ = '\(.*\)'$/\1/p" "$repo/pipeline/__init__.py")"
beam="$(sed -n 's|^FROM apache/beam_python[0-9.]*_sdk:\(.*\)$|\1|p' "$here/Dockerfile")"
TAG="${TAG:-$version-beam$beam}"
IMAGE="${IMAGE:-$REGION-docker.pkg.dev/$PROJECT/$REPOSITORY/imagerecords:$TAG}"
TEMPLATE="${TEMPLATE:-gs://$BUCKET/templates/imagerecords-$TAG.json}"
MACHINE_TYPE="${MACHINE_TYPE:-n2-standard-16}"
MAX_WORKERS="${MAX_WORKERS:-20}"
THREADS="${THREADS:-4}"
DISK_GB="${DISK_GB:-50}"

build() {
  (cd "$repo" && gcloud builds submit --project="$PROJECT" --region="$REGION" \
      --config=deploy/dataflow/cloudbuild.yaml --ignore-file=deploy/dataflow/.gcloudignore \
      --substitutions="_IMAGE=$IMAGE" .)
  gcloud dataflow flex-template build "$TEMPLATE" --project="$PROJECT" \
      --image="$IMAGE" --sdk-language=PYTHON --metadata-file="$here/metadata.json"
  echo "template: $TEMPLATE (image $IMAGE)"
}

run() {
  local params=() arg
  for arg in "$@"; do
    case "$arg" in
      --*=*) params+=("--parameters=^~^${arg#--}") ;;  # '^~^': gcloud splits on ~, not on ','
      *) echo "launch.sh run: expected --name=value, got '$arg'" >&2; exit 2 ;;
    esac
  done
  gcloud dataflow flex-template run "${JOB_NAME:-imagerecords-$(date -u +%Y%m%d-%H%M%S)}" \
      --project="$PROJECT" --region="$REGION" \
      --template-file-gcs-location="$TEMPLATE" \
      --staging-location="gs://$BUCKET/staging" --temp-location="gs://$BUCKET/temp" \
      --worker-machine-type="$MACHINE_TYPE" --max-workers="$MAX_WORKERS" \
      --parameters="sdk_container_image=$IMAGE" \
      --parameters="number_of_worker_harness_threads=$THREADS" \
      --parameters="disk_size_gb=$DISK_GB" \
      "${params[@]}"
}

case "${1:-}" in
  build) build ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 build | run --input_dir=gs://... --output_dir=gs://... [--name=value ...]" >&2
     exit 2 ;;
esac
