"""`make demo` as a newcomer meets it: `action-recognition demo` prints each task as it ends (plain lines when not
on a terminal, as in CI), a table, the champions, and three next steps that work as printed: the MLflow UI on the
demo's store answers, and predict with the champion gives labels."""

from __future__ import annotations

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
    argv = [sys.executable, "-m", "action_recognition", "demo", "--workdir", str(tmp_path / "demo"), "--epochs", "2",
            "--videos", str(ROOT / "tests/fixtures/videos")]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1500, check=False, cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    progress = proc.stderr
    assert "done         preflight" in progress, progress[-3000:]
    assert re.search(r"download_clips (\d) of (\d).*states ok=\d+", progress), "mapped tasks as k of n, with counts"
    assert "train_keypoint" in progress and "test_top1" in progress and "total (wall)" in progress
    assert "\r" not in progress, "no progress bar when stderr is not a terminal"
    out = proc.stdout
    assert "models:/demo-keypoint@champion" in out and "UNTRAINED" in out
    steps = {line.split(":", 1)[0].strip(): line.split(":  ", 1)[1] for line in out.splitlines()
             if line.startswith("  ") and line.strip()[:2] in ("1.", "2.", "3.")}  # fmt: skip
    assert steps["3. the deployed shape, trigger it from the Airflow UI"] == "make stack-up"

    predict = shlex.split(steps["2. predict with the champion"])
    assert predict[0] == "action-recognition"
    done = subprocess.run([sys.executable, "-m", "action_recognition", *predict[1:]], capture_output=True,
                          text=True, timeout=600, check=False, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0 and "%" in done.stdout and "UNTRAINED" in done.stdout, done.stdout + done.stderr

    ui = shlex.split(steps["1. the runs and the registry"].split("   (")[0])
    port = str(free_port())
    ui[ui.index("--port") + 1] = port
    server = subprocess.Popen([sys.executable, "-m", "mlflow", *ui[1:]], cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
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
