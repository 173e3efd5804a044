"""The compose stack as ``make stack-up`` starts it (``scripts/stack.sh``, every image built here), for the
stack tests: free ports, a private env file and project name, the admin password, and ``down`` with volumes at
the end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.airflow import ROOT
from tests.support.deployment import AirflowAPI
from tests.support.paths import free_port


def stack_script(command: str, env: dict[str, str], timeout: float) -> str:
    """``scripts/stack.sh COMMAND``; its output, or AssertionError with the tail when it fails."""
    proc = subprocess.run(
        ["scripts/stack.sh", command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"scripts/stack.sh {command} failed:\n{out[-5000:]}"
    return out


@contextmanager
def compose_stack(
    work: Path, project: str, *, celery_workers: int = 0, settings: dict[str, str] | None = None
) -> Iterator[dict[str, Any]]:
    """Up (healthy) on free ports; yields the env file's values, ports, URLs, the seconds to healthy and an
    :class:`AirflowAPI` logged in as the admin of the env file. ``settings`` are appended to the generated env
    file. An earlier run's containers and volumes of ``project`` (a killed run leaves them, with other
    passwords) are removed first."""
    env_file = work / "stack.env"
    env = {
        **os.environ,
        "STACK_ENV": str(env_file),
        "STACK_TIMEOUT": "600",
        "COMPOSE_PROJECT_NAME": project,
        "VENV": str(Path(sys.executable).parents[1]),
        "CELERY_WORKERS": str(celery_workers),
    }
    stack_script("env", env, 60)
    subprocess.run(
        ["scripts/stack.sh", "down"],
        cwd=ROOT,
        env={**env, "VOLUMES": "1"},
        capture_output=True,
        timeout=300,
        check=False,
    )
    ports = {name: str(free_port()) for name in ("AIRFLOW_PORT", "MLFLOW_PORT", "S3_PORT", "S3_CONSOLE_PORT")}
    # The asset alone starts kinetics_retrain: a test that crosses Monday 04:00 UTC sees the same runs.
    appended = {"AR_RETRAIN_SCHEDULE": "none", **ports, **(settings or {})}
    with env_file.open("a") as fh:
        fh.writelines(f"{name}={value}\n" for name, value in appended.items())
    try:
        out = stack_script("up", env, 2400)
        healthy = re.search(r"stack healthy (\d+) s after", out)
        assert healthy, out
        values = dict(
            line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line and line[0] != "#"
        )
        yield {
            "values": values,
            "ports": {k: int(v) for k, v in ports.items()},
            "up_to_healthy_s": int(healthy.group(1)),
            "out": out,
            "env": env,
            "airflow": AirflowAPI(
                f"http://127.0.0.1:{ports['AIRFLOW_PORT']}",
                values["AIRFLOW_ADMIN_USER"],
                values["AIRFLOW_ADMIN_PASSWORD"],
            ),
            "mlflow": f"http://127.0.0.1:{ports['MLFLOW_PORT']}",
            "s3": f"http://127.0.0.1:{ports['S3_PORT']}",
        }
    finally:
        subprocess.run(
            ["scripts/stack.sh", "down"],
            cwd=ROOT,
            env={**env, "VOLUMES": "1"},
            capture_output=True,
            timeout=300,
            check=False,
        )


def compose_containers(project: str, service: str) -> dict[str, str]:
    """Container id by hostname for a compose service of ``project`` (running or not)."""
    ids = subprocess.run(
        [
            "docker",
            "ps",
            "-aq",
            "--filter",
            f"label=com.docker.compose.project={project}",
            "--filter",
            f"label=com.docker.compose.service={service}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    out = {}
    for cid in ids:
        host = subprocess.run(
            ["docker", "inspect", "-f", "{{.Config.Hostname}}", cid],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        out[host] = cid
    return out
