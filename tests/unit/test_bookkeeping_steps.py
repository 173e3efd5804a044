"""The bookkeeping steps the DAGs run as StepOperators like every other step: ``latest-dataset`` (what a
retrain or a review reads), ``health --write --if-planned`` (the health page after a retrain) and
``summarise`` (a pipeline run's summary and its health page). Nothing to do is ``{"nothing_to_do": reason}``, which
the operator turns into a skipped task (tests/unit/test_operators.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from action_recognition.cli import app
from action_recognition.health import read_health
from action_recognition.pipeline import write_latest
from action_recognition.storage import LocalStorage
from tests.support.mlflow import sqlite_store
from tests.support.paths import KINETICS


def cli(*args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(app, [*args, "--json"])
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return result.exit_code, json.loads(lines[-1]) if lines else {}


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("storage")
    code, plan = cli(
        "plan",
        "--annotations",
        str(KINETICS / "kinetics-600_val.csv"),
        "--classes",
        "salsa dancing,tap dancing",
        "--per-class",
        "3",
        "--dataset",
        "d",
        "--storage",
        str(root),
    )
    assert code == 0 and plan["ok"], plan
    return {"storage": str(root), "tracking": sqlite_store(root / "mlflow.db")}


def test_latest_dataset_is_skipped_until_one_is_built(planned: dict[str, str]) -> None:
    args = ("latest-dataset", "--dataset", "d", "--storage", planned["storage"])
    assert cli(*args, "--kind", "frames") == (
        0,
        {"ok": True, "nothing_to_do": f"no frames dataset of d in {planned['storage']} yet"},
    )
    built = {"dataset_uri": f"{planned['storage']}/datasets/d/keypoints-abc.npz", "samples": 6}
    write_latest(LocalStorage(planned["storage"]), "d", "keypoints", built)
    assert cli(*args, "--kind", "keypoints") == (0, {"ok": True, **built})
    code, refused = cli(*args, "--kind", "skeletons")
    assert code == 2 and refused["retryable"] is False and "build.kind" in refused["error"], refused


def test_health_is_published_for_a_planned_dataset_and_skipped_otherwise(planned: dict[str, str]) -> None:
    common = ("--storage", planned["storage"], "--tracking-uri", planned["tracking"])
    assert cli("health", "--dataset", "never", "--write", "--if-planned", *common) == (
        0,
        {"ok": True, "nothing_to_do": f"never was never planned in {planned['storage']}"},
    )
    ids = ("--dag-id", "kinetics_retrain", "--run-id", "asset_triggered__1")
    code, written = cli("health", "--dataset", "d", "--write", "--if-planned", *ids, *common)
    assert code == 0 and written["written"].endswith("health/d.json"), written
    stored = read_health(LocalStorage(planned["storage"]), "d")
    assert stored is not None and (stored["dag_id"], stored["run_id"]) == (
        "kinetics_retrain",
        "asset_triggered__1",
    )
    assert sum(stored["status"]["states"].values()) == stored["status"]["rows"] == 6
    again = ("--dag-id", "kinetics_retrain", "--run-id", "scheduled__2")
    assert cli("health", "--dataset", "d", "--write", "--if-planned", *again, *common)[0] == 0
    kept = read_health(LocalStorage(planned["storage"]), "d")
    assert kept is not None and kept["run_id"] == "asset_triggered__1", "unchanged numbers: nothing rewritten"


def test_summarise_reports_each_family_and_publishes_health(planned: dict[str, str]) -> None:
    results = {
        "train_keypoint": {"arch": "ddnet", "run_id": "r1", "test_top1": 0.75, "untrained": False},
        "register_keypoint": {"registry_uri": "models:/d-keypoint/1"},
        "promote_keypoint": {"promoted": True, "reason": "first champion"},
        "train_rgb": None,  # skipped: not in the models Param
    }
    common = ("--dataset", "d", "--storage", planned["storage"], "--tracking-uri", planned["tracking"])
    code, summary = cli(
        "summarise",
        "--results",
        json.dumps(results),
        "--dag-id",
        "kinetics_pipeline",
        "--run-id",
        "m1",
        *common,
    )
    assert code == 0, summary
    assert summary["rows"] == 6 and set(summary["models"]) == {"keypoint"}
    keypoint = summary["models"]["keypoint"]
    assert (keypoint["test_top1"], keypoint["registered"], keypoint["promoted"]) == (
        0.75,
        "models:/d-keypoint/1",
        True,
    )
    assert summary["health_uri"].endswith("health/d.json")
    assert read_health(LocalStorage(planned["storage"]), "d")["status"]["rows"] == 6


@pytest.mark.parametrize("given", ["{not json", "[1, 2]"])
def test_summarise_names_a_bad_results_value(planned: dict[str, str], given: str) -> None:
    code, failed = cli("summarise", "--results", given, "--dataset", "d", "--storage", planned["storage"])
    assert code == 2 and failed["retryable"] is False and "--results" in failed["error"], failed
