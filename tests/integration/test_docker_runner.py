"""The docker runner for real: kinetics_pipeline with every step in a container of a locally built worker image
(Debian base made with debootstrap, the host's venv and source mounted read-only), started by DockerOperator against
the real Docker engine that ``make test`` starts, through the Docker guard; S3 and MLflow are the test servers on the
host network."""

from __future__ import annotations

import functools
import http.server
import json
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from action_recognition.demo import make_demo_videos, write_demo_annotations
from action_recognition.localserve import VideoServer
from tests.conftest import VIDEOS, free_port
from tests.support.airflow import ROOT, airflow_env, dags_test, init_airflow
from tests.support.docker import containers, start_guard
from tests.support.reliability import Reliability

pytestmark = [pytest.mark.integration, pytest.mark.slow]


SITE = Path(sysconfig.get_paths()["purelib"]).resolve()


@pytest.fixture(scope="module")
def guard_url(worker_image: str) -> Iterator[str]:
    """Airflow reaches the engine only through the Docker guard, as in docker-compose.yaml."""
    with start_guard(worker_image, bind_roots=[str(SITE), str(ROOT)]) as url:
        yield url


def test_pipeline_in_containers(
    worker_image: str, guard_url: str, s3_server: str, mlflow_server: str, tmp_path: Path, reliability: Reliability
) -> None:
    from mlflow import MlflowClient

    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="docker-runner")
    site = SITE
    generated = make_demo_videos(tmp_path / "videos", per_class=5)
    csv_path, routes = write_demo_annotations(tmp_path / "kinetics-600_demo.csv", generated, VIDEOS)
    env = airflow_env(
        tmp_path / "airflow", MLFLOW_TRACKING_URI=mlflow_server, AR_RUNNER="docker", AR_WORKER_IMAGE=worker_image,
        AR_DOCKER_NETWORK="host", AR_DOCKER_URL=guard_url,
        AR_DOCKER_MOUNTS=f"{site}:/opt/venv-site:ro,{ROOT}:/opt/src:ro",
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
            "clips_per_shard": 10, "url_template": server.url_template, "pose_untrained": True,
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
    reliability.leftovers("step containers", containers=len(set(containers()) - before))
    assert set(containers()) == before, "step containers are removed after they run"


def test_a_leftover_container_is_removed_before_a_retry(worker_image: str) -> None:
    """A try killed with its container still there: the retry removes it before starting its own."""
    sys.path.insert(0, str(ROOT / "plugins"))
    from ar_provider.operators import StepOperator

    name = "ar-leftover-test"
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    subprocess.run(["docker", "run", "-d", "--name", name, worker_image, "sleep", "300"], check=True,
                   capture_output=True)  # fmt: skip
    assert name in containers()
    op = StepOperator(task_id="leftover", step="version", docker_url="unix://var/run/docker.sock")
    op._remove_leftover(name)
    assert name not in containers()
    assert sys.executable
