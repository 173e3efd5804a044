"""Retraining repeats what won: a champion trained with a non-default architecture and epoch count, then more
clips; the next training with ``recipe_source=champion`` uses the champion's settings (read back from its
MLflow run), a trigger's own key wins over the champion's, promotion compares both on the new test set, the
retrain report names both dataset versions, and a champion recipe that no longer validates fails at once.

MLflow here is a SQLite store (the registry and artifacts are MLflow's own code either way); the real tracking
server is tests/integration/test_mlflow_registry.py's, and the DAG path under a real scheduler is tests/ui.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from action_recognition.config import RegistryConfig, TrainConfig
from action_recognition.datasets import save_dataset, synthetic_skeletons
from action_recognition.errors import ConfigError
from action_recognition.evaluate import evaluate_model
from action_recognition.recipe import TRAIN_CONFIG_ARTIFACT, champion_recipe, choose_recipe
from action_recognition.registry import promote, register_run
from action_recognition.retrain_report import REPORT_ARTIFACT, latest_reports, report_markdown
from action_recognition.storage import LocalStorage
from action_recognition.train import train_model
from tests.support.mlflow import sqlite_store

NAME = "grow-keypoint"


def _cfg(**kw: Any) -> TrainConfig:
    base = {
        "epochs": 3,
        "batch_size": 16,
        "recipe": "early_stop",
        "threads": 1,
        "system_metrics": False,
        "checkpoint_interval_s": 0,
        "experiment": "retrain-recipe",
    }
    return TrainConfig.model_validate({**base, **kw})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A champion of ``grow-keypoint`` (stgcn, 5 epochs, lr 2e-3: none of them the defaults) trained on 20
    clips a class, and the same classes grown to 30 clips a class (a new test set)."""
    tmp = tmp_path_factory.mktemp("retrain-recipe")
    tracking = sqlite_store(tmp / "mlflow.db")
    old = save_dataset(tmp / "grow-v1.npz", **synthetic_skeletons(num_classes=4, per_class=20, frames=24))
    new = save_dataset(tmp / "grow-v2.npz", **synthetic_skeletons(num_classes=4, per_class=30, frames=24))
    store = LocalStorage(tmp / "store")
    won = train_model(
        _cfg(keypoint_arch="stgcn", epochs=5, lr=2e-3),
        str(old),
        storage=store,
        tracking_uri=tracking,
        dataset_name="grow",
    )
    register_run(won.run_id, NAME, RegistryConfig(), tracking_uri=tracking)
    assert promote(NAME, RegistryConfig(), tracking_uri=tracking).promoted
    return {"tracking": tracking, "old": old, "new": new, "store": store, "champion": won, "tmp": tmp}


def test_the_retrain_repeats_the_champion_s_recipe_on_the_new_data(world: dict[str, Any]) -> None:
    """The deployment's defaults say ddnet and 3 epochs; the champion's run says stgcn, 5 epochs, lr 2e-3:
    the retrain trains the champion's, says where each key came from, and the report compares both on the
    new test set, per class, with the clips added."""
    from mlflow import MlflowClient

    tracking = world["tracking"]
    client = MlflowClient(tracking)
    retrain = train_model(
        _cfg(recipe_source="champion"),
        str(world["new"]),
        storage=world["store"],
        tracking_uri=tracking,
        dataset_name="grow",
    )
    assert (retrain.arch, retrain.recipe_source) == ("stgcn", "champion"), retrain.summary()
    assert retrain.recipe_champion_run == world["champion"].run_id
    run = client.get_run(retrain.run_id)
    assert run.data.params["train.epochs"] == "5" and run.data.params["train.lr"] == "0.002"
    assert run.data.tags["ar.recipe_source"] == "champion"
    sources = json.loads(Path(client.download_artifacts(retrain.run_id, "recipe_sources.json")).read_text())
    assert (
        sources["keys"]["epochs"]
        == sources["keys"]["keypoint_arch"]
        == f"champion {world['champion'].run_id}"
    )
    logged = json.loads(Path(client.download_artifacts(retrain.run_id, TRAIN_CONFIG_ARTIFACT)).read_text())
    assert logged["arch"] == "stgcn" and logged["train"]["epochs"] == 5

    register_run(retrain.run_id, NAME, RegistryConfig(), tracking_uri=tracking)
    # A margin no model can clear: the challenger is kept out, the champion stays (promotion on a win only).
    decision = promote(
        NAME,
        RegistryConfig(promotion_margin=1.0),
        tracking_uri=tracking,
        reevaluate=lambda model, data: evaluate_model(model, data, tracking_uri=tracking),
    )
    assert not decision.promoted and "does not beat" in decision.reason
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    # New clips, a new test set: the champion was scored on the challenger's before the two compared.
    assert "the champion re-evaluated" in decision.compared_on and str(world["new"]) in decision.compared_on
    assert decision.champion_per_class is not None and len(decision.champion_per_class) == 4
    from action_recognition.retrain_report import log_report, retrain_report

    report = retrain_report(client, decision)
    log_report(client, report)
    assert report["champion"]["dataset_uri"] == str(world["old"])
    assert report["challenger"]["dataset_uri"] == str(world["new"])
    assert report["champion"]["dataset_sha256"] != report["challenger"]["dataset_sha256"]
    assert all(row["change"] == 10 for row in report["clips"].values()), report["clips"]
    assert set(report["per_class"]) == set(report["clips"])
    assert report["recipe"]["source"] == "champion" and report["recipe"]["arch"] == "stgcn"
    assert report["decision"] == "kept the champion"
    assert {row["champion"] for row in report["per_class"].values()} <= {0.0, 0.25, 0.5, 0.75, 1.0, None}
    assert "grow-v1.npz" in report_markdown(report) and "+10" in report_markdown(report)
    reports = latest_reports(client, "grow")
    assert reports["keypoint"]["challenger"]["run_id"] == retrain.run_id
    assert client.download_artifacts(retrain.run_id, REPORT_ARTIFACT)


def test_a_key_given_at_trigger_time_wins_over_the_champion_s(world: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    champion = champion_recipe(MlflowClient(world["tracking"]), NAME)
    assert champion is not None
    given = _cfg(recipe_source="champion", epochs=2, recipe_overrides=["epochs"])
    choice = choose_recipe(given, champion, "keypoint")
    assert choice.config.epochs == 2 and choice.sources["epochs"] == "trigger"
    assert choice.config.keypoint_arch == "stgcn" and choice.sources["lr"] == f"champion {champion.run_id}"
    assert "tracking_uri" not in choice.sources, "where a run executes is the deployment's, never a recipe"
    assert (
        choose_recipe(given.model_copy(update={"recipe_source": "form"}), champion, "keypoint").source
        == "form"
    )
    nothing = choose_recipe(given, None, "keypoint")
    assert nothing.source == "default (no champion)" and nothing.config.keypoint_arch == "ddnet"


def test_a_recipe_that_no_longer_validates_fails_at_once_named(world: dict[str, Any], tmp_path: Path) -> None:
    """A champion whose logged architecture was removed since: the retrain refuses before any training,
    naming the model, its run and the value; nothing is trained."""
    from mlflow import MlflowClient

    tracking = sqlite_store(tmp_path / "mlflow.db")
    client = MlflowClient(tracking)
    won = train_model(
        _cfg(),
        str(world["old"]),
        storage=LocalStorage(tmp_path / "s"),
        tracking_uri=tracking,
        dataset_name="old",
    )
    register_run(won.run_id, "old-keypoint", RegistryConfig(), tracking_uri=tracking)
    promote("old-keypoint", RegistryConfig(), tracking_uri=tracking)
    logged = json.loads(Path(client.download_artifacts(won.run_id, TRAIN_CONFIG_ARTIFACT)).read_text())
    client.log_dict(won.run_id, {**logged, "arch": "posec3d"}, TRAIN_CONFIG_ARTIFACT)
    runs_before = len(client.search_runs([won.experiment_id]))
    with pytest.raises(ConfigError, match=rf"old-keypoint@champion .*run {won.run_id}.*posec3d"):
        train_model(
            _cfg(recipe_source="champion"),
            str(world["new"]),
            storage=LocalStorage(tmp_path / "s"),
            tracking_uri=tracking,
            dataset_name="old",
        )
    assert len(client.search_runs([won.experiment_id])) == runs_before, "nothing was trained"
    assert ConfigError.retryable is False
