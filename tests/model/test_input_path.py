"""The training input path: the same batches whichever way they reach the device, and an epoch on the CPU that
prepares its batches in line. The GPU checks run where CUDA is (``benchmarks/gpu.sh`` runs them first)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from action_recognition.config import TrainConfig
from action_recognition.datasets import LabeledArrays
from action_recognition.models import ARCHS
from action_recognition.training.loop import EpochData, train_one_epoch
from action_recognition.training.state import TrainState

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _data(kind: str, n: int = 12) -> LabeledArrays:
    rng = np.random.default_rng(0)
    if kind == "keypoints":
        data = rng.random((n, 20, 17, 3), dtype=np.float32)
        data[:, :, :3, 2] = 0  # some joints unseen
    else:
        data = rng.integers(0, 255, (n, 4, 40, 48, 3), dtype=np.uint8)
    layout = "coco17" if kind == "keypoints" else None
    return LabeledArrays(
        data,
        np.arange(n) % 3,
        np.array(["train"] * n),
        ["a", "b", "c"],
        np.array([f"c{i}" for i in range(n)]),
        kind,
        layout,
    )


@cuda
@pytest.mark.parametrize(
    ("kind", "arch"), [("keypoints", "ddnet"), ("frames", "tsn-resnet18"), ("frames", "frame-resnet18")]
)
@pytest.mark.parametrize("augment", [True, False])
def test_a_gpu_batch_is_the_cpu_batch(kind: str, arch: str, augment: bool) -> None:
    data = _data(kind)
    idx = np.array([5, 0, 7, 3])
    on_cpu = EpochData.of(data, arch, torch.device("cpu"), 32 if kind == "frames" else 0)
    on_gpu = EpochData.of(data, arch, torch.device("cuda"), 32 if kind == "frames" else 0)
    assert on_gpu.x.is_cuda == (kind == "keypoints") and on_gpu.streams == (kind == "frames")
    a = on_cpu.train_batch(idx, augment, torch.Generator().manual_seed(1))
    b = on_gpu.train_batch(idx, augment, torch.Generator().manual_seed(1))
    assert b.is_cuda and a.shape == b.shape
    torch.testing.assert_close(b.cpu(), a, atol=1e-5, rtol=0)


def test_an_epoch_on_the_cpu_prepares_in_line_and_repeats() -> None:
    data = _data("keypoints", 40)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = ARCHS["lstm"].build(num_classes=3, joints=17, frames=20, layout="coco17")
        config = TrainConfig(batch_size=8, seed=3)
        state = TrainState.create(model, config, "lstm", 5, torch.device("cpu"), epochs=2)
        ds = EpochData.of(data, "lstm", torch.device("cpu"), 0)
        assert not ds.streams
        runs.append(train_one_epoch(state, ds, np.arange(40), config))
    assert runs[0] == runs[1] and 0 <= runs[0]["train_acc"] <= 1 and runs[0]["train_loss"] > 0
