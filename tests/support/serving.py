"""``mlflow models serve`` of a registered model, as its consumers run it (the project's environment:
``--env-manager local``), up and answering ``/ping`` before it is handed out."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.support.paths import free_port


def _pings(url: str) -> bool:
    """Whether the server answers /ping with 200 (False while it is still starting and refuses
    connections)."""
    try:
        return requests.get(f"{url}/ping", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


@contextmanager
def served_model(uri: str, env: dict[str, str], log: Path, timeout: float = 180) -> Iterator[str]:
    """Serve ``uri`` on a free port of 127.0.0.1; yields its base URL; its output goes to ``log``."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "models",
                "serve",
                "-m",
                uri,
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while not _pings(url):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"mlflow models serve {uri} never answered: {log.read_text()[-3000:]}")
                time.sleep(1)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)
