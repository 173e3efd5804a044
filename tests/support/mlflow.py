"""MLflow for tests: a fresh SQLite store in a moment, and a tracking server that a test can stop and start
again on the same port and database."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.paths import free_port

#: Where this session keeps its migrated empty store (set by conftest's session fixture).
_TEMPLATE_DIR: list[Path] = []


def keep_template_in(folder: Path) -> None:
    _TEMPLATE_DIR[:] = [folder]


def sqlite_store(path: Path) -> str:
    """The URI of a new, empty MLflow SQLite store at ``path``: a copy of one whose schema was migrated once a
    session (creating each anew costs 0.8-1.3 s of migrations; a copy, milliseconds)."""
    if not _TEMPLATE_DIR:
        raise RuntimeError("tests/conftest.py did not set where the template store lives")
    template = _TEMPLATE_DIR[0] / "mlflow-template.db"
    if not template.exists():
        from mlflow import MlflowClient

        MlflowClient(f"sqlite:///{template}").search_experiments()  # creates and migrates the schema
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        shutil.copyfile(template, path)
    return f"sqlite:///{path}"


#: The test servers' settings: no telemetry, and no job runner (MLflow 3's GenAI jobs, unused here: on, it
#: starts five Huey consumers of about 330 MB each beside every server).
MLFLOW_SERVER_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


class RestartableMlflow:
    """``mlflow server`` (SQLite + a local artifact folder) under ``root``; :meth:`start` / :meth:`stop` at
    will."""

    def __init__(self, root: Path, artifacts: str | None = None) -> None:
        self.root = root
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.artifacts = artifacts or str(root / "artifacts")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RestartableMlflow:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.root}/mlflow.db",
                "--artifacts-destination",
                self.artifacts,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=dict(os.environ, **MLFLOW_SERVER_ENV),
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1):
                    return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("MLflow did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None
