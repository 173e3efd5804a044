"""The keypoint dataset contract: every way a file can break it gives a clear error naming the array."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from action_recognition.datasets import (
    DatasetError,
    carve_validation,
    load_dataset,
    save_dataset,
    synthetic_skeletons,
)
from tests.support.reliability import Reliability


def _write(path: Path, **arrays: object) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def _good() -> dict[str, object]:
    d = synthetic_skeletons(num_classes=3, per_class=10, frames=8)
    return {
        "keypoints": d["keypoints"],
        "labels": d["labels"],
        "split": d["split"],
        "classes": np.array(d["classes"]),
    }


def test_synthetic_dataset_holds_the_contract(tmp_path: Path) -> None:
    data = load_dataset(save_dataset(tmp_path / "d.npz", **synthetic_skeletons(num_classes=4, per_class=10)))
    assert data.kind == "keypoints"
    assert data.data.dtype == np.float32 and data.data.shape[1:] == (40, 17, 3)
    assert np.isfinite(data.data).all() and data.data.min() >= 0 and data.data.max() <= 1
    assert set(data.split.tolist()) == {"train", "val", "test"}
    assert data.layout == "coco17"
    assert len(data.sha256) == 64


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"keypoints": np.zeros((30, 8, 17), np.float32)}, r"keypoints must be \(N, T, J, 3\)"),
        ({"keypoints": np.zeros((30, 8, 17, 3), np.float64)}, "keypoints must be float32"),
        ({"keypoints": np.full((30, 8, 17, 3), np.nan, np.float32)}, "NaN or inf in 30 sample"),
        ({"keypoints": np.full((30, 8, 17, 3), 2.0, np.float32)}, r"must be in \[0, 1\]"),
        ({"labels": np.full(30, 7)}, r"labels must be in \[0, 3\)"),
        ({"labels": np.zeros(29, np.int64)}, r"labels must be int64 of shape \(30,\)"),
        ({"split": np.array(["train"] * 29 + ["holdout"])}, r"unknown value\(s\) \['holdout'\]"),
        ({"classes": np.array(["a", "a", "b"])}, "classes must be non-empty and unique"),
    ],
)
def test_broken_datasets_are_refused(
    tmp_path: Path, change: dict[str, object], message: str, reliability: Reliability
) -> None:
    arrays = {**_good(), **change}
    with reliability.bad_input(f"dataset: {message}", DatasetError, match=message):
        load_dataset(_write(tmp_path / "bad.npz", **arrays))


def test_missing_arrays_and_files(tmp_path: Path, reliability: Reliability) -> None:
    arrays = _good()
    del arrays["labels"]
    with reliability.bad_input("missing array 'labels'", DatasetError, match="missing array 'labels'"):
        load_dataset(_write(tmp_path / "a.npz", **arrays))
    with reliability.bad_input(
        "neither 'keypoints' nor 'frames'", DatasetError, match="neither 'keypoints' nor 'frames'"
    ):
        load_dataset(_write(tmp_path / "b.npz", labels=np.zeros(3)))
    with reliability.bad_input("does not exist", DatasetError, match="does not exist"):
        load_dataset(tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with reliability.bad_input(r"not a readable \.npz", DatasetError, match=r"not a readable \.npz"):
        load_dataset(tmp_path / "junk.npz")


def test_pickled_objects_are_never_loaded(tmp_path: Path, reliability: Reliability) -> None:
    arrays = _good()
    arrays["classes"] = np.array([{"evil": 1}, "b", "c"], dtype=object)
    with (
        reliability.probe("numpy: a pickled object in a dataset is never loaded"),
        pytest.raises(DatasetError, match="not a readable"),
    ):
        load_dataset(_write(tmp_path / "obj.npz", **arrays))


def test_carve_validation_is_stratified_and_seeded() -> None:
    labels = np.repeat(np.arange(4), 20)
    split = np.array(["train"] * 60 + ["test"] * 20)
    a = carve_validation(labels, split, 0.25, seed=1)
    b = carve_validation(labels, split, 0.25, seed=1)
    assert (a == b).all()
    assert (a == "test").sum() == 20
    for k in range(3):
        assert ((a == "val") & (labels == k)).sum() == 5
    assert (carve_validation(labels, a, 0.25, seed=2) == a).all(), "an existing val split is kept"
