"""Every architecture: shapes for any joint count, loss falls, and learning well above chance on generated
data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from action_recognition.config import TrainConfig
from action_recognition.datasets import DatasetError, save_dataset, synthetic_skeletons
from action_recognition.models import ARCHS
from action_recognition.storage import LocalStorage
from action_recognition.train import TrainError, augment_keypoints, train_model
from tests.support.mlflow import sqlite_store

KEYPOINT_ARCHS = [a for a, s in ARCHS.items() if s.family == "keypoint"]


@pytest.mark.parametrize("arch", KEYPOINT_ARCHS)
@pytest.mark.parametrize(("joints", "layout"), [(17, "coco17"), (25, "ntu25"), (15, "joints15"), (13, None)])
def test_any_joint_count(arch: str, joints: int, layout: str | None) -> None:
    model = ARCHS[arch].build(num_classes=5, joints=joints, frames=24, layout=layout)
    x = torch.rand(3, 24, joints, 3)
    x[0, :5] = 0.0  # missing frames
    out = model(x)
    assert out.shape == (3, 5)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ["frame-resnet18", "tsn-resnet18"])
def test_rgb_shapes(arch: str) -> None:
    model = ARCHS[arch].build(num_classes=4, frames=4, pretrained=False)
    out = model(torch.randint(0, 255, (2, 4, 64, 64, 3), dtype=torch.uint8))
    assert out.shape == (2, 4)


@pytest.mark.parametrize("arch", KEYPOINT_ARCHS)
def test_loss_falls(arch: str) -> None:
    torch.manual_seed(0)
    d = synthetic_skeletons(num_classes=4, per_class=8, frames=24)
    x, y = torch.from_numpy(d["keypoints"]), torch.from_numpy(d["labels"])
    model = ARCHS[arch].build(num_classes=4, joints=17, frames=24, layout="coco17")
    opt = torch.optim.AdamW(model.parameters(), lr=ARCHS[arch].lr)
    losses = []
    for _ in range(60):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0], losses


def test_augmentation_keeps_the_contract() -> None:
    d = synthetic_skeletons(num_classes=2, per_class=8, frames=20, missing=0.2)
    x = torch.from_numpy(d["keypoints"])
    out = augment_keypoints(x, "coco17", torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, x)
    missing = out[..., 2] == 0
    assert missing.any()
    assert (out[missing][:, :2] == 0).all(), "a missing joint stays missing (zeros), never a made-up position"


@pytest.mark.slow
@pytest.mark.parametrize("arch", KEYPOINT_ARCHS)
def test_learns_well_above_chance(arch: str, synthetic_dataset: Path, tmp_path: Path) -> None:
    # One model (the early-stop recipe): what an architecture can learn; tests/model/test_recipe.py has the
    # refit.
    cfg = TrainConfig(
        arch=arch,
        epochs=30,
        batch_size=16,
        system_metrics=False,
        log_model=False,
        patience=30,
        recipe="early_stop",
    )
    store = LocalStorage(tmp_path / "store")
    result = train_model(
        cfg, str(synthetic_dataset), storage=store, tracking_uri=sqlite_store(tmp_path / "m.db")
    )
    chance = 1 / 6
    assert result.metrics["test_top1"] >= 3 * chance, result.metrics
    losses = [h["train_loss"] for h in result.history]
    assert min(losses[-5:]) < losses[0]


def test_rgb_learns_colour_classes(tmp_path: Path) -> None:
    """Random-weight ResNets (named untrained in the run) learn classes that differ by colour."""
    rng = np.random.default_rng(0)
    n_per, k = 12, 3
    frames = rng.integers(0, 60, size=(n_per * k, 4, 72, 72, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(k), n_per)
    for i, label in enumerate(labels):
        frames[i, ..., label] += 150
    split = np.array((["train"] * 8 + ["val"] * 2 + ["test"] * 2) * k)
    path = save_dataset(
        tmp_path / "colours-frames.npz",
        frames=frames,
        labels=labels,
        split=split,
        classes=["red", "green", "blue"],
    )
    for arch in ("frame-resnet18", "tsn-resnet18"):
        cfg = TrainConfig(
            arch=arch,
            epochs=6,
            batch_size=8,
            pretrained=False,
            allow_untrained=True,
            system_metrics=False,
            log_model=False,
            recipe="early_stop",
        )
        store = LocalStorage(tmp_path / "store")
        result = train_model(cfg, str(path), storage=store, tracking_uri=sqlite_store(tmp_path / "m.db"))
        assert result.untrained
        assert result.metrics["test_top1"] >= 2 / 3, (arch, result.metrics)


def test_untrained_rgb_needs_the_flag(tmp_path: Path) -> None:
    frames = np.zeros((6, 2, 32, 32, 3), np.uint8)
    path = save_dataset(
        tmp_path / "f.npz",
        frames=frames,
        labels=np.array([0, 1] * 3),
        split=np.array(["train"] * 4 + ["test"] * 2),
        classes=["a", "b"],
    )
    cfg = TrainConfig(arch="tsn-resnet18", pretrained=False)
    with pytest.raises(TrainError, match="--allow-untrained"):
        train_model(
            cfg, str(path), storage=LocalStorage(tmp_path / "s"), tracking_uri=sqlite_store(tmp_path / "m.db")
        )


def test_mismatched_arch_and_dataset(tmp_path: Path, synthetic_dataset: Path) -> None:
    cfg = TrainConfig(arch="tsn-resnet18", allow_untrained=True)
    uri = sqlite_store(tmp_path / "m.db")
    with pytest.raises(DatasetError, match=r"RGB model but the dataset holds keypoints"):
        train_model(cfg, str(synthetic_dataset), storage=LocalStorage(tmp_path / "s"), tracking_uri=uri)
    with pytest.raises(DatasetError, match="does not exist"):
        train_model(
            cfg, str(tmp_path / "missing.npz"), storage=LocalStorage(tmp_path / "s"), tracking_uri=uri
        )


def test_the_vocabulary_names_exactly_the_architectures_built() -> None:
    """names.py (light, read by the DAG form and the config) and models.ARCHS (the builders) agree."""
    from action_recognition import names
    from action_recognition.models import ARCHS

    assert list(ARCHS) and set(ARCHS) == set(names.ARCH_NAMES)
    assert {a: s.family for a, s in ARCHS.items()} == {a: names.family_of(a) for a in names.ARCH_NAMES}
