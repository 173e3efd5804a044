"""Training throughput (samples/s) per architecture, on the CPU and on a GPU when one is present.

Each architecture trains for a fixed number of steps on the same generated batch shapes as the target workload
(keypoints: 40 frames x 17 joints; RGB: 8 frames of 112x112), after warm-up steps; the figure is samples per second
of forward + backward + optimizer step. Weights are random (shape and speed only). Run: ``make bench``.
"""

from __future__ import annotations

import json
import time

import torch
import torch.nn.functional as F

from action_recognition.models import ARCHS


def throughput(arch: str, device: torch.device, batch: int, steps: int = 6, warmup: int = 2) -> float:
    spec = ARCHS[arch]
    if spec.family == "keypoint":
        model = spec.build(num_classes=15, joints=17, frames=40, layout="coco17")
        x = torch.rand(batch, 40, 17, 3)
    else:
        model = spec.build(num_classes=15, frames=8, pretrained=False)
        frames = 1 if arch == "frame-resnet18" else 8
        x = torch.randint(0, 255, (batch, frames, 112, 112, 3), dtype=torch.uint8)
    model = model.to(device).train()
    x, y = x.to(device), torch.randint(0, 15, (batch,), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            began = time.perf_counter()
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - began)


def main() -> None:
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
        for arch, spec in ARCHS.items():
            if device.type == "cpu" and arch == "r2plus1d-18":
                continue  # minutes per step on 2 cores; measured on GPU only
            batch = 64 if spec.family == "keypoint" else (16 if device.type == "cpu" else 64)
            rows.append({"device": name, "arch": arch, "batch": batch,
                         "samples_per_s": round(throughput(arch, device, batch), 1)})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    base = next(r["samples_per_s"] for r in rows if r["arch"] == "lstm")
    print(json.dumps({"ratio_vs_lstm_baseline_cpu": {r["arch"]: round(r["samples_per_s"] / base, 2)
                                                     for r in rows if r["device"].startswith("cpu")}}))  # fmt: skip


if __name__ == "__main__":
    main()
