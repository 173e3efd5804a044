#!/usr/bin/env bash
# Start (or stop) a Docker engine for the tests when none is running. Only stops an engine this script started.
# Usage: scripts/dockerd.sh start|stop
set -euo pipefail
state=${AR_DOCKERD_STATE:-/tmp/action-recognition-dockerd}
case "${1:-}" in
  start)
    if docker info >/dev/null 2>&1; then exit 0; fi
    command -v dockerd >/dev/null || { echo "dockerd is not installed (apt-get install docker.io)" >&2; exit 1; }
    mkdir -p "$state"
    nohup dockerd >"$state/dockerd.log" 2>&1 &
    echo $! >"$state/pid"
    for _ in $(seq 1 60); do
      docker info >/dev/null 2>&1 && { echo "dockerd started (pid $(cat "$state/pid"))" >&2; exit 0; }
      sleep 1
    done
    echo "dockerd did not start; its log:" >&2; tail -n 30 "$state/dockerd.log" >&2; exit 1
    ;;
  stop)
    [ -f "$state/pid" ] || exit 0
    pid=$(cat "$state/pid"); rm -f "$state/pid"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 1; done
    kill -9 "$pid" 2>/dev/null || true
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
