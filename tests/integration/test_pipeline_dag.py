"""The whole kinetics_pipeline DAG with ``airflow dags test`` and the local runner, against the real S3 test server
and MLflow server; then a re-run of the finished run: no new object, no new model version, the ledger unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from action_recognition.config import StorageConfig
from action_recognition.demo import make_demo_videos, write_demo_annotations
from action_recognition.ledger import status as ledger_status
from action_recognition.localserve import VideoServer
from action_recognition.storage import open_storage
from tests.support.airflow import airflow_env, dags_test, init_airflow
from tests.support.paths import VIDEOS
from tests.support.reliability import Reliability

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _objects(endpoint: str, bucket: str) -> dict[str, str]:
    s3 = boto3.client("s3", endpoint_url=endpoint)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}


def test_pipeline_end_to_end_and_rerun(
    s3_server: str, mlflow_server: str, tmp_path: Path, reliability: Reliability
) -> None:
    from mlflow import MlflowClient

    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="pipeline")
    generated = make_demo_videos(tmp_path / "videos", per_class=5)
    csv_path, routes = write_demo_annotations(tmp_path / "kinetics-600_demo.csv", generated, VIDEOS)
    env = airflow_env(tmp_path / "airflow", MLFLOW_TRACKING_URI=mlflow_server, AR_RUNNER="local",
                      XDG_CACHE_HOME=str(tmp_path / "cache"))  # fmt: skip
    init_airflow(env)
    with VideoServer(routes) as server:  # type: ignore[arg-type]
        conf = {
            "annotations": [str(csv_path)], "classes": [], "class_contains": "dancing", "per_class": 4,
            "clips_per_shard": 6, "url_template": server.url_template, "pose_untrained": True,
            "rgb_allow_untrained": True, "epochs": 3, "storage_uri": "s3://pipeline/ar", "dataset": "e2e",
            "runner": "local", "gpu_enabled": False,
        }  # fmt: skip
        log = dags_test("kinetics_pipeline", conf, env, tmp_path)
        with reliability.probe("secrets: the storage key is absent from every task log"):
            assert env["AWS_SECRET_ACCESS_KEY"] not in log, "a storage secret appeared in the task logs"
        first = _objects(s3_server, "pipeline")
        requests_after_first = sum(server.requests.values())
        client = MlflowClient(mlflow_server)
        versions = {n: len(client.search_model_versions(f"name='{n}'")) for n in ("e2e-keypoint", "e2e-rgb")}
        assert versions == {"e2e-keypoint": 1, "e2e-rgb": 1}
        for name in versions:
            champion = client.get_model_version_by_alias(name, "champion")
            assert champion.tags["ar.untrained"] == "true", "untrained weights are named so"
            card = Path(client.download_artifacts(champion.run_id, "model_card.md", str(tmp_path))).read_text()
            assert "s3://pipeline/ar/datasets/e2e/manifest.csv" in card and "availability" in card, card
            run = client.get_run(champion.run_id)
            assert run.inputs.dataset_inputs, "the dataset is logged as an MLflow input"
        keys = set(first)
        assert any(k.startswith("ar/raw/") for k in keys) and any(k.startswith("ar/clips/") for k in keys)
        assert any(k.startswith("ar/keypoints/") for k in keys)
        assert any(k.startswith("ar/datasets/e2e/keypoints-") and k.endswith(".npz") for k in keys)
        assert any(k.startswith("ar/datasets/e2e/frames-") for k in keys)
        assert any(k.startswith("ar/ledger/e2e/download/") for k in keys)
        status = json.loads(boto3.client("s3", endpoint_url=s3_server).get_object(
            Bucket="pipeline", Key="ar/datasets/e2e/plan.json")["Body"].read())  # fmt: skip
        assert status["top_ups"], "the 404 clip was replaced by a top-up"
        report = ledger_status(open_storage(StorageConfig(uri="s3://pipeline/ar")), "e2e")
        reliability.rows("the pipeline DAG's ledger (every manifest row, top-ups included)", report.rows,
                         report.states)  # fmt: skip

        # The same run again: nothing new anywhere.
        with reliability.fault("re-running a finished DAG run"):
            dags_test("kinetics_pipeline", conf, env, tmp_path)
            again = _objects(s3_server, "pipeline")
            changed = {k for k in set(again) | set(first) if again.get(k) != first.get(k)}
            reliability.duplicates("objects created or rewritten by a re-run", len(changed))
            assert changed == set(), "a re-run must not create or rewrite any object"
            now = {n: len(client.search_model_versions(f"name='{n}'")) for n in versions}
            reliability.duplicates("model versions added by a re-run", sum(now.values()) - sum(versions.values()))
            assert now == versions
            assert sum(server.requests.values()) == requests_after_first, "a re-run downloads nothing"

    # The retraining DAG on the same (unchanged) datasets: it finds them, reuses the finished trainings, and neither
    # registers a new version nor moves a champion.
    retrain = {k: conf[k] for k in ("storage_uri", "dataset", "runner", "gpu_enabled", "epochs", "rgb_allow_untrained")}
    dags_test("kinetics_retrain", retrain, env, tmp_path)
    assert {n: len(client.search_model_versions(f"name='{n}'")) for n in versions} == versions
    assert _objects(s3_server, "pipeline") == first
