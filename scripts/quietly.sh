#!/usr/bin/env bash
# One line per set-up stage: run a command with its output in a log file, print the stage and its seconds; on
# failure print the log's tail and exit with the command's status. Usage: scripts/quietly.sh LABEL LOG CMD...
set -uo pipefail
label=$1 log=$2; shift 2
mkdir -p "$(dirname "$log")"
start=$SECONDS
printf '%s ... ' "$label" >&2
if "$@" >>"$log" 2>&1; then
  echo "done in $((SECONDS - start)) s" >&2
else
  status=$?
  echo "FAILED (exit $status) after $((SECONDS - start)) s; the last lines of $log:" >&2
  tail -n 40 "$log" >&2
  exit $status
fi
