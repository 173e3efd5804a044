"""The docker runner for real, on one step: a step in a container of a locally built worker image (Debian base
made with debootstrap, the host's venv and source mounted read-only), started by StepOperator's DockerOperator
against the real Docker engine that ``make test`` starts, through the Docker guard; S3 and MLflow are the test
servers on the host network. Then a training container SIGKILLed and retried. The whole pipeline in worker
containers is the compose stack's (tests/stack/); the operator's every branch without an engine,
tests/unit/test_operators.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import boto3
import pytest

from action_recognition.profiles import short_training_env
from tests.support.airflow import ROOT
from tests.support.docker import containers, start_guard
from tests.support.reliability import Reliability
from tests.support.train import train_args

pytestmark = [pytest.mark.integration, pytest.mark.slow]


SITE = Path(sysconfig.get_paths()["purelib"]).resolve()
#: The venv's deno (the `deno` wheel puts it in bin/, which the site-packages mount does not carry).
DENO = (Path(sysconfig.get_paths()["scripts"]) / "deno").resolve()


@pytest.fixture(scope="module")
def guard_url(worker_image: str) -> Iterator[str]:
    """Airflow reaches the engine only through the Docker guard, as in docker-compose.yaml."""
    with start_guard(worker_image, bind_roots=[str(SITE), str(ROOT), str(DENO)]) as url:
        yield url


def test_a_step_runs_in_a_container_through_the_guard(
    worker_image: str,
    guard_url: str,
    s3_server: str,
    mlflow_server: str,
    synthetic_dataset: Path,
    capfd: pytest.CaptureFixture[str],
    reliability: Reliability,
) -> None:
    """StepOperator with ``runner=docker``, as a DAG task runs it: DockerOperator starts the train step in the
    worker image through the guard (host venv and source mounted read-only), the storage keys travel as
    private environment, the step's JSON summary comes back as the task's result, and the container is
    removed."""
    from docker.types import Mount
    from mlflow import MlflowClient

    sys.path.insert(0, str(ROOT / "plugins"))
    from ar_provider.operators import StepOperator

    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="docker-runner")
    s3.upload_file(str(synthetic_dataset), "docker-runner", "ds/synth6-keypoints.npz")
    mounts = [
        Mount(target="/opt/venv-site", source=str(SITE), type="bind", read_only=True),
        Mount(target="/opt/src", source=str(ROOT), type="bind", read_only=True),
    ]
    step = StepOperator(
        task_id="train_keypoint",
        step="train",
        runner="docker",
        gpu=True,
        gpu_enabled=False,
        image=worker_image,
        docker_url=guard_url,
        network_mode="host",
        mounts=mounts,
        aws_conn_id=None,
        args=[
            "--dataset",
            "s3://docker-runner/ds/synth6-keypoints.npz",
            "--arch",
            "ddnet",
            "--name",
            "dockerrun",
            "--storage",
            "s3://docker-runner/ar",
            "--set",
            "train.experiment=docker-runner",
        ],
    )
    ti = SimpleNamespace(
        dag_id="kinetics_pipeline", task_id="train_keypoint", run_id="manual__test", map_index=-1
    )
    before = set(containers())
    env = {
        "MLFLOW_TRACKING_URI": mlflow_server,
        "AWS_ENDPOINT_URL": s3_server,
        **short_training_env(),
        "AR__TRAIN__SYSTEM_METRICS": "false",
    }
    with mock.patch.dict(os.environ, env):
        result = step.execute({"ti": ti, "params": {"models": ["keypoint", "rgb"]}})
    captured = capfd.readouterr()
    log = captured.out + captured.err  # the task log: Airflow's loggers write to the process's output
    assert result["ok"] and result["arch"] == "ddnet" and 0 <= result["test_top1"] <= 1, result
    run = MlflowClient(mlflow_server).get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.params["train.recipe"] == "early_stop"
    assert "action-recognition train" in log and "DockerOperator" in log, "the container's log is the task's"
    with reliability.probe("secrets: the storage key is absent from the container step's log"):
        assert os.environ["AWS_SECRET_ACCESS_KEY"] not in log, "a storage secret appeared in the task log"
    reliability.leftovers("step containers", containers=len(set(containers()) - before))
    assert set(containers()) == before, "step containers are removed after they run"


def _train_in_container(
    guard: Any, image: str, name: str, dataset: str, store: str, experiment: str, env: dict[str, str]
) -> Any:
    """The train step as DockerOperator starts it: through the guard, host venv and source mounted
    read-only."""
    argv = ["python3", "-m", "action_recognition", *train_args(dataset, store, experiment)]
    return guard.containers.run(
        image,
        argv,
        name=name,
        detach=True,
        network_mode="host",
        environment=env,
        volumes={
            str(SITE): {"bind": "/opt/venv-site", "mode": "ro"},
            str(ROOT): {"bind": "/opt/src", "mode": "ro"},
        },
    )


def test_killed_training_container_then_retry_equals_a_clean_run(
    worker_image: str,
    guard_url: str,
    s3_server: str,
    mlflow_server: str,
    synthetic_dataset: Path,
    reliability: Reliability,
) -> None:
    """SIGKILL of a training container (docker kill: what an OOM kill or a lost host does). The retry removes
    the dead try's container (StepOperator._remove_leftover), starts its own under the same name, resumes the
    checkpoint and the MLflow run, and ends where an unbroken container run ends; no container is left."""
    from mlflow import MlflowClient

    import docker

    sys.path.insert(0, str(ROOT / "plugins"))
    from ar_provider.operators import StepOperator

    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="docker-kill")
    s3.upload_file(str(synthetic_dataset), "docker-kill", "ds/synth6-keypoints.npz")
    dataset = "s3://docker-kill/ds/synth6-keypoints.npz"
    env = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    env.update(AWS_ENDPOINT_URL=s3_server, MLFLOW_TRACKING_URI=mlflow_server)
    guard = docker.DockerClient(base_url=guard_url, timeout=120)
    name = "ar-kinetics_pipeline-train_keypoint-killtest"
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    before = set(containers())
    client = MlflowClient(mlflow_server)
    with reliability.fault("SIGKILL a training container mid-run, then the retry"):
        _train_in_container(guard, worker_image, name, dataset, "s3://docker-kill/killed", "dkill", env)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # until the first checkpoint is in storage
            if s3.list_objects_v2(Bucket="docker-kill", Prefix="killed/models/").get("KeyCount", 0):
                break
            time.sleep(0.2)
        time.sleep(0.5)
        subprocess.run(["docker", "kill", "--signal", "KILL", name], check=True, capture_output=True)
        assert name in containers(), "the killed try's container is still there"
        [left] = client.search_runs([client.get_experiment_by_name("dkill").experiment_id])
        assert left.info.status == "RUNNING"

        StepOperator(task_id="retry", step="train", docker_url=guard_url)._remove_leftover(name)
        retry = _train_in_container(
            guard, worker_image, name, dataset, "s3://docker-kill/killed", "dkill", env
        )
        assert retry.wait(timeout=600)["StatusCode"] == 0, retry.logs()[-3000:]
        after = json.loads(retry.logs(stderr=False).decode().strip().splitlines()[-1])
        retry.remove()
        clean = _train_in_container(
            guard, worker_image, "ar-train-clean", dataset, "s3://docker-kill/clean", "dclean", env
        )
        assert clean.wait(timeout=600)["StatusCode"] == 0, clean.logs()[-3000:]
        unbroken = json.loads(clean.logs(stderr=False).decode().strip().splitlines()[-1])
        clean.remove()

        runs = client.search_runs([client.get_experiment_by_name("dkill").experiment_id])
        reliability.duplicates("MLflow runs beyond one per training (container)", len(runs) - 1)
        assert [r.info.run_id for r in runs] == [left.info.run_id] and runs[0].info.status == "FINISHED"
        assert after["metrics"] == unbroken["metrics"] and after["epochs_run"] == unbroken["epochs_run"] == 60

        def keys(prefix: str) -> list[str]:
            listed = s3.list_objects_v2(Bucket="docker-kill", Prefix=prefix).get("Contents", [])
            return sorted(o["Key"][len(prefix) :] for o in listed)

        assert keys("killed/") == keys("clean/"), "the same objects as an unbroken run, nothing partial"
        reliability.leftovers("training containers", containers=len(set(containers()) - before))
        assert set(containers()) == before
