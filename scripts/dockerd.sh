#!/usr/bin/env bash
# A Docker engine for the test targets and the local stack, stopped only by whoever started it and only when
# nothing else uses it.
#   scripts/dockerd.sh start         start an engine when none answers (it keeps running: `make stack-up` uses this)
#   scripts/dockerd.sh run CMD...    start an engine when none answers, run CMD, then stop the engine only if this
#                                    call started it and no container is running on it (a stack that `make stack-up`
#                                    started meanwhile keeps its engine); exits with CMD's status
#   scripts/dockerd.sh stop          stop the engine `start` recorded, unless a container is running on it
set -euo pipefail
state=${AR_DOCKERD_STATE:-/tmp/action-recognition-dockerd}

start_engine() {
  command -v dockerd >/dev/null || { echo "dockerd is not installed (apt-get install docker.io)" >&2; exit 1; }
  mkdir -p "$state"
  nohup dockerd >"$state/dockerd.log" 2>&1 &
  echo $! >"$state/pid"
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && { echo "dockerd started (pid $(cat "$state/pid"))" >&2; return 0; }
    sleep 1
  done
  echo "dockerd did not start; its log:" >&2; tail -n 30 "$state/dockerd.log" >&2; exit 1
}

# Stop the engine whose pid is recorded, unless a container runs on it (then it is someone else's now).
stop_engine() {
  [ -f "$state/pid" ] || return 0
  local running pid
  running=$(docker ps -q 2>/dev/null | wc -l)
  if [ "$running" -gt 0 ]; then
    echo "dockerd left running: $running container(s) use it (a stack started meanwhile?)" >&2
    return 0
  fi
  pid=$(cat "$state/pid"); rm -f "$state/pid"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || return 0; sleep 1; done
  kill -9 "$pid" 2>/dev/null || true
}

case "${1:-}" in
  start)
    docker info >/dev/null 2>&1 || start_engine
    ;;
  run)
    shift
    [ $# -gt 0 ] || { echo "usage: $0 run CMD..." >&2; exit 2; }
    started=0
    if ! docker info >/dev/null 2>&1; then start_engine; started=1; fi
    set +e; "$@"; status=$?; set -e
    [ "$started" = 0 ] || stop_engine
    exit "$status"
    ;;
  stop) stop_engine ;;
  *) echo "usage: $0 start|run CMD...|stop" >&2; exit 2 ;;
esac
