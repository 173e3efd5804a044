"""Running a DAG for real in tests: ``airflow dags test`` in a subprocess with its own AIRFLOW_HOME (SQLite),
training with the suite's short profile (``SHORT_TRAINING``: one model a family, few epochs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from action_recognition.profiles import short_training_env

ROOT = Path(__file__).resolve().parents[2]


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "false",
            "PYTHONPATH": str(ROOT / "plugins"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
            "AR_NETWORK_RETRIES": "0",
            # The asset alone starts kinetics_retrain: a suite that crosses Monday 04:00 UTC sees the same runs.
            "AR_RETRAIN_SCHEDULE": "none",
            "AR__TRAIN__SYSTEM_METRICS": "false",
            "AR__POSE__CONF": "0.0001",
            "AR__DOWNLOAD__BACKOFF_BASE_S": "0.1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            **short_training_env(),
        }
    )
    env.update(extra)
    return env


def init_airflow(env: dict[str, str], migrated: Path | None = None) -> None:
    """The metadata database of ``env``'s AIRFLOW_HOME, migrated, with the download pool. ``migrated``: a home
    this already ran in; its database is copied (a migration takes 10-20 s)."""
    if migrated is not None:
        home = Path(env["AIRFLOW_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        shutil.copy2(migrated / "airflow.db", home / "airflow.db")
        return
    airflow = [sys.executable, "-m", "airflow"]
    subprocess.run([*airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    subprocess.run(
        [*airflow, "pools", "set", "youtube_downloads", "2", "tests"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


def run_dag(
    dag_id: str, conf: dict[str, Any], env: dict[str, str], cwd: Path, timeout: int = 1500
) -> tuple[int, str]:
    """``airflow dags test`` with ``conf``; its exit status and output (also written to
    ``cwd/<dag_id>.log``)."""
    proc = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", dag_id, "-c", json.dumps(conf)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    out = proc.stdout + proc.stderr
    (cwd / f"{dag_id}.log").write_text(out)
    return proc.returncode, out


def dags_test(dag_id: str, conf: dict[str, Any], env: dict[str, str], cwd: Path, timeout: int = 1500) -> str:
    """Run the DAG; return its output. Raises AssertionError with the output's tail when the run fails."""
    returncode, out = run_dag(dag_id, conf, env, cwd, timeout)
    assert returncode == 0, f"{dag_id} failed:\n{out[-6000:]}"
    return out
