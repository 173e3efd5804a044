"""docker-compose.yaml is validated offline here; tests/stack brings it up with images built locally."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.airflow import ROOT

pytestmark = [pytest.mark.integration]

SECRETS = {
    "POSTGRES_PASSWORD": "pg-secret",
    "MLFLOW_DB_PASSWORD": "mlflow-db-secret",
    "AIRFLOW_FERNET_KEY": "fernet",
    "AIRFLOW_JWT_SECRET": "jwt",
    "AIRFLOW_ADMIN_PASSWORD": "airflow-admin-secret",
    "MINIO_ROOT_USER": "root",
    "MINIO_ROOT_PASSWORD": "root-secret",
    "AR_S3_ACCESS_KEY": "pipeline-key",
    "AR_S3_SECRET_KEY": "pipeline-secret",
    "MLFLOW_S3_ACCESS_KEY": "mlflow-key",
    "MLFLOW_S3_SECRET_KEY": "mlflow-secret",
    "MLFLOW_ADMIN_PASSWORD": "admin-secret",
    "MLFLOW_SECRET_KEY": "flask",
}


def _config(
    tmp_path: Path, values: dict[str, str], *extra: str, project: str | None = None
) -> subprocess.CompletedProcess[str]:
    if shutil.which("docker-compose") is None:
        pytest.fail(
            "docker-compose is not installed: `make test` installs it (apt-get install docker-compose)"
        )
    env_file = tmp_path / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    env = {k: v for k, v in os.environ.items() if k != "COMPOSE_PROJECT_NAME"}
    if project:
        env["COMPOSE_PROJECT_NAME"] = project
    return subprocess.run(
        [
            "docker-compose",
            "--env-file",
            str(env_file),
            "-f",
            str(ROOT / "docker-compose.yaml"),
            *extra,
            "config",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )


def test_compose_is_valid_with_every_secret(tmp_path: Path) -> None:
    out = _config(tmp_path, SECRETS)
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    services = config["services"]
    assert {
        "postgres",
        "minio",
        "minio-init",
        "mlflow",
        "docker-proxy",
        "airflow-init",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
    } <= set(services)
    scheduler = services["airflow-scheduler"]["environment"]
    assert scheduler["AR_DOCKER_URL"] == "tcp://docker-proxy:2375", "Airflow reaches Docker through the proxy"
    assert all(
        "/var/run/docker.sock" not in str(s.get("volumes", []))
        for n, s in services.items()
        if n != "docker-proxy"
    )
    guard = services["docker-proxy"]
    assert guard["entrypoint"][:2] == ["action-recognition", "docker-guard"], (
        "the body-reading guard, not a URL filter"
    )
    assert "--allow-bind" not in guard["entrypoint"] and "--writable-binds" not in guard["entrypoint"]
    assert guard["read_only"] is True and guard["cap_drop"] == ["ALL"]
    for name in ("postgres", "minio", "mlflow", "airflow-apiserver", "airflow-scheduler"):
        assert "healthcheck" in services[name], name
    assert "basic-auth" in str(services["mlflow"]["command"])
    # The admin password of .env is the UI's (the api-server writes the passwords file from it) and the
    # preflight's.
    api = services["airflow-apiserver"]
    assert api["environment"]["AIRFLOW_ADMIN_PASSWORD"] == "airflow-admin-secret"
    assert (
        "SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" in " ".join(api["command"])
        and "api-server" in api["command"][-1]
    )
    conn = json.loads(scheduler["AIRFLOW_CONN_AR_AIRFLOW_API"])
    assert (conn["host"], conn["login"], conn["password"]) == (
        "airflow-apiserver",
        "admin",
        "airflow-admin-secret",
    )
    assert "AIRFLOW_ADMIN_PASSWORD" not in scheduler, (
        "the plain password only where the passwords file is written"
    )
    # a running task outlasts an api-server restart (the Task SDK's retries: tenacity's random exponential
    # wait), and its heartbeat lands soon after the api-server is back, well inside the scheduler's heartbeat
    # timeout
    tries, low, high = (
        float(scheduler[f"AIRFLOW__WORKERS__EXECUTION_API_{k}"])
        for k in ("RETRIES", "RETRY_WAIT_MIN", "RETRY_WAIT_MAX")
    )
    widest = sum(max(low, min(2.0**n, high)) for n in range(int(tries) - 1))
    assert (tries - 1) * low >= 60 and widest >= 300 and high <= 15, (tries, low, high)
    celery = _config(tmp_path, SECRETS, "--profile", "celery")
    assert celery.returncode == 0 and "airflow-celery-worker" in yaml.safe_load(celery.stdout)["services"]


def test_the_settings_compose_defaults_are_the_configs(tmp_path: Path) -> None:
    """A setting compose passes with a default of its own (the local demo's .env sets it shorter) keeps the
    config's default; a step's share of the cores is left to torch (every core) unless the deployment sets it."""
    from action_recognition.config import ReviewConfig, TrainConfig

    def scheduler_env(values: dict[str, str]) -> dict[str, str]:
        out = _config(tmp_path, values)
        assert out.returncode == 0, out.stderr
        return dict(yaml.safe_load(out.stdout)["services"]["airflow-scheduler"]["environment"])

    env = scheduler_env(SECRETS)
    assert env["AR__REVIEW__FOLDS"] == str(ReviewConfig().folds)
    assert env["AR__TRAIN__RECIPE"] == TrainConfig().recipe
    assert env["AR_STEP_THREADS"] == ""
    short = scheduler_env({**SECRETS, "AR_REVIEW_FOLDS": "2", "AR_STEP_THREADS": "1"})
    assert (short["AR__REVIEW__FOLDS"], short["AR_STEP_THREADS"]) == ("2", "1")


def test_the_mlflow_server_checks_a_password_once_per_ttl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The auth config the mlflow service writes at start, run as its shell runs it and read by MLflow's own
    parser: the admin from .env, and each credential's scrypt check cached for 60 s by default (0, set in
    .env: every request checked)."""
    from mlflow.server.auth.config import read_auth_config

    ini = tmp_path / "basic_auth.ini"

    def auth_config(values: dict[str, str]) -> Any:
        out = _config(tmp_path, values)
        assert out.returncode == 0, out.stderr
        service = yaml.safe_load(out.stdout)["services"]["mlflow"]
        write = service["command"][0].split(" && exec ", 1)[0]
        script = write.replace("$$", "$").replace("/tmp/basic_auth.ini", shlex.quote(str(ini)))
        env = {**service["environment"], "PATH": os.environ["PATH"]}
        subprocess.run(["sh", "-c", script], env=env, check=True, timeout=30)
        monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(ini))
        return read_auth_config()

    cached = auth_config(SECRETS)
    assert (cached.admin_username, cached.admin_password) == ("admin", SECRETS["MLFLOW_ADMIN_PASSWORD"])
    assert cached.auth_cache_ttl_seconds == 60
    assert auth_config({**SECRETS, "MLFLOW_AUTH_CACHE_TTL_S": "0"}).auth_cache_ttl_seconds == 0


@pytest.mark.parametrize("project", [None, "ar-second-stack"])
def test_each_stack_has_its_own_network_and_guard(tmp_path: Path, project: str | None) -> None:
    """Two stacks on one engine (two project names) must not share a network, or ``minio`` and ``mlflow``
    resolve to either stack's container (seen in CI: the init job met the other stack's S3 server,
    SignatureDoesNotMatch); nor may one stack's guard act on the other's step containers."""
    out = _config(tmp_path, SECRETS, project=project)
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    name = project or "action-recognition"
    assert [n["name"] for n in config["networks"].values()] == [name]
    assert config["services"]["airflow-scheduler"]["environment"]["AR_DOCKER_NETWORK"] == name
    argv = config["services"]["docker-proxy"]["entrypoint"]
    assert argv[argv.index("--allow-network") + 1] == name and argv[argv.index("--instance") + 1] == name


MUST_HAVE = [
    "AIRFLOW_FERNET_KEY",
    "AIRFLOW_JWT_SECRET",
    "POSTGRES_PASSWORD",
    "AR_S3_SECRET_KEY",
    "MLFLOW_ADMIN_PASSWORD",
    "AIRFLOW_ADMIN_PASSWORD",
]


@pytest.mark.parametrize("missing", MUST_HAVE)
def test_compose_refuses_empty_secrets(tmp_path: Path, missing: str) -> None:
    out = _config(tmp_path, {**SECRETS, missing: ""})
    assert out.returncode != 0
    assert missing in out.stderr


def test_env_example_names_every_secret() -> None:
    example = (ROOT / ".env.example").read_text()
    for name in SECRETS:
        assert f"\n{name}=\n" in example, f"{name} missing or pre-filled in .env.example"


def test_the_local_override_swaps_images_only() -> None:
    """docker/compose.local.yaml may change nothing but images of the services docker-compose.yaml defines, so
    a mistake in their commands, environment, healthchecks, depends_on or networks shows up in the stack
    test."""
    base = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())["services"]
    local = yaml.safe_load((ROOT / "docker" / "compose.local.yaml").read_text())["services"]
    swapped = {name: spec for name, spec in local.items() if name in base}
    assert {"postgres", "minio", "minio-init", "redis"} <= set(swapped)
    for name, spec in swapped.items():
        assert set(spec) == {"image"}, f"{name}: the override changes {sorted(set(spec) - {'image'})}"
    assert set(local) - set(base) == {"video-server"}, "one added service: the demo's video server"
