"""`make smoke-online` offline: the same `action-recognition smoke` command, pointed at the local video server for
its Kinetics CSV and its "YouTube", and at weight files made here (an untrained yolo11n-pose saved as .pt, an
untrained ResNet18 state dict) served over HTTP like release assets. Weights are pulled into storage first and the
run uses them as real weights: nothing in it is flagged untrained, so the run is not tagged so either."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from action_recognition.demo import make_demo_videos, write_demo_annotations
from action_recognition.localserve import VideoServer
from tests.support.paths import VIDEOS
from tests.support.weights import untrained_pose_pt

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_smoke_runs_the_real_path_against_local_sources(tmp_path: Path) -> None:
    import torch
    from torchvision.models import resnet18

    generated = make_demo_videos(tmp_path / "videos", per_class=4)
    csv_path, routes = write_demo_annotations(tmp_path / "kinetics-600_demo.csv", generated, VIDEOS)
    pose = untrained_pose_pt(tmp_path / "weights")
    backbone = tmp_path / "weights" / "resnet18-untrained.pth"
    torch.save(resnet18(weights=None).state_dict(), backbone)
    files = {"/kinetics.csv": csv_path, f"/{pose.name}": pose, f"/{backbone.name}": backbone}
    with VideoServer(routes, files=files) as server:  # type: ignore[arg-type]
        argv = [sys.executable, "-m", "action_recognition", "smoke", "--workdir", str(tmp_path / "smoke"),
                "--annotations", f"{server.base_url}/kinetics.csv", "--url-template", server.url_template,
                "--pose-weights-from", f"{server.base_url}/{pose.name}",
                "--backbone-weights-from", f"{server.base_url}/{backbone.name}",
                "--class", "salsa dancing", "--class", "tap dancing", "--class", "robot dancing",
                "--per-class", "3", "--epochs", "3", "--json"]  # fmt: skip
        env = {**os.environ, "AR__POSE__CONF": "0.0001"}  # random pose weights score nobody at the default
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1500, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["weights"]["pose"].endswith("/weights/yolo11n-pose.pt")
    steps = result["step_seconds"]
    assert {"preflight", "plan_dataset", "download_clips", "extract_pose", "train_keypoint", "train_rgb"} <= set(steps)
    assert all(seconds >= 0 for seconds in steps.values())
    # 3 classes x 3 clips usable; the demo CSV's one 404 is recorded and topped up with the class's next clip.
    assert result["states"]["ok"] == 9 and sum(result["states"].values()) == result["rows"], result["states"]
    for name in ("smoke-keypoint", "smoke-rgb"):
        model = result["models"][name]
        assert model["champion"] == f"models:/{name}@champion" and model["untrained"] is False
