#!/bin/bash
# The official Airflow image's entrypoint, as far as the compose stack uses it: no arguments -> `airflow --help`;
# `bash`, `python` or an executable path run as given; anything else is an `airflow` sub-command.
set -euo pipefail
if [ $# -eq 0 ]; then exec airflow --help; fi
case "$1" in
  bash|sh|python|python3|/*) exec "$@" ;;
  *) exec airflow "$@" ;;
esac
