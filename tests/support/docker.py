"""The Docker side of the tests: the locally built worker image, container listings, and the Docker guard."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def build_worker_image() -> str:
    """The CI worker image (scripts/docker-images.sh builds it once per Dockerfile version); its tag."""
    if os.environ.get("AR_SKIP_DOCKER") == "1":
        pytest.skip("AR_SKIP_DOCKER=1: no Docker engine on this machine (CI always has one)")
    if (
        shutil.which("docker") is None
        or subprocess.run(["docker", "info"], capture_output=True).returncode != 0
    ):
        pytest.fail("no running Docker engine: run the tests with `make test`, which starts one")
    out = subprocess.run(
        [str(ROOT / "scripts" / "docker-images.sh")], capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def containers(prefix: str = "ar-") -> list[str]:
    """Names of every container on the engine (running or not) that start with ``prefix``."""
    out = subprocess.run(
        ["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True, check=True
    )
    return sorted(n for n in out.stdout.split() if n.startswith(prefix))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def start_guard(image: str, bind_roots: list[str], networks: tuple[str, ...] = ("host",)) -> Iterator[str]:
    """``action-recognition docker-guard`` in front of the test engine; yields its ``tcp://`` URL."""
    port = _free_port()
    argv = [
        sys.executable,
        "-m",
        "action_recognition",
        "docker-guard",
        "--listen",
        f"127.0.0.1:{port}",
        "--engine",
        "unix:///var/run/docker.sock",
        "--allow-image",
        image,
    ]
    for root in bind_roots:
        argv += ["--allow-bind", root]
    for network in networks:
        argv += ["--allow-network", network]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError as exc:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
                raise RuntimeError(f"docker-guard did not start: {err}") from exc
            time.sleep(0.2)
    try:
        yield f"tcp://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
