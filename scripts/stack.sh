#!/usr/bin/env bash
# The compose stack on this machine, every image built here (docker/compose.local.yaml): `make stack-up` and
# `make stack-down` call this.
#   scripts/stack.sh up     build what is missing, write .env with generated secrets when none exists, start,
#                           wait until every service is healthy, print the URLs and where the admin password is
#   scripts/stack.sh down   stop it; VOLUMES=1 also removes its volumes, CLEAN=1 its volumes and the images
#                           stack-images.sh built
#   scripts/stack.sh env    only write the env file (generated secrets) when none exists
# STACK_ENV (default .env) and COMPOSE_PROJECT_NAME choose the env file and project; VENV is the project venv.
# CELERY_WORKERS=N (N > 0) starts the celery profile: Redis and N Celery workers, with the CeleryExecutor.
set -euo pipefail
cd "$(dirname "$0")/.."
env_file=${STACK_ENV:-.env}
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-action-recognition}
compose=(docker-compose --env-file "$env_file" -f docker-compose.yaml -f docker/compose.local.yaml)
workers=${CELERY_WORKERS:-0}
scale=()
if [ "$workers" -gt 0 ]; then
  compose+=(--profile celery)
  scale=(--scale "airflow-celery-worker=$workers")
  export AIRFLOW_EXECUTOR=CeleryExecutor  # the shell's value wins over the env file's
fi

secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(24))'; }
write_env() {
  local fernet; fernet=$(python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())')
  umask 077
  cat >"$env_file" <<ENV
# Written by \`make stack-up\` for the local stack ($(date -u +%F)): generated secrets, never committed.
POSTGRES_PASSWORD=$(secret)
MLFLOW_DB_PASSWORD=$(secret)
AIRFLOW_FERNET_KEY=$fernet
AIRFLOW_JWT_SECRET=$(secret)
AIRFLOW_ADMIN_USER=admin
AIRFLOW_ADMIN_PASSWORD=$(secret)
MINIO_ROOT_USER=ar-root
MINIO_ROOT_PASSWORD=$(secret)
AR_S3_ACCESS_KEY=ar-pipeline
AR_S3_SECRET_KEY=$(secret)
MLFLOW_S3_ACCESS_KEY=ar-mlflow
MLFLOW_S3_SECRET_KEY=$(secret)
MLFLOW_ADMIN_USER=admin
MLFLOW_ADMIN_PASSWORD=$(secret)
MLFLOW_SECRET_KEY=$(secret)
AR_GPU=false
AR_WORKER_IMAGE=action-recognition-worker:latest
# The trigger form's defaults in local mode: the demo dataset from the local video server, untrained weights
# (nothing can be downloaded here; every output is tagged untrained), a small training: the short profile (one
# model a family, no refit seeds, a 2-fold review; the product's defaults: refit, 5 folds).
AR_TRAIN_RECIPE=early_stop
AR_REVIEW_FOLDS=2
AR_DATASET=demo
AR_ANNOTATIONS=http://video-server:8000/kinetics-600_demo.csv
AR_URL_TEMPLATE=http://video-server:8000/v/{youtube_id}.mp4
AR_PER_CLASS=4
AR_EPOCHS=5
AR_POSE_UNTRAINED=true
AR_RGB_ALLOW_UNTRAINED=true
ENV
  echo "wrote $env_file with generated secrets" >&2
}

# A container that exited with an error: its name, status and last log lines.
show_failure() { echo "${2#/} exited with status $3:" >&2; docker logs --tail 30 "$1" >&2; }

# Each container of the project that exited with an error (what `up` alone does not show).
failed_logs() {
  for id in $(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" --filter status=exited); do
    read -r name code < <(docker inspect -f '{{.Name}} {{.State.ExitCode}}' "$id")
    [ "$code" = 0 ] || show_failure "$id" "$name" "$code"
  done
}

# Every container of the project running and healthy (or, for one-shot jobs, exited 0).
wait_healthy() {
  local deadline=$((SECONDS + ${STACK_TIMEOUT:-600})) pending
  while :; do
    pending=()
    for id in $("${compose[@]}" ps -q); do
      read -r name status health code < <(docker inspect -f \
        '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.ExitCode}}' "$id")
      case "$status/$health" in
        running/healthy|running/none) ;;
        exited/*) [ "$code" = 0 ] || { show_failure "$id" "$name" "$code"; return 1; } ;;
        *) pending+=("${name#/}=$status/$health") ;;
      esac
    done
    [ ${#pending[@]} -eq 0 ] && return 0
    if [ $SECONDS -ge $deadline ]; then echo "not healthy in time: ${pending[*]}" >&2; return 1; fi
    sleep 3
  done
}

value() { sed -n "s/^$1=//p" "$env_file" | tail -n 1; }

case "${1:-}" in
  up)
    scripts/dockerd.sh start
    command -v docker-compose >/dev/null || { echo "docker-compose is missing: make system" >&2; exit 1; }
    scripts/stack-images.sh "${VENV:?VENV must name the project venv (make stack-up sets it)}"
    if [ ! -f "$env_file" ]; then
      # New secrets cannot open an earlier stack's databases: say so rather than fail inside airflow-init.
      if [ -n "$(docker volume ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")" ]; then
        echo "volumes of an earlier '$COMPOSE_PROJECT_NAME' stack exist but $env_file (their passwords) is gone:" \
          "remove them with \`make stack-down CLEAN=1\` (their data is lost) or restore $env_file" >&2
        exit 1
      fi
      write_env
    fi
    start=$SECONDS
    "${compose[@]}" up -d --remove-orphans "${scale[@]}" >"${STACK_LOG:-/tmp/action-recognition-stack-up.log}" 2>&1 || {
      echo "docker-compose up failed:" >&2; tail -n 40 "${STACK_LOG:-/tmp/action-recognition-stack-up.log}" >&2
      failed_logs; exit 1; }
    wait_healthy
    up_s=$((SECONDS - start))
    addr=$(value AR_PUBLISH_ADDRESS); addr=${addr:-127.0.0.1}
    cat <<EOF2
stack healthy $up_s s after \`up\`
  Airflow  http://$addr:$(value AIRFLOW_PORT | grep . || echo 8080)   user $(value AIRFLOW_ADMIN_USER), password AIRFLOW_ADMIN_PASSWORD in $env_file
  MLflow   http://$addr:$(value MLFLOW_PORT | grep . || echo 5000)   user $(value MLFLOW_ADMIN_USER), password MLFLOW_ADMIN_PASSWORD in $env_file
  Storage  http://$addr:$(value S3_PORT | grep . || echo 9000)   S3 API (moto in place of MinIO; no console), keys in $env_file
  Executor ${AIRFLOW_EXECUTOR:-LocalExecutor}$([ "$workers" -gt 0 ] && echo ", $workers Celery workers")
Trigger kinetics_pipeline from the UI: its defaults are the demo dataset. Stop with \`make stack-down\`.
EOF2
    ;;
  down)
    # Step containers are not compose services: those a stopped scheduler left running (this stack's guard labels
    # each with the project name; another stack's are left alone).
    docker ps -aq --filter "label=ar.docker-guard.instance=$COMPOSE_PROJECT_NAME" | xargs -r docker rm -f >/dev/null
    if [ -f "$env_file" ]; then
      if [ "${CLEAN:-0}" = 1 ] || [ "${VOLUMES:-0}" = 1 ]; then
        "${compose[@]}" --profile celery down --volumes --remove-orphans
      else "${compose[@]}" --profile celery down --remove-orphans; fi
    fi
    if [ "${CLEAN:-0}" = 1 ]; then
      docker image ls --format '{{.Repository}}:{{.Tag}}' \
        | grep -E '^(ar-local/|action-recognition-(airflow|mlflow|worker):latest$)' | xargs -r docker rmi >/dev/null
      echo "stack stopped; volumes and locally built images removed" >&2
    fi
    ;;
  env) [ -f "$env_file" ] || write_env ;;
  *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
