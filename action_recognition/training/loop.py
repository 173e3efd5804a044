"""One epoch of training and one validation pass, over a dataset held as tensors in memory."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from action_recognition.config import TrainConfig
from action_recognition.datasets import LabeledArrays
from action_recognition.training.augment import augment_frames, augment_keypoints, centre_crop
from action_recognition.training.inference import batches, predict_logits
from action_recognition.training.state import TrainState, amp_dtype

#: Gradients are clipped to this norm.
MAX_GRAD_NORM = 5.0


@dataclass
class EpochData:
    """The dataset as the loop reads it: all samples as tensors, and how a batch is prepared."""

    x: Any
    y: Any
    data: LabeledArrays
    arch: str
    device: Any
    crop: int

    @classmethod
    def of(cls, data: LabeledArrays, arch: str, device: Any, crop: int) -> EpochData:
        import torch

        return cls(torch.from_numpy(data.data), torch.from_numpy(data.labels), data, arch, device, crop)

    def train_batch(self, idx: np.ndarray, augment: bool, gen: Any) -> Any:
        import torch

        xb = self.x[torch.as_tensor(idx)]
        if self.data.kind == "frames":
            xb = augment_frames(xb, gen, self.crop, self.device) if augment else centre_crop(xb, self.crop)
            if self.arch == "frame-resnet18":  # the baseline sees one random frame per clip
                pick = int(torch.randint(0, xb.shape[1], (1,), generator=gen))
                xb = xb[:, pick : pick + 1]
        elif augment:
            xb = augment_keypoints(xb, self.data.layout, gen)
        if self.device.type == "cuda" and not xb.is_cuda:  # pinned, so the copy runs beside the device's work
            xb = xb.pin_memory()
        return xb.to(self.device, non_blocking=True)


def epoch_order(state: TrainState, train_idx: np.ndarray, config: TrainConfig, labels: np.ndarray, k: int) -> Any:
    """The epoch's sample order: a permutation, or class-balanced draws (each class equally likely per draw)."""
    import torch

    if config.balanced_sampling:
        counts = np.bincount(labels[train_idx], minlength=k).astype(float)
        weights = (1.0 / np.maximum(counts, 1))[labels[train_idx]]
        return torch.multinomial(torch.from_numpy(weights), len(train_idx), True, generator=state.gen).numpy()
    return torch.randperm(len(train_idx), generator=state.gen).numpy()


def train_step(state: TrainState, xb: Any, yb: Any, config: TrainConfig) -> tuple[Any, Any]:
    """One optimiser step on a batch already on the device (AMP on CUDA, clipped gradients, the LR schedule stepped).
    Returns the loss and the correct count as device tensors: nothing here waits for the device."""
    import torch
    import torch.nn.functional as F

    with torch.autocast(xb.device.type, dtype=amp_dtype(xb.device), enabled=xb.device.type == "cuda"):
        logits = state.model(xb)
        loss = F.cross_entropy(logits.float(), yb, label_smoothing=config.label_smoothing)
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    state.scaler.unscale_(state.optimizer)
    torch.nn.utils.clip_grad_norm_(state.model.parameters(), MAX_GRAD_NORM)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    state.after_step()
    return loss.detach(), (logits.argmax(1) == yb).sum()


def train_one_epoch(state: TrainState, ds: EpochData, train_idx: np.ndarray, config: TrainConfig) -> dict[str, float]:
    """One pass over ``train_idx``. On an accelerator the input path overlaps it: a thread prepares the next batch
    (indexing, augmentation on the CPU, the pinned copy to the device) while the current one trains, in the same
    order and with the same random draws as one thread would; losses stay on the device until the epoch ends."""
    import torch

    state.model.train()
    order = epoch_order(state, train_idx, config, ds.data.labels, ds.data.num_classes)
    todo = [b for b in batches(train_idx[order], config.batch_size) if len(b) >= 2]  # BatchNorm needs two samples

    def prepare(batch: np.ndarray) -> tuple[Any, Any]:
        return ds.train_batch(batch, config.augment, state.gen), ds.y[torch.as_tensor(batch)].to(ds.device)

    total_loss, correct, seen = torch.zeros((), device=ds.device), torch.zeros((), device=ds.device), 0
    # On the CPU the device *is* the CPU: a second thread would only contend for its cores (measured: 2x slower).
    pool = ThreadPoolExecutor(1, thread_name_prefix="train-input") if ds.device.type != "cpu" else None
    with pool or nullcontext():
        ahead = (pool.submit(prepare, todo[0]) if pool else None) if todo else None
        for i, batch in enumerate(todo):
            xb, yb = ahead.result() if ahead is not None else prepare(batch)
            if pool is not None and i + 1 < len(todo):
                ahead = pool.submit(prepare, todo[i + 1])
            loss, right = train_step(state, xb, yb, config)
            total_loss += loss * len(batch)
            correct += right
            seen += len(batch)
    return {"train_loss": float(total_loss) / max(seen, 1), "train_acc": int(correct) / max(seen, 1),
            "lr": float(state.scheduler.get_last_lr()[0])}  # fmt: skip


def validate(model: Any, ds: EpochData, idx: np.ndarray, batch_size: int) -> dict[str, float]:
    """Loss and top-1 accuracy on ``idx`` (centre crop for RGB)."""
    import torch
    import torch.nn.functional as F

    logits = predict_logits(model, ds.x, idx, batch_size, ds.device, ds.crop)
    loss = float(F.cross_entropy(torch.from_numpy(logits), ds.y[torch.as_tensor(idx)]))
    return {"val_loss": loss, "val_acc": float((logits.argmax(1) == ds.data.labels[idx]).mean())}
