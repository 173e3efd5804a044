"""The suite's one whole ``kinetics_pipeline`` run (``airflow dags test``, the local runner):
``python -m devtools smoke`` (what ``make smoke-online`` runs on a networked machine) pointed at local
sources, the real S3 test server and the real MLflow server. Its "YouTube" and its Kinetics CSV are the local
video server; its weights are files made here (an untrained yolo11n-pose saved as .pt, an untrained ResNet18
state dict) served over HTTP like release assets and pulled into storage first, then used as real weights:
nothing in the run is flagged untrained. Training uses the suite's short profile (``SHORT_TRAINING``).

Then the same run again (no new object, no new model version, nothing downloaded) and ``kinetics_retrain`` on
the unchanged datasets (it reuses the finished trainings). The demo (`make demo`, untrained weights, local
storage) is tests/integration/test_demo.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from action_recognition.config import StorageConfig
from action_recognition.ledger import status as ledger_status
from action_recognition.profiles import SHORT_TRAINING, short_training_env
from action_recognition.storage import open_storage
from devtools.demo import make_demo_videos, write_demo_annotations
from devtools.localserve import VideoServer
from tests.support.airflow import airflow_env, dags_test
from tests.support.paths import VIDEOS
from tests.support.reliability import Reliability
from tests.support.weights import untrained_pose_pt

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUCKET = "pipeline"
STORAGE = f"s3://{BUCKET}/ar"
DATASET = "e2e"
CLASSES = ("salsa dancing", "tap dancing", "robot dancing")
NAMES = (f"{DATASET}-keypoint", f"{DATASET}-rgb")


def _objects(endpoint: str) -> dict[str, str]:
    s3 = boto3.client("s3", endpoint_url=endpoint)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}


@pytest.fixture(scope="module")
def smoke(
    s3_server: str, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The sources served, the smoke command's argv and environment; the first run's JSON and S3 objects."""
    import torch
    from torchvision.models import resnet18

    work = tmp_path_factory.mktemp("pipeline")
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=BUCKET)
    generated = make_demo_videos(work / "videos", per_class=5)
    csv_path, routes = write_demo_annotations(work / "kinetics-600_demo.csv", generated, VIDEOS)
    pose = untrained_pose_pt(work / "weights")
    backbone = work / "weights" / "resnet18-untrained.pth"
    torch.save(resnet18(weights=None).state_dict(), backbone)
    files = {"/kinetics.csv": csv_path, f"/{pose.name}": pose, f"/{backbone.name}": backbone}
    env = {
        **os.environ,
        **short_training_env(),
        "AR__POSE__CONF": "0.0001",  # random weights score nobody by default
        # Every candidate cleanlab finds is listed (models of 3 epochs on 12 clips are never 10x sure): the
        # review's evidence reaching S3 is tested here, the list's precision in bench_curation.
        "AR__REVIEW__MIN_ODDS": "1",
        "AR_NETWORK_RETRIES": "0",
        "AR__DOWNLOAD__BACKOFF_BASE_S": "0.1",
        "AR__TRAIN__SYSTEM_METRICS": "false",
    }
    with VideoServer(routes, files=files) as server:  # type: ignore[arg-type]
        argv = [
            sys.executable,
            "-m",
            "devtools",
            "smoke",
            "--workdir",
            str(work / "smoke"),
            "--annotations",
            f"{server.base_url}/kinetics.csv",
            "--url-template",
            server.url_template,
            "--pose-weights-from",
            f"{server.base_url}/{pose.name}",
            "--backbone-weights-from",
            f"{server.base_url}/{backbone.name}",
            *(a for name in CLASSES for a in ("--class", name)),
            "--per-class",
            "4",
            "--epochs",
            str(SHORT_TRAINING["epochs"]),
            "--storage",
            STORAGE,
            "--tracking-uri",
            mlflow_server,
            "--dataset",
            DATASET,
            "--json",
        ]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1500, check=False)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        yield {
            "work": work,
            "argv": argv,
            "env": env,
            "server": server,
            "objects": _objects(s3_server),
            "requests": sum(server.requests.values()),
            "result": json.loads(proc.stdout.strip().splitlines()[-1]),
        }


def test_smoke_runs_the_whole_dag_on_s3_and_mlflow(
    smoke: dict[str, Any], mlflow_server: str, reliability: Reliability
) -> None:
    from mlflow import MlflowClient

    result = smoke["result"]
    assert result["weights"]["pose"] == f"{STORAGE}/weights/yolo11n-pose.pt", result["weights"]
    steps = result["step_seconds"]
    assert {
        "preflight",
        "plan_dataset",
        "download_clips",
        "extract_pose",
        "train_keypoint",
        "train_rgb",
    } <= set(steps)
    assert all(seconds >= 0 for seconds in steps.values())
    # 3 classes x 4 clips usable; the demo CSV's one 404 is recorded and topped up with the class's next clip.
    assert result["states"]["ok"] == 12 and sum(result["states"].values()) == result["rows"], result["states"]

    log = (smoke["work"] / "smoke" / "dags-test.log").read_text()
    with reliability.probe("secrets: the storage key is absent from every task log"):
        assert smoke["env"]["AWS_SECRET_ACCESS_KEY"] not in log, "a storage secret appeared in the task logs"

    client = MlflowClient(mlflow_server)
    for name in NAMES:
        model = result["models"][name]
        assert model["champion"] == f"models:/{name}@champion" and model["untrained"] is False
        assert len(client.search_model_versions(f"name='{name}'")) == 1
        champion = client.get_model_version_by_alias(name, "champion")
        assert champion.tags["ar.untrained"] == "false", "pulled weights are real weights"
        card = Path(
            client.download_artifacts(champion.run_id, "model_card.md", str(smoke["work"]))
        ).read_text()
        assert f"{STORAGE}/datasets/{DATASET}/manifest.csv" in card and "availability" in card, card
        run = client.get_run(champion.run_id)
        assert run.inputs.dataset_inputs, "the dataset is logged as an MLflow input"
        assert run.data.params["train.recipe"] == SHORT_TRAINING["recipe"], (
            "the suite's short profile reached it"
        )

    keys = set(smoke["objects"])
    for layer in (
        "raw/",
        "clips/",
        "keypoints/",
        f"datasets/{DATASET}/keypoints-",
        f"datasets/{DATASET}/frames-",
        f"ledger/{DATASET}/download/",
        "weights/yolo11n-pose.pt",
    ):
        assert any(k.startswith(f"ar/{layer}") for k in keys), f"nothing under ar/{layer}"
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    pose_sha = s3.get_object(Bucket=BUCKET, Key="ar/weights/yolo11n-pose.pt.sha256")["Body"].read().split()[0]
    tags = {k.split("/")[2] for k in keys if k.startswith("ar/keypoints/")}
    assert tags == {f"yolo11n-pose-{pose_sha.decode()[:8]}-i320-fall-m1"}, (
        f"the pulled weights made every keypoint: {tags}"
    )
    # Both datasets reviewed after promotion, each with its champion's recipe, stored content-keyed in S3 and
    # attached to the champion's run; the listed clips' thumbnails in S3 beside them.
    reviews = {}
    for key in (k for k in keys if k.startswith(f"ar/reviews/{DATASET}/")):
        body = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        reviews[body["family"]] = body
    assert set(reviews) == {"keypoint", "rgb"}, list(reviews)
    for name in NAMES:
        champion = client.get_model_version_by_alias(name, "champion")
        attached = [a.path for a in client.list_artifacts(champion.run_id) if a.path.startswith("review_")]
        assert len(attached) == 1, (name, attached)
    shown = [
        i["thumbnail"] for per in reviews["keypoint"]["per_class"].values() for i in per if i["thumbnail"]
    ]
    assert shown and {f"ar/{k}" for k in shown} <= keys, (shown, reviews["keypoint"]["per_class"])
    plan = json.loads(s3.get_object(Bucket=BUCKET, Key=f"ar/datasets/{DATASET}/plan.json")["Body"].read())
    assert plan["top_ups"], "the 404 clip was replaced by a top-up"
    report = ledger_status(open_storage(StorageConfig(uri=STORAGE)), DATASET)
    reliability.rows(
        "the pipeline DAG's ledger (every manifest row, top-ups included)", report.rows, report.states
    )


def test_a_rerun_and_the_retrain_change_nothing(
    smoke: dict[str, Any], s3_server: str, mlflow_server: str, reliability: Reliability
) -> None:
    """The same command again: no object created or rewritten, no model version, nothing downloaded. Then
    ``kinetics_retrain`` on the unchanged datasets: it finds them, reuses the finished trainings, and neither
    registers a new version nor moves a champion."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server)
    versions = {n: len(client.search_model_versions(f"name='{n}'")) for n in NAMES}
    with reliability.fault("re-running a finished DAG run"):
        again = subprocess.run(smoke["argv"], env=smoke["env"], capture_output=True, text=True, timeout=1500)
        assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
        now = _objects(s3_server)
        changed = {k for k in set(now) | set(smoke["objects"]) if now.get(k) != smoke["objects"].get(k)}
        reliability.duplicates("objects created or rewritten by a re-run", len(changed))
        assert changed == set(), "a re-run must not create or rewrite any object"
        after = {n: len(client.search_model_versions(f"name='{n}'")) for n in NAMES}
        reliability.duplicates(
            "model versions added by a re-run", sum(after.values()) - sum(versions.values())
        )
        assert after == versions
        assert sum(smoke["server"].requests.values()) == smoke["requests"], "a re-run downloads nothing"

    work = smoke["work"] / "smoke"  # the smoke command's Airflow home and settings
    env = airflow_env(
        work / "airflow",
        MLFLOW_TRACKING_URI=mlflow_server,
        AR__TRAIN__BACKBONE_WEIGHTS=f"{STORAGE}/weights/resnet18-untrained.pth",
    )
    retrain = {
        "storage_uri": STORAGE,
        "dataset": DATASET,
        "runner": "local",
        "gpu_enabled": False,
        "epochs": SHORT_TRAINING["epochs"],
        "rgb_allow_untrained": False,
    }
    dags_test("kinetics_retrain", retrain, env, work)
    assert {n: len(client.search_model_versions(f"name='{n}'")) for n in NAMES} == versions
    assert _objects(s3_server) == smoke["objects"]
