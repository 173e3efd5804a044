"""The training that the kill tests interrupt: long enough to be killed mid-run, deterministic on one
thread."""

from __future__ import annotations


def train_args(dataset: str, store: str, experiment: str) -> list[str]:
    """``action-recognition train`` arguments: ddnet, 60 epochs, no early stop, one model (the early-stop
    recipe; tests/model/test_recipe.py kills a refit), one thread (exact resume checks), a checkpoint every
    epoch."""
    return [
        "train",
        "--dataset",
        dataset,
        "--arch",
        "ddnet",
        "--epochs",
        "60",
        "--storage",
        store,
        "--json",
        "--set",
        f"train.experiment={experiment}",
        "--set",
        "train.patience=1000",
        "--set",
        "train.batch_size=16",
        "--set",
        "train.system_metrics=false",
        "--set",
        "train.threads=1",
        "--set",
        "train.recipe=early_stop",
        "--set",
        "train.checkpoint_interval_s=0",
    ]
