"""`make demo` as a newcomer meets it: `python -m devtools demo` prints each task as it ends (plain lines when
not on a terminal, as in CI), a table, the champions, and three next steps that work as printed: the MLflow UI
on the demo's store answers, and predict with the champion gives labels."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.paths import ROOT, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_demo_shows_progress_and_next_steps_that_work(tmp_path: Path) -> None:
    argv = [
        sys.executable,
        "-m",
        "devtools",
        "demo",
        "--workdir",
        str(tmp_path / "demo"),
        "--epochs",
        "2",
        "--videos",
        str(ROOT / "tests/fixtures/videos"),
    ]
    # From a scratch folder (nothing written into the checkout); devtools lives beside dags/, not in the venv.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=1500, check=False, cwd=tmp_path, env=env
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    progress = proc.stderr
    assert "done         preflight" in progress, progress[-3000:]
    assert re.search(r"download_clips (\d) of (\d).*states ok=\d+", progress), (
        "mapped tasks as k of n, with counts"
    )
    assert "train_keypoint" in progress and "test_top1" in progress and "total (wall)" in progress
    assert "\r" not in progress, "no progress bar when stderr is not a terminal"
    out = proc.stdout
    assert "models:/demo-keypoint@champion" in out and "UNTRAINED" in out
    steps = {
        line.split(":", 1)[0].strip(): line.split(":  ", 1)[1]
        for line in out.splitlines()
        if line.startswith("  ") and line.strip()[:2] in ("1.", "2.", "3.")
    }
    assert steps["3. the deployed shape, trigger it from the Airflow UI"] == "make stack-up"
    assert "models:/demo-video@champion" in out, (
        "registration logged the video model, promotion moved its champion"
    )

    # kinetics_infer ran in the demo setting: one CSV, every video in one state, the not-a-video one
    # bad_media.
    found = re.search(
        r"kinetics_infer: 5 videos with (models:/demo-video/\d+): .* -> (\S+predictions\.csv)", out
    )
    assert found, out[-3000:]
    with open(found.group(2)) as f:
        rows = {r["video"]: r for r in csv.DictReader(f)}
    assert sorted(rows) == sorted(
        ["demo.mp4", "test.mp4", "S001C001P001R001A001_rgb.avi", "demo_skeleton.mp4", "not-a-video.mp4"]
    )
    assert rows["not-a-video.mp4"]["state"] == "bad_media" and rows["not-a-video.mp4"]["reason"], rows
    for name, row in rows.items():
        assert row["model"] == found.group(1)
        if name != "not-a-video.mp4":
            assert row["state"] == "ok" and row["label"] in (
                "salsa dancing",
                "tap dancing",
                "robot dancing",
            ), row
            assert json.loads(row["top_labels"])[0] == row["label"] and 0 < float(row["probability"]) <= 1
            assert row["overlay"], "the demo asks for overlays"

    # The video champion answers in Python as the consumers call it: a path in, labels with
    # probabilities.
    code = (
        "import mlflow, pandas, json, sys; m = mlflow.pyfunc.load_model('models:/demo-video@champion'); "
        "a = m.predict(pandas.DataFrame({'video': [sys.argv[1]]})); print(json.dumps(a.iloc[0].to_dict()))"
    )
    tracking = re.search(r"--tracking-uri (\S+)", steps["2. predict with the champion"]).group(1)
    answered = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "tests/fixtures/videos/demo.mp4")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking},
    )
    assert answered.returncode == 0, answered.stderr[-3000:]
    answer = json.loads(answered.stdout.strip().splitlines()[-1])
    assert (
        answer["label"] in ("salsa dancing", "tap dancing", "robot dancing")
        and abs(sum(answer["probabilities"]) - 1) < 1e-6
    )

    predict = shlex.split(steps["2. predict with the champion"])
    assert predict[0] == "action-recognition"
    done = subprocess.run(
        [sys.executable, "-m", "action_recognition", *predict[1:]],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0 and "%" in done.stdout and "UNTRAINED" in done.stdout, (
        done.stdout + done.stderr
    )

    ui = shlex.split(steps["1. the runs and the registry"].split("   (")[0])
    port = str(free_port())
    ui[ui.index("--port") + 1] = port
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", *ui[1:]],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                url = f"http://127.0.0.1:{port}/api/2.0/mlflow/registered-models/search"
                with urllib.request.urlopen(url, timeout=5) as resp:
                    assert b"demo-rgb" in resp.read()
                break
            except OSError:
                assert time.monotonic() < deadline, "the MLflow UI command as printed never answered"
                time.sleep(1)
    finally:
        server.terminate()
        server.wait(30)
