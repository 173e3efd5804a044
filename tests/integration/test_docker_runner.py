"""The docker runner for real: kinetics_pipeline with every step in a container of a locally built worker image
(Debian base made with debootstrap, the host's venv and source mounted read-only), started by DockerOperator against
the real Docker engine that ``make test`` starts, through the Docker guard; S3 and MLflow are the test servers on the
host network."""

from __future__ import annotations

import functools
import http.server
import json
import os
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from action_recognition.demo import make_demo_videos, write_demo_annotations
from action_recognition.localserve import VideoServer
from action_recognition.storage import open_storage
from action_recognition.weights import pull
from tests.support.airflow import ROOT, airflow_env, dags_test, init_airflow
from tests.support.docker import containers, start_guard
from tests.support.paths import VIDEOS, free_port
from tests.support.reliability import Reliability
from tests.support.train import train_args
from tests.support.weights import untrained_pose_pt

pytestmark = [pytest.mark.integration, pytest.mark.slow]


SITE = Path(sysconfig.get_paths()["purelib"]).resolve()
#: The venv's deno (the `deno` wheel puts it in bin/, which the site-packages mount does not carry).
DENO = (Path(sysconfig.get_paths()["scripts"]) / "deno").resolve()


@pytest.fixture(scope="module")
def guard_url(worker_image: str) -> Iterator[str]:
    """Airflow reaches the engine only through the Docker guard, as in docker-compose.yaml."""
    with start_guard(worker_image, bind_roots=[str(SITE), str(ROOT), str(DENO)]) as url:
        yield url


def test_pipeline_in_containers(
    worker_image: str, guard_url: str, s3_server: str, mlflow_server: str, tmp_path: Path, reliability: Reliability
) -> None:
    from mlflow import MlflowClient

    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="docker-runner")
    # Weights are data: pulled into storage once (what the stack's init does online), then every pose container
    # reads them from there through its cache. Offline, the file is an untrained yolo11n-pose saved as a .pt.
    pose = pull(str(untrained_pose_pt(tmp_path / "weights")), "yolo11n-pose.pt", open_storage("s3://docker-runner/ar"))
    site = SITE
    generated = make_demo_videos(tmp_path / "videos", per_class=5)
    csv_path, routes = write_demo_annotations(tmp_path / "kinetics-600_demo.csv", generated, VIDEOS)
    env = airflow_env(
        tmp_path / "airflow", MLFLOW_TRACKING_URI=mlflow_server, AR_RUNNER="docker", AR_WORKER_IMAGE=worker_image,
        AR_DOCKER_NETWORK="host", AR_DOCKER_URL=guard_url,
        AR_DOCKER_MOUNTS=f"{site}:/opt/venv-site:ro,{ROOT}:/opt/src:ro,{DENO}:/usr/local/bin/deno:ro",
        AR__POSE__CONF="0.0001",  # random weights score nobody near the default threshold
    )  # fmt: skip
    # The storage keys reach the steps only through the Airflow connection (not this process's environment), and
    # no task log may show the secret.
    secret = env.pop("AWS_SECRET_ACCESS_KEY")
    access = env.pop("AWS_ACCESS_KEY_ID")
    env["AIRFLOW_CONN_AR_STORAGE"] = json.dumps({
        "conn_type": "aws", "login": access, "password": secret, "extra": {"endpoint_url": s3_server},
    })  # fmt: skip
    init_airflow(env)
    before = set(containers())
    # The containers see neither this machine's files nor its temp folders: the annotations come over HTTP.
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    csv_url = f"http://127.0.0.1:{httpd.server_address[1]}/{csv_path.name}"
    with VideoServer(routes) as server:  # type: ignore[arg-type]
        conf = {
            "annotations": [csv_url], "classes": [], "class_contains": "dancing", "per_class": 4,
            "clips_per_shard": 10, "url_template": server.url_template, "pose_weights": pose.uri,
            "rgb_allow_untrained": True, "epochs": 2, "storage_uri": "s3://docker-runner/ar", "dataset": "dockerrun",
            "runner": "docker", "gpu_enabled": False,
        }  # fmt: skip
        try:
            log = dags_test("kinetics_pipeline", conf, env, tmp_path)
        finally:
            httpd.shutdown()
            httpd.server_close()
    assert "action-recognition download" in log
    assert secret not in log, "a storage secret appeared in the task logs"
    client = MlflowClient(mlflow_server)
    for name in ("dockerrun-keypoint", "dockerrun-rgb"):
        assert client.get_model_version_by_alias(name, "champion").version == "1"
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3_server).list_objects_v2(
        Bucket="docker-runner", Prefix="ar/datasets/dockerrun/")["Contents"]]  # fmt: skip
    assert any("keypoints-" in k for k in keys) and any("frames-" in k for k in keys)
    tags = {k.split("/")[2] for k in _keys(s3_server, "docker-runner", "ar/keypoints/")}
    assert tags == {f"yolo11n-pose-{pose.sha256[:8]}-i320-fall-m1"}, f"the pulled weights made every keypoint: {tags}"
    reliability.leftovers("step containers", containers=len(set(containers()) - before))
    assert set(containers()) == before, "step containers are removed after they run"


def _keys(endpoint: str, bucket: str, prefix: str) -> list[str]:
    pages = boto3.client("s3", endpoint_url=endpoint).get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix)  # fmt: skip
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _train_in_container(guard: Any, image: str, name: str, dataset: str, store: str, experiment: str,
                        env: dict[str, str]) -> Any:  # fmt: skip
    """The train step as DockerOperator starts it: through the guard, host venv and source mounted read-only."""
    argv = ["python3", "-m", "action_recognition", *train_args(dataset, store, experiment)]
    return guard.containers.run(
        image, argv, name=name, detach=True, network_mode="host", environment=env,
        volumes={str(SITE): {"bind": "/opt/venv-site", "mode": "ro"}, str(ROOT): {"bind": "/opt/src", "mode": "ro"}},
    )  # fmt: skip


def test_killed_training_container_then_retry_equals_a_clean_run(
    worker_image: str, guard_url: str, s3_server: str, mlflow_server: str, synthetic_dataset: Path,
    reliability: Reliability,
) -> None:  # fmt: skip
    """SIGKILL of a training container (docker kill: what an OOM kill or a lost host does). The retry removes the
    dead try's container (StepOperator._remove_leftover), starts its own under the same name, resumes the checkpoint
    and the MLflow run, and ends where an unbroken container run ends; no container is left."""
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
        retry = _train_in_container(guard, worker_image, name, dataset, "s3://docker-kill/killed", "dkill", env)
        assert retry.wait(timeout=600)["StatusCode"] == 0, retry.logs()[-3000:]
        after = json.loads(retry.logs(stderr=False).decode().strip().splitlines()[-1])
        retry.remove()
        clean = _train_in_container(guard, worker_image, "ar-train-clean", dataset, "s3://docker-kill/clean",
                                    "dclean", env)  # fmt: skip
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
