"""The registry's consumers: a champion answers with labels and probabilities, ``<dataset>-video`` takes a
video, and both answer the same over HTTP from ``mlflow models serve`` (a real server, a real HTTP client) as
in-process and as ``action-recognition predict``. Bad input is a 400 with the reason, and the server keeps
serving."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

from action_recognition.config import TrainConfig
from action_recognition.datasets import load_dataset
from action_recognition.storage import LocalStorage
from action_recognition.train import train_model
from tests.support.serving import served_model
from tests.support.weights import untrained_pose_pt

pytestmark = pytest.mark.integration

VIDEO = Path(__file__).resolve().parents[1] / "fixtures" / "videos" / "demo.mp4"
COLUMNS = ["label", "probability", "top_labels", "top_probabilities", "probabilities"]


@pytest.fixture(scope="module")
def registered(
    mlflow_server: str, synthetic_dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A keypoint model trained, then registered and promoted through the CLI (which logs and registers the
    video model too), with pose weights from a file (an untrained YOLO saved as .pt: the same weights on every
    load)."""
    work = tmp_path_factory.mktemp("serving")
    env = dict(
        os.environ,
        AR__POSE__WEIGHTS=str(untrained_pose_pt(work / "weights")),
        AR__POSE__CONF="0.0001",
        AR__REGISTRY__VIDEO_MAX_MB="1",
        MLFLOW_TRACKING_URI=mlflow_server,
    )
    cfg = TrainConfig.model_validate(
        {
            "arch": "ddnet",
            "epochs": 3,
            "recipe": "early_stop",
            "experiment": "it-serving",
            "system_metrics": False,
        }
    )
    trained = train_model(
        cfg,
        str(synthetic_dataset),
        storage=LocalStorage(work / "s"),
        tracking_uri=mlflow_server,
        dataset_name="serve",
    )

    def cli(*args: str) -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-m", "action_recognition", *args, "--json"],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            check=False,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    registration = cli("register", "--run-id", trained.run_id, "--name", "serve-keypoint")
    promotion = cli("promote", "--name", "serve-keypoint")
    return {"env": env, "cli": cli, "registration": registration, "promotion": promotion, "work": work}


@pytest.fixture(scope="module")
def served(registered: dict[str, Any]) -> Iterator[dict[str, str]]:
    """``mlflow models serve`` of both champions (the project's environment: --env-manager local)."""
    work = registered["work"]
    with (
        served_model(
            "models:/serve-keypoint@champion", registered["env"], work / "serve-keypoint.log"
        ) as keypoint,
        served_model("models:/serve-video@champion", registered["env"], work / "serve-video.log") as video,
    ):
        yield {"serve-keypoint": keypoint, "serve-video": video}


def test_registration_logs_the_video_model_and_promotion_moves_its_champion(
    registered: dict[str, Any],
) -> None:
    from mlflow import MlflowClient

    assert registered["registration"]["video"] == "models:/serve-video/1", registered["registration"]
    assert registered["promotion"]["video_champion"] == "models:/serve-video/1", registered["promotion"]
    client = MlflowClient()
    video = client.get_model_version_by_alias("serve-video", "champion")
    keypoint = client.get_model_version_by_alias("serve-keypoint", "champion")
    assert video.tags["ar.wraps"] == f"serve-keypoint/{keypoint.version}" and video.run_id == keypoint.run_id


def test_predict_in_process_and_served_give_the_same_answers(
    registered: dict[str, Any], served: dict[str, str], synthetic_dataset: Path
) -> None:
    import mlflow

    # The video model: `predict` with the keypoint champion, the video pyfunc in-process, and over HTTP.
    predicted = registered["cli"]("predict", str(VIDEO), "--model", "models:/serve-keypoint@champion")
    local = mlflow.pyfunc.load_model("models:/serve-video@champion").predict(
        pd.DataFrame({"video": [str(VIDEO)]})
    )
    assert list(local.columns) == COLUMNS and len(local) == 1
    assert [t["label"] for t in predicted["top"]] == local["top_labels"][0]
    assert np.allclose([t["probability"] for t in predicted["top"]], local["top_probabilities"][0], atol=1e-5)
    body = {
        "dataframe_split": {
            "columns": ["video_bytes"],
            "data": [[base64.b64encode(VIDEO.read_bytes()).decode()]],
        }
    }
    answer = requests.post(f"{served['serve-video']}/invocations", json=body, timeout=300)
    assert answer.status_code == 200, answer.text
    (row,) = answer.json()["predictions"]
    assert row["label"] == local["label"][0] and row["top_labels"] == local["top_labels"][0]
    assert np.allclose(row["probabilities"], local["probabilities"][0], atol=1e-5)
    assert abs(sum(row["probabilities"]) - 1) < 1e-6 and row["probability"] == max(row["probabilities"])

    # The keypoint model: its input tensor in, the same table in-process and served.
    data = load_dataset(synthetic_dataset)
    x = data.data[:3]
    local = mlflow.pyfunc.load_model("models:/serve-keypoint@champion").predict(x)
    answer = requests.post(
        f"{served['serve-keypoint']}/invocations", json={"inputs": x.tolist()}, timeout=120
    )
    assert answer.status_code == 200, answer.text
    rows = answer.json()["predictions"]
    assert [r["label"] for r in rows] == list(local["label"]) and set(rows[0]) == set(COLUMNS)
    assert set(local["label"]) <= set(data.classes)
    assert np.allclose([r["probabilities"] for r in rows], np.stack(local["probabilities"]), atol=1e-5)


@pytest.mark.parametrize(
    ("case", "body", "reason"),
    [
        (
            "not a video",
            {
                "dataframe_split": {
                    "columns": ["video_bytes"],
                    "data": [[base64.b64encode(b"hello, not a video" * 50).decode()]],
                }
            },
            "not a video that can be read",
        ),
        ("empty", {"dataframe_split": {"columns": ["video_bytes"], "data": [[""]]}}, "empty"),
        (
            "too large",
            {
                "dataframe_split": {
                    "columns": ["video_bytes"],
                    "data": [[base64.b64encode(b"\0" * (1024 * 1024 + 1)).decode()]],
                }
            },
            "more than this model's 1 MB",
        ),
        (
            "no video at all",
            {"dataframe_split": {"columns": ["video"], "data": [["/nonexistent/clip.mp4"]]}},
            "is not a file",
        ),
    ],
)
def test_bad_input_to_the_served_video_model_is_a_4xx_with_the_reason(
    served: dict[str, str], case: str, body: dict[str, Any], reason: str
) -> None:
    url = served["serve-video"]
    answer = requests.post(f"{url}/invocations", json=body, timeout=120)
    assert 400 <= answer.status_code < 500, (case, answer.status_code, answer.text[:500])
    assert reason in answer.text, (case, answer.text[:500])
    assert requests.get(f"{url}/ping", timeout=5).status_code == 200, f"the server is still up after {case}"


def test_bad_input_to_the_served_keypoint_model_is_a_4xx(served: dict[str, str]) -> None:
    url = served["serve-keypoint"]
    answer = requests.post(f"{url}/invocations", json={"inputs": [[1.0, 2.0]]}, timeout=60)
    assert 400 <= answer.status_code < 500 and "shape" in answer.text, answer.text[:500]
    assert requests.get(f"{url}/ping", timeout=5).status_code == 200


def test_batch_inference_of_youtube_ids_through_the_download_and_clip_steps(
    registered: dict[str, Any], tmp_path: Path
) -> None:
    """The steps of kinetics_infer for a CSV of YouTube ids (real yt-dlp against the local video server):
    every row ends in exactly one state in one CSV: labelled, unavailable (404), or bad input that never
    reached the network; the model version is resolved once and named in every row."""
    import csv

    from devtools.localserve import VideoServer

    cli = registered["cli"]
    table = tmp_path / "ids.csv"
    table.write_text(
        "youtube_id,time_start,time_end,label\n"
        "realvideo01,0,2,tap dancing\n"
        "gone0000404,0,3,salsa dancing\n"
        "bad$(id)xyz,0,3,\n"
        "realvideo01,0,2,tap dancing\n"
    )
    storage = str(tmp_path / "store")
    with VideoServer({"realvideo01": VIDEO, "gone0000404": 404}) as server:
        common = [
            "--storage",
            storage,
            "--set",
            "plan.dataset=serve",
            "--set",
            f"download.url_template={server.url_template}",
        ]
        plan = cli(
            "infer-plan", "--youtube-csv", str(table), "--model", "models:/serve-video@champion", *common
        )
        assert plan["model_uri"] == "models:/serve-video/1" and plan["videos"] == 4, plan
        for args in plan["download_shards"]:
            cli("download", *args, *common)
            cli("clip", *args, *common)
        for args in plan["shards"]:
            cli("infer", *args, *common)
        done = cli("infer-collect", "--key", plan["key"], *common)
    assert done["counts"] == {"ok": 1, "unavailable": 1, "bad_input": 2}, done
    with open(done["predictions_uri"]) as f:
        rows = {r["video"]: r for r in csv.DictReader(f)}
    ok = rows["realvideo01_000000_000002"]
    assert ok["state"] == "ok" and ok["given_label"] == "tap dancing" and ok["label"], ok
    assert rows["gone0000404_000000_000003"]["state"] == "unavailable"
    assert "invalid youtube_id" in rows["line-4"]["reason"] and rows["line-4"]["state"] == "bad_input"
    assert "the same clip as line 2" in rows["line-5"]["reason"]
    assert {r["model"] for r in rows.values()} == {"models:/serve-video/1"}
    again = cli("infer-collect", "--key", plan["key"], *common)
    assert again == done, "collecting twice changes nothing"


def test_the_video_model_reads_a_storage_uri(registered: dict[str, Any], s3_bucket: str) -> None:
    import boto3
    import mlflow

    boto3.client("s3").upload_file(str(VIDEO), s3_bucket.removeprefix("s3://"), "incoming/demo.mp4")
    model = mlflow.pyfunc.load_model("models:/serve-video@champion")
    from_s3 = model.predict(pd.DataFrame({"video": [f"{s3_bucket}/incoming/demo.mp4"]}))
    local = model.predict(pd.DataFrame({"video": [str(VIDEO)]}))
    assert from_s3["top_labels"][0] == local["top_labels"][0]
    assert np.allclose(from_s3["probabilities"][0], local["probabilities"][0], atol=1e-6)
