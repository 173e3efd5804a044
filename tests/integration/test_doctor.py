"""`action-recognition doctor`: each failure it exists to catch, caused for real where it can be (a missing
ffmpeg on PATH, weights not in storage or with another hash, a bucket that does not exist, an MLflow server
that is down or refuses the password, annotation URLs that answer 404 or something that is not a Kinetics
CSV), then the CLI's table, JSON and exit status naming every failure at once."""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import boto3
import pytest

from action_recognition.config import load_config
from action_recognition.doctor import Check, check_yt_dlp, run_checks
from action_recognition.storage import open_storage
from action_recognition.weights import pull
from tests.support.http import Site
from tests.support.paths import ROOT, free_port

pytestmark = [pytest.mark.integration]

CSV = ROOT / "tests/fixtures/kinetics/kinetics-600_val.csv"


def _answer(path: str, headers: Message) -> tuple[int, bytes, int | None]:
    """/kinetics.csv (a real Kinetics CSV), /other.csv (not one), 404 elsewhere; /api/2.0/mlflow/... answers
    401 unless the basic-auth password is "right", as MLflow's basic-auth app does."""
    if path.startswith("/api/2.0/mlflow/"):
        good = "Basic " + base64.b64encode(b"admin:right").decode()
        return (200 if headers.get("Authorization") == good else 401), b"{}", None
    body = {"/kinetics.csv": CSV.read_bytes()[:5000], "/other.csv": b"a,b,c\n1,2,3\n"}.get(path)
    return (404, b"", None) if body is None else (200, body, None)


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with Site.serving(_answer) as served:
        yield served


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def _config(tmp_path: Path, **sets: object) -> object:
    base = {
        "storage.uri": str(tmp_path / "store"),
        "plan.annotations": json.dumps([str(CSV)]),
        "pose.untrained": "true",
    }
    return load_config(overrides=[f"{k}={v}" for k, v in {**base, **sets}.items()])


def test_a_healthy_machine_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    report = run_checks(_config(tmp_path))  # type: ignore[arg-type]
    assert report.failed == [], report.table()
    checks = _by_name(report.checks)
    assert checks["javascript"].status == "ok" and "deno" in checks["javascript"].detail
    assert checks["storage"].status == "ok" and not list((tmp_path / "store").rglob("probe-*")), (
        "probe deleted"
    )


def test_ffmpeg_missing_from_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    checks = _by_name(run_checks(_config(tmp_path), skip=("mlflow",)).checks)  # type: ignore[arg-type]
    assert checks["ffmpeg"].status == "fail" and "apt-get install ffmpeg" in checks["ffmpeg"].detail
    assert checks["javascript"].status == "ok", "deno is handed to yt-dlp by path, not found on PATH"


def test_no_javascript_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import action_recognition.download as download

    # The runtime yt-dlp is handed is not there (a worker image built without the deno wheel).
    monkeypatch.setattr(download, "js_runtimes", lambda: {"deno": {"path": str(tmp_path / "deno")}})
    checks = _by_name(run_checks(_config(tmp_path), skip=("mlflow",)).checks)  # type: ignore[arg-type]
    assert checks["javascript"].status == "fail" and "runtime (deno)" in checks["javascript"].detail


def test_no_ejs_scripts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yt_dlp.dependencies

    monkeypatch.setattr(
        yt_dlp.dependencies, "yt_dlp_ejs", None
    )  # yt-dlp installed without its [default] extra
    checks = _by_name(run_checks(_config(tmp_path), skip=("mlflow",)).checks)  # type: ignore[arg-type]
    assert checks["javascript"].status == "fail" and "yt-dlp-ejs" in checks["javascript"].detail


def test_an_old_yt_dlp_is_a_warning() -> None:
    assert check_yt_dlp(dt.date(2099, 1, 1)).status == "warn"
    assert "update-yt-dlp" in check_yt_dlp(dt.date(2099, 1, 1)).detail


def test_weights_absent_or_with_another_hash(tmp_path: Path, s3_server: str) -> None:
    boto3.client("s3").create_bucket(Bucket="doctor-weights")
    src = tmp_path / "w.pt"
    src.write_bytes(b"weights")
    ref = pull(str(src), "w.pt", open_storage("s3://doctor-weights/ar"))
    absent = _config(
        tmp_path, **{"pose.untrained": "false", "pose.weights": "s3://doctor-weights/ar/weights/x.pt"}
    )
    assert _by_name(run_checks(absent, skip=("mlflow",)).checks)["pose-weights"].status == "fail"  # type: ignore[arg-type]
    other = _config(
        tmp_path, **{"pose.untrained": "false", "pose.weights": ref.uri, "pose.weights_sha256": "e" * 64}
    )
    check = _by_name(run_checks(other, skip=("mlflow",)).checks)["pose-weights"]  # type: ignore[arg-type]
    assert check.status == "fail" and ref.sha256 in check.detail
    good = _config(
        tmp_path, **{"pose.untrained": "false", "pose.weights": ref.uri, "train.backbone_weights": ref.uri}
    )
    checks = _by_name(run_checks(good, skip=("mlflow",)).checks)  # type: ignore[arg-type]
    assert checks["pose-weights"].status == checks["backbone-weights"].status == "ok"


def test_a_gpu_requested_where_there_is_none(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    checks = _by_name(run_checks(_config(tmp_path), gpu=True, skip=("mlflow",)).checks)  # type: ignore[arg-type]
    assert checks["gpu"].status == "fail"


def test_storage_that_cannot_be_written(tmp_path: Path, s3_server: str) -> None:
    cfg = _config(tmp_path, **{"storage.uri": "s3://no-such-bucket/ar"})
    check = _by_name(run_checks(cfg, skip=("mlflow",)).checks)["storage"]  # type: ignore[arg-type]
    assert check.status == "fail" and "no-such-bucket" in check.detail


def test_mlflow_down_or_refusing_the_password(
    tmp_path: Path, site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    check = _by_name(run_checks(_config(tmp_path)).checks)["mlflow"]  # type: ignore[arg-type]
    assert check.status == "fail" and "unreachable" in check.detail
    monkeypatch.setenv("MLFLOW_TRACKING_URI", site.url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    check = _by_name(run_checks(_config(tmp_path)).checks)["mlflow"]  # type: ignore[arg-type]
    assert check.status == "fail" and "refuses the credentials" in check.detail
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "right")
    assert _by_name(run_checks(_config(tmp_path)).checks)["mlflow"].status == "ok"  # type: ignore[arg-type]


def test_annotation_sources_that_moved_or_are_not_kinetics(tmp_path: Path, site: Site) -> None:
    sources = [
        f"{site.url}/kinetics.csv",
        f"{site.url}/validate.csv",
        f"{site.url}/other.csv",
        str(tmp_path / "x.csv"),
    ]
    cfg = _config(tmp_path, **{"plan.annotations": json.dumps(sources)})
    checks = [c for c in run_checks(cfg, skip=("mlflow",)).checks if c.name.startswith("annotations")]  # type: ignore[arg-type]
    assert [c.status for c in checks] == ["ok", "fail", "fail", "fail"], checks
    assert "404" in checks[1].detail and "not a Kinetics CSV" in checks[2].detail


def test_the_cli_names_every_failure_and_exits_2(tmp_path: Path, site: Site) -> None:
    sets = [
        "--set",
        f"plan.annotations=[{site.url}/validate.csv]",
        "--set",
        "pose.weights=/nowhere/yolo11n-pose.pt",
    ]
    argv = [sys.executable, "-m", "action_recognition", "doctor", "--storage", str(tmp_path / "s"), *sets]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    table = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert table.returncode == 2
    assert "FAIL  pose-weights" in table.stdout and "FAIL  annotations validate.csv" in table.stdout, (
        table.stdout
    )
    as_json = subprocess.run(
        [*argv, "--json"], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    summary = json.loads(as_json.stdout.strip().splitlines()[-1])
    assert as_json.returncode == 2 and summary["ok"] is False and summary["retryable"] is False
    assert summary["failed"] == ["pose-weights", "annotations validate.csv"], summary
