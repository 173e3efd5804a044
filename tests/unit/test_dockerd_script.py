"""scripts/dockerd.sh, which every test target wraps: it stops only an engine it started, and only when no
container runs on it (a stack that `make stack-up` started meanwhile keeps its engine). Fakes of ``docker``
and ``dockerd`` on PATH stand in for the engine: the script's decisions are the subject, the real engine is
`make test`'s."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.paths import ROOT

FAKE_DOCKER = """#!/usr/bin/env bash
# `docker info` answers while the fake engine runs; `docker ps -q` lists $FAKE/containers.
case "$1" in
  info) [ -f "$FAKE/running" ] ;;
  ps) cat "$FAKE/containers" 2>/dev/null; true ;;
esac
"""
FAKE_DOCKERD = """#!/usr/bin/env bash
touch "$FAKE/running"; echo started >> "$FAKE/events"
trap 'rm -f "$FAKE/running"; echo stopped >> "$FAKE/events"; exit 0' TERM
while :; do sleep 0.1; done
"""


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[dict[str, str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("docker", FAKE_DOCKER), ("dockerd", FAKE_DOCKERD)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    yield {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE": str(tmp_path),
        "AR_DOCKERD_STATE": str(tmp_path / "state"),
    }
    pid_file = tmp_path / "state" / "pid"
    if pid_file.exists():  # a test that failed midway leaves no fake engine running
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def _script(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "scripts" / "dockerd.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _events(env: dict[str, str]) -> list[str]:
    path = Path(env["FAKE"]) / "events"
    return path.read_text().split() if path.exists() else []


def _running(env: dict[str, str]) -> bool:
    return (Path(env["FAKE"]) / "running").exists()


def test_run_starts_an_engine_and_stops_it_with_the_commands_status(fake: dict[str, str]) -> None:
    done = _script(fake, "run", "bash", "-c", "docker info && exit 3")
    assert done.returncode == 3, "the command's exit status, not the script's"
    assert _events(fake) == ["started", "stopped"] and not _running(fake)


def test_run_leaves_an_engine_it_did_not_start(fake: dict[str, str]) -> None:
    assert _script(fake, "start").returncode == 0  # what `make stack-up` does first
    assert _script(fake, "run", "true").returncode == 0
    assert _events(fake) == ["started"] and _running(fake), "make test must not stop the stack's engine"
    assert _script(fake, "stop").returncode == 0


def test_run_leaves_its_engine_while_a_container_runs_on_it(fake: dict[str, str]) -> None:
    """`make test` started the engine; `make stack-up` started a stack on it meanwhile: the engine stays."""
    started_stack = 'echo stack-container > "$FAKE/containers"'
    assert _script(fake, "run", "bash", "-c", started_stack).returncode == 0
    assert _events(fake) == ["started"] and _running(fake)
    assert "container(s) use it" in _script(fake, "stop").stderr, "stop says why it leaves the engine"
    (Path(fake["FAKE"]) / "containers").unlink()
    _script(fake, "stop")
    deadline = time.monotonic() + 10
    while _running(fake) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _events(fake) == ["started", "stopped"]
