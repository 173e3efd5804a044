"""``python -m devtools smoke`` (``make smoke-online``) without a network: what it hands the DAG.

The smoke run is the demo's DAG run with other sources (the real Kinetics CSV, YouTube, real weights pulled into
storage first), so the suite's one whole ``kinetics_pipeline`` run (tests/integration/test_pipeline_dag.py)
proves the run; real weights read from storage by the pose step and the RGB trainer are
tests/integration/test_weights.py. Here: the weights are pulled into its storage once, and the run is asked
for exactly those weights, real (not untrained), on its sources. Airflow itself is replaced by a recorder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import devtools.smoke as smoke


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    calls: dict[str, Any] = {"runs": []}

    def local_airflow(workdir: Path, **extra: str) -> dict[str, str]:
        calls["airflow"] = {"workdir": workdir, **extra}
        return {"MLFLOW_TRACKING_URI": extra.get("MLFLOW_TRACKING_URI", f"sqlite:///{workdir}/mlflow.db")}

    def dags_test(workdir: Path, env: dict[str, str], conf: dict[str, Any], timeout_s: float) -> None:
        calls["runs"].append(conf)

    monkeypatch.setattr(smoke, "local_airflow", local_airflow)
    monkeypatch.setattr(smoke, "dags_test", dags_test)
    monkeypatch.setattr(smoke, "demo_summary", lambda store, uri, dataset: {"rows": 0, "states": {}})
    monkeypatch.setattr(smoke, "step_seconds", lambda env: {"plan_dataset": 1.0})
    return calls


def test_the_weights_are_pulled_once_and_the_run_uses_them_as_real(
    recorded: dict[str, Any], tmp_path: Path
) -> None:
    pose = tmp_path / "release" / "yolo11n-pose.pt"
    backbone = tmp_path / "release" / "resnet18-untrained.pth"
    pose.parent.mkdir()
    pose.write_bytes(b"pose weights")
    backbone.write_bytes(b"backbone weights")
    kwargs = {
        "annotations": "http://127.0.0.1:9/kinetics.csv",
        "classes": ("salsa dancing", "tap dancing"),
        "per_class": 2,
        "url_template": "http://127.0.0.1:9/v/{youtube_id}.mp4",
        "pose_source": str(pose),
        "backbone_source": str(backbone),
        "epochs": 3,
        "tracking_uri": "http://127.0.0.1:5000",
        "dataset": "e2e",
    }
    result = smoke.run_smoke(tmp_path / "smoke", **kwargs)  # type: ignore[arg-type]
    storage = tmp_path / "smoke" / "storage"
    assert result.weights == {
        "pose": str(storage / "weights" / "yolo11n-pose.pt"),
        "backbone": str(storage / "weights" / "resnet18-untrained.pth"),
    }
    assert (storage / "weights" / "yolo11n-pose.pt").read_bytes() == b"pose weights"
    assert recorded["airflow"]["AR__TRAIN__BACKBONE_WEIGHTS"] == result.weights["backbone"]
    assert recorded["airflow"]["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    (conf,) = recorded["runs"]
    assert conf["pose_weights"] == result.weights["pose"]
    assert conf["pose_untrained"] is False and conf["rgb_allow_untrained"] is False, "real weights, said so"
    assert (conf["annotations"], conf["url_template"]) == ([kwargs["annotations"]], kwargs["url_template"])
    assert (conf["classes"], conf["class_contains"]) == (["salsa dancing", "tap dancing"], None)
    assert (conf["per_class"], conf["epochs"], conf["dataset"]) == (2, 3, "e2e")
    assert (conf["storage_uri"], conf["runner"], conf["gpu_enabled"]) == (str(storage), "local", False)

    pose.write_bytes(b"other bytes at the source")  # pulled once: storage keeps what it has
    smoke.run_smoke(tmp_path / "smoke", **kwargs)  # type: ignore[arg-type]
    assert (storage / "weights" / "yolo11n-pose.pt").read_bytes() == b"pose weights"
    assert recorded["runs"][1] == conf
    assert "step seconds" in result.table() and "plan_dataset" in result.table()
