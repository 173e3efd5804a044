"""The small-data recipe: the epoch count chosen on val, then seeds refit on train + val and their logits
averaged, with a moving average of the weights; resumable in every stage; and the early-stop recipe beside
it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from action_recognition.config import TrainConfig
from action_recognition.storage import LocalStorage
from action_recognition.train import train_model
from tests.support.mlflow import sqlite_store


class Interrupted(Exception):
    """Raised from the progress callback: the process dying mid-training."""


def _cfg(tmp_path: Path, db: str = "m", **kw: object) -> TrainConfig:
    base = {
        "arch": "ddnet",
        "recipe": "refit",
        "epochs": 6,
        "patience": 3,
        "batch_size": 16,
        "seeds": 2,
        "threads": 1,
        "checkpoint_interval_s": 0,
        "system_metrics": False,
        "log_model": False,
    }
    return TrainConfig.model_validate({**base, **kw})


def _uri(tmp_path: Path, db: str = "m") -> str:
    """The MLflow store of the trainings of ``_cfg(tmp_path, db)``."""
    return sqlite_store(tmp_path / f"{db}.db")


def test_refit_trains_seeds_on_train_and_val_and_averages_them(
    synthetic_dataset: Path, tmp_path: Path
) -> None:
    import mlflow
    from mlflow import MlflowClient

    from action_recognition.datasets import load_dataset
    from action_recognition.models.ensemble import LogitAverage
    from action_recognition.models.skeleton import FlipAverage
    from action_recognition.services import fetch_model
    from action_recognition.serving import load_module

    stages: list[str] = []
    cfg = _cfg(tmp_path, log_model=True)
    result = train_model(
        cfg,
        str(synthetic_dataset),
        storage=LocalStorage(tmp_path / "store"),
        tracking_uri=_uri(tmp_path),
        progress=lambda row: stages.append(row["stage"]),
    )
    assert result.refit_epochs == result.best_epoch + 1 and result.refit_models == 2, result.summary()
    assert (
        stages
        == ["select"] * result.epochs_run
        + ["refit0"] * result.refit_epochs
        + ["refit1"] * result.refit_epochs
    )
    m = result.metrics
    assert {"test_top1_seed0", "test_top1_seed1", "test_top1_seed_mean", "test_top1_seed_std"} <= set(m), m
    assert m["test_top1_seed_std"] == pytest.approx(np.std([m["test_top1_seed0"], m["test_top1_seed1"]]))

    client = MlflowClient(_uri(tmp_path))
    run = client.get_run(result.run_id)
    assert run.data.tags["ar.recipe"] == "refit" and run.data.tags["ar.refit_epochs"] == str(
        result.refit_epochs
    )
    assert run.data.params["train.recipe"] == "refit" and run.data.params["train.seeds"] == "2"
    card = Path(client.download_artifacts(result.run_id, "model_card.md", str(tmp_path))).read_text()
    assert f"for {result.refit_epochs} epochs, their logits averaged" in card and "(seeds 0-1)" in card, card
    assert "Test-time flip" in card, "COCO-17 has left/right pairs: the logged model answers for both mirrors"
    refit_steps = client.get_metric_history(result.run_id, "refit1_train_loss")
    assert [s.step for s in refit_steps] == list(range(result.refit_epochs)), "each refit's epochs are logged"

    # The logged model is the average of the two refits (mirror-averaged: COCO-17) and gives the run's test
    # accuracy.
    folder = fetch_model(result.model_uri, _uri(tmp_path), tmp_path / "model")  # no process-wide URI needed
    model = load_module(folder)
    assert (
        isinstance(model, FlipAverage)
        and isinstance(model.model, LogitAverage)
        and len(model.model.members) == 2
    )
    data = load_dataset(synthetic_dataset)
    test = data.split == "test"
    import torch

    with torch.inference_mode():
        top1 = float((model(torch.from_numpy(data.data[test])).argmax(1).numpy() == data.labels[test]).mean())
    assert top1 == pytest.approx(m["test_top1"])
    # What a consumer of the registry gets: labels and probabilities, the same answers.
    answered = mlflow.pyfunc.load_model(str(folder)).predict(data.data[test])
    assert list(answered.columns) == [
        "label",
        "probability",
        "top_labels",
        "top_probabilities",
        "probabilities",
    ]
    truth = [data.classes[i] for i in data.labels[test]]
    assert float(np.mean(answered["label"] == truth)) == pytest.approx(m["test_top1"])
    assert np.allclose([sum(p) for p in answered["probabilities"]], 1.0)
    assert all(row.top_labels[0] == row.label and len(row.top_labels) == 5 for row in answered.itertuples())


def test_a_refit_killed_midway_resumes_to_the_same_model(synthetic_dataset: Path, tmp_path: Path) -> None:
    """Killed in the second refit: the retry skips the finished stages (their checkpoints, the moving average
    included) and ends with exactly the metrics of an unbroken training."""
    unbroken = train_model(
        _cfg(tmp_path, "unbroken"),
        str(synthetic_dataset),
        storage=LocalStorage(tmp_path / "unbroken"),
        tracking_uri=_uri(tmp_path, "unbroken"),
    )
    store = LocalStorage(tmp_path / "store")
    seen: list[tuple[str, int]] = []

    def die_in_refit1(row: dict[str, Any]) -> None:
        seen.append((row["stage"], int(row["epoch"])))
        if row["stage"] == "refit1" and row["epoch"] == 0:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_model(
            _cfg(tmp_path),
            str(synthetic_dataset),
            storage=store,
            tracking_uri=_uri(tmp_path),
            progress=die_in_refit1,
        )
    resumed: list[tuple[str, int]] = []
    result = train_model(
        _cfg(tmp_path),
        str(synthetic_dataset),
        storage=store,
        tracking_uri=_uri(tmp_path),
        progress=lambda row: resumed.append((row["stage"], int(row["epoch"]))),
    )
    assert resumed == [("refit1", e) for e in range(1, unbroken.refit_epochs)], resumed
    assert result.metrics == unbroken.metrics
    assert (result.best_epoch, result.refit_epochs) == (unbroken.best_epoch, unbroken.refit_epochs)


def test_the_early_stop_recipe_keeps_one_model_of_the_best_val_epoch(
    synthetic_dataset: Path, tmp_path: Path
) -> None:
    result = train_model(
        _cfg(tmp_path, recipe="early_stop"),
        str(synthetic_dataset),
        storage=LocalStorage(tmp_path / "store"),
        tracking_uri=_uri(tmp_path),
    )
    assert (result.refit_epochs, result.refit_models) == (0, 0)
    assert not any(k.startswith("test_top1_seed") for k in result.metrics)
    assert result.metrics["best_val_acc"] == max(h["val_acc"] for h in result.history)


def test_the_fixed_recipe_trains_every_labelled_clip_without_validation(
    synthetic_dataset: Path, tmp_path: Path
) -> None:
    """``fixed`` (what the default ``auto`` picks for a small keypoint set): no selection stage, ``seeds``
    models on train + val for ``epochs`` each, logits averaged; the run says so (no best_val_acc: nothing was
    validated) and says why this recipe."""
    from mlflow import MlflowClient

    stages: list[str] = []
    assert TrainConfig().recipe == "auto"
    cfg = _cfg(tmp_path, recipe="auto", epochs=4, log_model=True)
    result = train_model(
        cfg,
        str(synthetic_dataset),
        storage=LocalStorage(tmp_path / "store"),
        tracking_uri=_uri(tmp_path),
        progress=lambda row: stages.append(row["stage"]),
    )
    assert stages == ["refit0"] * 4 + ["refit1"] * 4, stages
    assert (result.refit_epochs, result.refit_models, result.best_epoch) == (4, 2, 3), result.summary()
    assert "best_val_acc" not in result.metrics and "test_top1_seed1" in result.metrics
    run = MlflowClient(_uri(tmp_path)).get_run(result.run_id)
    assert run.data.tags["ar.recipe"] == "fixed" and run.data.params["train.recipe"] == "fixed"
    assert (
        run.data.tags["ar.recipe_reason"].startswith("auto: ")
        and "keypoint" in run.data.tags["ar.recipe_reason"]
    )
    card = Path(
        MlflowClient(_uri(tmp_path)).download_artifacts(result.run_id, "model_card.md", str(tmp_path))
    )
    assert "Recipe `fixed`" in card.read_text() and "no validation carve-out" in card.read_text()


def test_the_moving_average_is_what_validation_sees(synthetic_dataset: Path, tmp_path: Path) -> None:
    """With the average on, the kept weights are the average's (they differ from the last raw weights); off,
    the raw ones: the two recipes' runs differ."""
    on = train_model(
        _cfg(tmp_path, "on", recipe="early_stop"),
        str(synthetic_dataset),
        storage=LocalStorage(tmp_path / "on"),
        tracking_uri=_uri(tmp_path, "on"),
    )
    off = train_model(
        _cfg(tmp_path, "off", recipe="early_stop", ema_decay=0.0),
        str(synthetic_dataset),
        storage=LocalStorage(tmp_path / "off"),
        tracking_uri=_uri(tmp_path, "off"),
    )
    assert on.fingerprint != off.fingerprint
    assert [h["val_loss"] for h in on.history] != [h["val_loss"] for h in off.history]
