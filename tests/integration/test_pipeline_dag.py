"""The suite's one whole ``kinetics_pipeline`` run (``airflow dags test``, the local runner), and it is `make
demo` as a newcomer meets it: ``python -m devtools demo`` prints each task as it ends (plain lines when not on a
terminal, as in CI), a table, the champions and three next steps that work as printed, then batch inference
with the new video champion (``kinetics_infer``).

Pointed with ``--storage`` and ``--tracking-uri`` at the real S3 test server and the real MLflow server (its
artifacts in S3), so the same run proves what lands there: every layer's objects, the reviews, the model cards,
the dataset inputs, no storage secret in a task log, every manifest row in one ledger state. Its "YouTube" is the
demo's local video server, its weights are untrained and every output says so; training uses the short profile
(``SHORT_TRAINING``).

Then the same DAG run again (no new object, no new model version, not one request to the video server) and
``kinetics_retrain`` on the unchanged datasets (it reuses the finished trainings). Real weights pulled into
storage and read by the pose step and the RGB trainer: tests/integration/test_weights.py. The deployed shape
(Celery, worker containers, MinIO's stand-in with IAM, MLflow behind auth): tests/stack/."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from action_recognition.config import StorageConfig
from action_recognition.ledger import status as ledger_status
from action_recognition.profiles import SHORT_TRAINING
from action_recognition.storage import open_storage
from devtools.demo import demo_settings, local_airflow, make_demo_videos, write_demo_annotations
from devtools.localserve import VideoServer
from devtools.smoke import step_seconds
from tests.support.airflow import ROOT, dags_test
from tests.support.paths import VIDEOS
from tests.support.reliability import Reliability

# The module's first test waits for the whole DAG run and kinetics_infer (about 4-8 minutes on 2 cores): the
# limit is the demo command's own, not pytest's default 600 s.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]

BUCKET = "pipeline"
STORAGE = f"s3://{BUCKET}/ar"
DATASET = "demo"
CLASSES = ("salsa dancing", "tap dancing", "robot dancing")
NAMES = (f"{DATASET}-keypoint", f"{DATASET}-rgb")
PER_CLASS = 4


def _objects(endpoint: str) -> dict[str, str]:
    s3 = boto3.client("s3", endpoint_url=endpoint)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}


def _next_steps(out: str) -> dict[str, str]:
    """The demo's numbered next steps: title -> command."""
    return {
        line.split(":", 1)[0].strip(): line.split(":  ", 1)[1]
        for line in out.splitlines()
        if line.startswith("  ") and line.strip()[:2] in ("1.", "2.", "3.")
    }


@pytest.fixture(scope="module")
def demo(
    s3_server: str, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The demo command run once from a scratch folder; its output, its work folder and the S3 objects after
    it."""
    scratch = tmp_path_factory.mktemp("pipeline")
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=BUCKET)
    work = scratch / "demo"
    argv = [
        sys.executable,
        "-m",
        "devtools",
        "demo",
        "--workdir",
        str(work),
        "--videos",
        str(VIDEOS),
        "--per-class",
        str(PER_CLASS),
        "--epochs",
        str(SHORT_TRAINING["epochs"]),
        "--storage",
        STORAGE,
        "--tracking-uri",
        mlflow_server,
    ]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),  # devtools lives beside dags/, not in the venv
        # Every candidate cleanlab finds is listed (models of 3 epochs on 12 clips are never 10x sure): the
        # review's evidence reaching S3 is tested here, the list's precision in bench_curation.
        "AR__REVIEW__MIN_ODDS": "1",
    }
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=1500, check=False, cwd=scratch, env=env
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    yield {"proc": proc, "work": work, "scratch": scratch, "env": env, "objects": _objects(s3_server)}


def test_the_demo_shows_progress_and_next_steps_that_work(demo: dict[str, Any], mlflow_server: str) -> None:
    progress = demo["proc"].stderr
    assert "done         preflight" in progress, progress[-3000:]
    assert re.search(r"download_clips (\d) of (\d).*states ok=\d+", progress), (
        "mapped tasks as k of n, with counts"
    )
    assert "train_keypoint" in progress and "test_top1" in progress and "total (wall)" in progress
    assert "\r" not in progress, "no progress bar when stderr is not a terminal"
    out = demo["proc"].stdout
    assert "models:/demo-keypoint@champion" in out and "UNTRAINED" in out
    assert "models:/demo-video@champion" in out, (
        "registration logged the video model, promotion moved its champion"
    )
    assert "short profile" in out, "the demo says it trained the short profile, not the product's recipe"
    steps = _next_steps(out)
    assert steps["3. the deployed shape, trigger it from the Airflow UI"] == "make stack-up"

    # 1: the MLflow server the demo was pointed at, as printed, lists its models.
    ui = steps["1. the runs and the registry"]
    assert ui == f"open {mlflow_server}", ui
    with urllib.request.urlopen(
        f"{mlflow_server}/api/2.0/mlflow/registered-models/search", timeout=30
    ) as resp:
        assert b"demo-rgb" in resp.read()

    # 2: predict with the champion, as printed.
    predict = shlex.split(steps["2. predict with the champion"])
    assert predict[0] == "action-recognition"
    done = subprocess.run(
        [sys.executable, "-m", "action_recognition", *predict[1:]],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=demo["scratch"],
    )
    assert done.returncode == 0 and "%" in done.stdout and "UNTRAINED" in done.stdout, (
        done.stdout + done.stderr
    )

    # The video champion answers in Python as the consumers call it: a path in, labels with
    # probabilities.
    code = (
        "import mlflow, pandas, json, sys; m = mlflow.pyfunc.load_model('models:/demo-video@champion'); "
        "a = m.predict(pandas.DataFrame({'video': [sys.argv[1]]})); print(json.dumps(a.iloc[0].to_dict()))"
    )
    answered = subprocess.run(
        [sys.executable, "-c", code, str(VIDEOS / "demo.mp4")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=demo["scratch"],
        env={**os.environ, "MLFLOW_TRACKING_URI": mlflow_server},
    )
    assert answered.returncode == 0, answered.stderr[-3000:]
    answer = json.loads(answered.stdout.strip().splitlines()[-1])
    assert answer["label"] in CLASSES and abs(sum(answer["probabilities"]) - 1) < 1e-6


def test_kinetics_infer_answers_every_video_in_one_state(demo: dict[str, Any]) -> None:
    """kinetics_infer ran in the demo setting: one CSV in S3, every video in one state, the not-a-video one
    bad_media."""
    out = demo["proc"].stdout
    found = re.search(
        r"kinetics_infer: 5 videos with (models:/demo-video/\d+): .* -> (\S+predictions\.csv)", out
    )
    assert found, out[-3000:]
    assert found.group(2).startswith(f"{STORAGE}/inference/{DATASET}/"), found.group(2)
    key = found.group(2).removeprefix(f"s3://{BUCKET}/")
    body = boto3.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
    rows = {r["video"]: r for r in csv.DictReader(io.StringIO(body))}
    assert sorted(rows) == sorted(
        ["demo.mp4", "test.mp4", "S001C001P001R001A001_rgb.avi", "demo_skeleton.mp4", "not-a-video.mp4"]
    )
    assert rows["not-a-video.mp4"]["state"] == "bad_media" and rows["not-a-video.mp4"]["reason"], rows
    for name, row in rows.items():
        assert row["model"] == found.group(1)
        if name != "not-a-video.mp4":
            assert row["state"] == "ok" and row["label"] in CLASSES, row
            assert json.loads(row["top_labels"])[0] == row["label"] and 0 < float(row["probability"]) <= 1
            assert row["overlay"], "the demo asks for overlays"


def test_the_run_lands_in_s3_and_mlflow(
    demo: dict[str, Any], mlflow_server: str, reliability: Reliability
) -> None:
    from mlflow import MlflowClient

    log = (demo["work"] / "dags-test.log").read_text()
    with reliability.probe("secrets: the storage key is absent from every task log"):
        assert demo["env"]["AWS_SECRET_ACCESS_KEY"] not in log, "a storage secret appeared in the task logs"

    client = MlflowClient(mlflow_server)
    for name in NAMES:
        assert len(client.search_model_versions(f"name='{name}'")) == 1
        champion = client.get_model_version_by_alias(name, "champion")
        assert champion.tags["ar.untrained"] == "true", "untrained weights are named so"
        card = Path(
            client.download_artifacts(champion.run_id, "model_card.md", str(demo["scratch"]))
        ).read_text()
        assert f"{STORAGE}/datasets/{DATASET}/manifest.csv" in card and "availability" in card, card
        run = client.get_run(champion.run_id)
        assert run.inputs.dataset_inputs, "the dataset is logged as an MLflow input"
        assert run.data.params["train.recipe"] == SHORT_TRAINING["recipe"], "the short profile reached it"

    keys = set(demo["objects"])
    for layer in (
        "raw/",
        "clips/",
        "keypoints/",
        f"datasets/{DATASET}/keypoints-",
        f"datasets/{DATASET}/frames-",
    ):
        assert any(k.startswith(f"ar/{layer}") for k in keys), f"nothing under ar/{layer}"
    assert any(k.startswith(f"ar/ledger/{DATASET}/download/") for k in keys)
    tags = {k.split("/")[2] for k in keys if k.startswith("ar/keypoints/")}
    assert len(tags) == 1 and tags.pop().endswith("-untrained"), (
        "one pose model made every keypoint, named so"
    )

    # Both datasets reviewed after promotion, each with its champion's recipe, stored content-keyed in S3 and
    # attached to the champion's run; the listed clips' thumbnails in S3 beside them.
    s3 = boto3.client("s3")
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

    # 3 classes x 4 clips usable; the demo CSV's one 404 is recorded and topped up with the class's next clip.
    plan = json.loads(s3.get_object(Bucket=BUCKET, Key=f"ar/datasets/{DATASET}/plan.json")["Body"].read())
    assert plan["top_ups"], "the 404 clip was replaced by a top-up"
    report = ledger_status(open_storage(StorageConfig(uri=STORAGE)), DATASET)
    assert report.states.get("ok") == PER_CLASS * len(CLASSES) and report.states.get("unavailable") == 1
    assert sum(report.states.values()) == report.rows, report.states
    reliability.rows(
        "the pipeline DAG's ledger (every manifest row, top-ups included)", report.rows, report.states
    )


def test_a_rerun_and_the_retrain_change_nothing(
    demo: dict[str, Any], s3_server: str, mlflow_server: str, reliability: Reliability
) -> None:
    """The same DAG run again, its videos served on the same address: no object created or rewritten, no
    model version, not one request for a video. Then ``kinetics_retrain`` on the unchanged datasets: it finds
    them, reuses the finished trainings, and neither registers a new version nor moves a champion."""
    from mlflow import MlflowClient

    work: Path = demo["work"]
    conf = json.loads((work / "dags-test.conf.json").read_text())
    # The demo's own Airflow home and settings (its database already migrated: migrating again is a no-op).
    env = local_airflow(work, **demo_settings("short", mlflow_server, {"AR__REVIEW__MIN_ODDS": "1"}))
    generated = make_demo_videos(work / "videos", PER_CLASS + 2)  # made by the demo: reused, not remade
    _, routes = write_demo_annotations(demo["scratch"] / "again.csv", generated, VIDEOS)
    port = int(re.search(r":(\d+)/", conf["url_template"]).group(1))
    client = MlflowClient(mlflow_server)
    versions = {n: len(client.search_model_versions(f"name='{n}'")) for n in NAMES}
    with reliability.fault("re-running a finished DAG run"), VideoServer(routes, port=port) as server:  # type: ignore[arg-type]
        assert server.url_template == conf["url_template"]
        dags_test("kinetics_pipeline", conf, env, demo["scratch"])
        now = _objects(s3_server)
        changed = {k for k in set(now) | set(demo["objects"]) if now.get(k) != demo["objects"].get(k)}
        reliability.duplicates("objects created or rewritten by a re-run", len(changed))
        assert changed == set(), "a re-run must not create or rewrite any object"
        after = {n: len(client.search_model_versions(f"name='{n}'")) for n in NAMES}
        reliability.duplicates(
            "model versions added by a re-run", sum(after.values()) - sum(versions.values())
        )
        assert after == versions
        assert sum(server.requests.values()) == 0, f"a re-run downloads nothing: {server.requests}"
    # What `make smoke-online` prints per task, read from Airflow's own records of a run (the smoke is networked).
    seconds = step_seconds(env)
    assert next(iter(seconds)) == "check_params" and "summarise" in seconds, seconds
    assert all(s >= 0 for s in seconds.values()), seconds

    retrain = {
        "storage_uri": STORAGE,
        "dataset": DATASET,
        "runner": "local",
        "gpu_enabled": False,
        "epochs": SHORT_TRAINING["epochs"],
        "rgb_allow_untrained": True,
    }
    dags_test("kinetics_retrain", retrain, env, demo["scratch"])
    assert {n: len(client.search_model_versions(f"name='{n}'")) for n in NAMES} == versions
    assert _objects(s3_server) == demo["objects"]
