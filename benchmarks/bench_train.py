"""Training throughput (samples/s) per architecture, on the CPU and on a GPU when one is present: the model
alone against the whole training loop, in the same run.

- *model alone*: the project's training step (``training.loop.train_step``: AMP on CUDA, clipped gradients,
  the schedule, the weights' moving average) on one batch already on the device, again and again;
- *loop*: ``train_one_epoch`` over an in-memory dataset of the same shapes: sampling, indexing, augmentation
  on the CPU, the copy to the device (prepared one batch ahead in a thread), then the same step.

Goal: the loop at most 1.15x the model's time per sample (``loop_vs_model``). Shapes as the target workload
(keypoints: 40 frames x 17 joints; RGB: 8 frames of 128x128, cropped to 112). Weights are random (speed only).
Run: ``make bench`` or ``python -m benchmarks.bench_train [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np
import torch

from action_recognition.config import TrainConfig
from action_recognition.datasets import LabeledArrays
from action_recognition.models import ARCHS
from action_recognition.training.loop import EpochData, train_one_epoch, train_step
from action_recognition.training.state import TrainState

GOAL = 1.15
CLASSES = 15


def dataset(family: str, n: int, seed: int = 0) -> LabeledArrays:
    rng = np.random.default_rng(seed)
    if family == "keypoint":
        data = rng.random((n, 40, 17, 3), dtype=np.float32)
        kind, layout = "keypoints", "coco17"
    else:
        data = rng.integers(0, 255, (n, 8, 128, 128, 3), dtype=np.uint8)
        kind, layout = "frames", None
    labels = (np.arange(n) % CLASSES).astype(np.int64)
    return LabeledArrays(
        data,
        labels,
        np.array(["train"] * n),
        [f"c{i}" for i in range(CLASSES)],
        np.array([f"clip{i}" for i in range(n)]),
        kind,
        layout,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(arch: str, device: torch.device, batch: int, steps: int) -> dict[str, Any]:
    spec = ARCHS[arch]
    data = dataset(spec.family, batch * steps)
    config = TrainConfig(batch_size=batch)
    if spec.family == "keypoint":
        model = spec.build(num_classes=CLASSES, joints=17, frames=40, layout="coco17")
    else:
        model = spec.build(num_classes=CLASSES, frames=8, pretrained=False)
    model = model.to(device)
    state = TrainState.create(model, config, arch, steps, device, epochs=1000)
    ds = EpochData.of(data, arch, device, 112 if spec.family == "rgb" else 0)
    idx = np.arange(len(data.labels))
    xb, yb = ds.train_batch(idx[:batch], True, state.gen), ds.y[:batch].to(device)
    for _ in range(3):  # warm-up: kernels chosen, allocator filled
        train_step(state, xb, yb, config)
    train_one_epoch(state, ds, idx[: batch * 2], config)

    def model_alone() -> float:
        _sync(device)
        began = time.perf_counter()
        for _ in range(steps):
            train_step(state, xb, yb, config)
        _sync(device)
        return time.perf_counter() - began

    def loop() -> float:
        _sync(device)
        began = time.perf_counter()
        train_one_epoch(state, ds, idx, config)
        _sync(device)
        return time.perf_counter() - began

    # Alternated, best of two each: a shared machine is noisy and the minimum is the least disturbed figure.
    model_s, loop_s = min(model_alone(), model_alone()), min(loop(), loop())
    return {
        "arch": arch,
        "batch": batch,
        "model_samples_per_s": round(batch * steps / model_s, 1),
        "loop_samples_per_s": round(batch * steps / loop_s, 1),
        "loop_vs_model": round(loop_s / model_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=8, help="timed steps per architecture")
    parser.add_argument(
        "--device", choices=["all", "cpu", "cuda"], default="all", help="all: the CPU and a GPU"
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    devices = [d for d in devices if args.device in ("all", d.type)]
    rows = []
    for device in devices:
        name = (
            torch.cuda.get_device_name(0)
            if device.type == "cuda"
            else f"cpu ({len(os.sched_getaffinity(0))} cores)"
        )
        for arch, spec in ARCHS.items():
            if device.type == "cpu" and arch == "r2plus1d-18":
                continue  # minutes per step on 2 cores; measured on GPU only
            batch = 64 if spec.family == "keypoint" else (16 if device.type == "cpu" else 64)
            steps = args.steps if device.type == "cpu" else 4 * args.steps
            rows.append({"device": name, **measure(arch, device, batch, steps)})
            r = rows[-1]
            print(
                f"{name:<24} {arch:<16} batch {batch:>3}: model {r['model_samples_per_s']:>9.1f}/s, "
                f"loop {r['loop_samples_per_s']:>9.1f}/s = {r['loop_vs_model']}x (goal <= {GOAL})",
                flush=True,
            )
    base = next(r["model_samples_per_s"] for r in rows if r["arch"] == "lstm")
    first = rows[0]["device"]
    ratios = {r["arch"]: round(r["model_samples_per_s"] / base, 2) for r in rows if r["device"] == first}
    print(f"model throughput vs lstm on {first}: {ratios}")
    if args.json:
        print(
            json.dumps(
                {
                    "rows": rows,
                    "ratio_vs_lstm_baseline": ratios,
                    "goal_loop_vs_model_at_most": GOAL,
                    "worst_loop_vs_model": max(r["loop_vs_model"] for r in rows),
                }
            )
        )


if __name__ == "__main__":
    main()
