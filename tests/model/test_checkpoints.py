"""Checkpoints: training resumes from the last one, and a planted malicious pickle is refused."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from action_recognition.config import TrainConfig
from action_recognition.storage import LocalStorage
from action_recognition.train import TrainError, fingerprint, train_model
from tests.support.mlflow import sqlite_store
from tests.support.reliability import Reliability


class Interrupted(Exception):
    """Raised from the progress callback: the process dying mid-training."""


def _cfg(tmp_path: Path, **kw: object) -> TrainConfig:
    # The selection stage alone (tests/model/test_recipe.py resumes a refit).
    base = {
        "arch": "ddnet",
        "epochs": 5,
        "batch_size": 16,
        "system_metrics": False,
        "log_model": False,
        "recipe": "early_stop",
        "checkpoint_interval_s": 0,
    }
    return TrainConfig.model_validate({**base, **kw})


def test_resume_continues_from_the_last_epoch(synthetic_dataset: Path, tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "store")
    uri = sqlite_store(tmp_path / "m.db")
    seen: list[int] = []

    def stop_after_two(row: dict[str, float]) -> None:
        seen.append(int(row["epoch"]))
        if len(seen) == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_model(
            _cfg(tmp_path), str(synthetic_dataset), storage=store, tracking_uri=uri, progress=stop_after_two
        )
    assert seen == [0, 1]
    resumed: list[int] = []
    result = train_model(
        _cfg(tmp_path, resume=True),
        str(synthetic_dataset),
        storage=store,
        tracking_uri=uri,
        progress=lambda row: resumed.append(int(row["epoch"])),
    )
    assert resumed == [2, 3, 4], "epochs 0-1 came from the checkpoint"
    assert [int(h["epoch"]) for h in result.history] == [0, 1, 2, 3, 4]


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pwned",))


def test_a_planted_pickle_is_refused(
    synthetic_dataset: Path, tmp_path: Path, reliability: Reliability
) -> None:
    from action_recognition.datasets import load_dataset

    store = LocalStorage(tmp_path / "store")
    cfg = _cfg(tmp_path, resume=True)
    fp = fingerprint(cfg, "ddnet", load_dataset(synthetic_dataset).sha256)
    store.put_bytes(f"models/{fp[:16]}/last.pt", pickle.dumps({"model": _Evil()}))
    with (
        reliability.probe("torch.load: a planted pickle checkpoint"),
        pytest.raises(TrainError, match="refusing checkpoint"),
    ):
        train_model(cfg, str(synthetic_dataset), storage=store, tracking_uri=sqlite_store(tmp_path / "m.db"))
