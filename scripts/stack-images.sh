#!/usr/bin/env bash
# Build every image the compose stack names, locally, pulling nothing (docker/compose.local.yaml says which):
#   ar-local/python:<venv>   the project's venv on the debootstrap Debian base (docker/local/python.Dockerfile)
#   ar-local/postgres:15     Debian's PostgreSQL behind the official image's entrypoint contract
#   ar-local/redis:7         Debian's redis-server
#   ar-local/s3:<venv>       moto's S3/IAM server with auth on, and an `mc` for the init job (MinIO stand-in)
#   ar-local/video-server    the demo dataset's "YouTube": bundled and generated videos and their annotations
#   action-recognition-airflow:latest, action-recognition-mlflow:latest   the project's own Dockerfiles on local bases
#   action-recognition-worker:latest   the worker (docker/local/worker.Dockerfile: no CUDA base, no deno download)
# Each is reused while its inputs are unchanged (tags carry a hash of them). Usage: scripts/stack-images.sh [VENV]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-${VENV:?set VENV to the project venv (make stack-images does)}}
base=${AR_BASE_IMAGE:-ar-debian-base:bookworm}
log=${AR_STACK_LOG:-/tmp/action-recognition-stack-build.log}
scripts/docker-images.sh >/dev/null  # the debootstrap base (and the CI worker image)

hash_of() { cat "$@" | sha256sum | cut -c1-12; }
tree_hash() { git ls-files -z -- "$@" | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12; }
exists() { docker image inspect "$1" >/dev/null 2>&1; }
# build TAG INPUTS DOCKERFILE CONTEXT [docker build args...]: builds unless TAG exists with the same inputs label.
build() {
  local tag=$1 inputs=$2 file=$3 context=$4; shift 4
  if [ "$(docker image inspect -f '{{ index .Config.Labels "ar.inputs" }}' "$tag" 2>/dev/null)" = "$inputs" ]; then
    return 0
  fi
  local start=$SECONDS
  echo "building $tag ..." >&2
  if ! docker build --network host --label "ar.inputs=$inputs" -f "$file" -t "$tag" "$@" "$context" >>"$log" 2>&1; then
    echo "building $tag failed; the end of $log:" >&2; tail -n 40 "$log" >&2; exit 1
  fi
  echo "built $tag in $((SECONDS - start)) s" >&2
}

site=$(echo "$venv"/lib/python3.11/site-packages)
python_inputs=$(hash_of requirements/lock.txt docker/local/python.Dockerfile)
python_image=ar-local/python:$python_inputs
if ! exists "$python_image"; then
  # A hard-linked copy of the venv (no bytes copied) without this checkout's editable install and the test browser.
  ctx=$(mktemp -d "${TMPDIR:-/tmp}/ar-python-image.XXXXXX")
  trap 'rm -rf "$ctx"' EXIT
  cp -al "$site" "$ctx/site-packages"
  chmod -R a+rX "$ctx/site-packages"  # before COPY: a chmod in the image would copy every file into a new layer
  rm -rf "$ctx"/site-packages/__editable__*action_recognition* "$ctx"/site-packages/action_recognition-*.dist-info \
         "$ctx"/site-packages/playwright "$ctx"/site-packages/__pycache__
  mkdir "$ctx/scripts" "$ctx/bin"
  for f in "$venv"/bin/*; do
    case $(basename "$f") in python*|activate*|pip*|Activate.ps1|action-recognition) continue ;; esac
    [ -f "$f" ] || continue
    if head -c 2 "$f" | grep -q '#!'; then cp "$f" "$ctx/scripts/"    # console scripts: their shebang is rewritten
    elif [ -x "$f" ]; then cp -l "$f" "$ctx/bin/"; fi                # binaries from wheels (deno): as they are
  done
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/"
  build "$python_image" "$python_inputs" docker/local/python.Dockerfile "$ctx" --build-arg "BASE_IMAGE=$base"
  rm -rf "$ctx"; trap - EXIT
fi

py=(--build-arg "PYTHON_IMAGE=$python_image")
# The stand-ins keep fixed tags (docker/compose.local.yaml names them); the ar.inputs label says what built them.
inputs_of() { hash_of "$@" <(echo "$python_image $base"); }
id_of() { docker image inspect -f '{{.Id}}' "$1"; }
source_hash=$(tree_hash action_recognition pyproject.toml)

build ar-local/postgres:stack "$(inputs_of docker/local/postgres.Dockerfile docker/local/postgres-entrypoint.sh)" \
  docker/local/postgres.Dockerfile docker/local --build-arg "BASE_IMAGE=$base"
build ar-local/redis:stack "$(inputs_of docker/local/redis.Dockerfile)" \
  docker/local/redis.Dockerfile docker/local --build-arg "BASE_IMAGE=$base"
build ar-local/s3:stack "$(inputs_of docker/local/s3.Dockerfile docker/local/s3server.py docker/local/mc)" \
  docker/local/s3.Dockerfile docker/local "${py[@]}"
build ar-local/video-server:stack "$(inputs_of docker/local/video-server.Dockerfile <(tree_hash action_recognition devtools))" \
  docker/local/video-server.Dockerfile . "${py[@]}"
build ar-local/airflow-base:stack "$(inputs_of docker/local/airflow-base.Dockerfile docker/local/airflow-entrypoint.sh)" \
  docker/local/airflow-base.Dockerfile docker/local "${py[@]}"
build ar-local/mlflow-base:stack "$(inputs_of docker/local/mlflow-base.Dockerfile)" \
  docker/local/mlflow-base.Dockerfile docker/local "${py[@]}"

# The project's own Dockerfiles, the ones compose builds in production, on the local bases.
build action-recognition-airflow:latest "$(hash_of docker/airflow.Dockerfile requirements/lock.txt \
  <(echo "$(id_of ar-local/airflow-base:stack) $source_hash $(tree_hash dags plugins scripts/lock.py)"))" \
  docker/airflow.Dockerfile . --build-arg "AIRFLOW_IMAGE=ar-local/airflow-base:stack"
build action-recognition-mlflow:latest "$(hash_of docker/mlflow.Dockerfile <(id_of ar-local/mlflow-base:stack))" \
  docker/mlflow.Dockerfile . --build-arg "MLFLOW_IMAGE=ar-local/mlflow-base:stack"
build "${AR_WORKER_IMAGE:-action-recognition-worker:latest}" \
  "$(hash_of docker/local/worker.Dockerfile <(echo "$python_image $source_hash"))" \
  docker/local/worker.Dockerfile . "${py[@]}"
echo "stack images ready (python layer $python_image)" >&2
