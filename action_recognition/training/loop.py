"""One epoch of training and one validation pass, over a dataset held as tensors in memory."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from action_recognition.config import TrainConfig
from action_recognition.datasets import LabeledArrays
from action_recognition.training.augment import augment_frames, augment_keypoints, centre_crop, frame_draws
from action_recognition.training.inference import batches, predict_logits
from action_recognition.training.state import TrainState, amp_dtype

#: Gradients are clipped to this norm.
MAX_GRAD_NORM = 5.0


#: Keypoint datasets up to this size live on the accelerator for the whole training (40 x 17 x 3 float32 is 8
#: KB a clip: about 260,000 clips); batches are indexed and augmented there, nothing crosses per step. Larger
#: ones stream from host memory, a batch ahead, as frames do.
ON_DEVICE_MAX_BYTES = 2 << 30


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

        x = torch.from_numpy(data.data)
        if device.type == "cuda" and data.kind == "keypoints" and x.nbytes <= ON_DEVICE_MAX_BYTES:
            x = x.to(device)
        return cls(x, torch.from_numpy(data.labels), data, arch, device, crop)

    @property
    def streams(self) -> bool:
        """True when batches come from host memory to an accelerator: worth preparing one ahead, in a
        thread."""
        return self.device.type != "cpu" and not self.x.is_cuda

    def train_batch(self, idx: np.ndarray, augment: bool, gen: Any) -> Any:
        import torch

        if self.data.kind == "frames" and self.device.type == "cuda":
            return self._frames_to_device(idx, augment, gen)
        xb = self.x[torch.as_tensor(idx, device=self.x.device)]
        if self.data.kind == "frames":
            xb = augment_frames(xb, gen, self.crop) if augment else centre_crop(xb, self.crop)
            if self.arch == "frame-resnet18":  # the baseline sees one random frame per clip
                pick = int(torch.randint(0, xb.shape[1], (1,), generator=gen))
                xb = xb[:, pick : pick + 1]
        elif augment:
            xb = augment_keypoints(xb, self.data.layout, gen)
        return xb.to(self.device, non_blocking=True)

    def _frames_to_device(self, idx: np.ndarray, augment: bool, gen: Any) -> Any:
        """A frames batch for a GPU, with the random draws of the CPU path in the same order: the crop (and
        the frame for frame-resnet18) chosen first, then one gather of just those pixels into pinned memory,
        the copy, and the flip on the device."""
        import torch

        _, t, h, w, _ = self.x.shape
        if augment:
            top, left, flip = frame_draws(gen, len(idx), h, w, self.crop)
        else:
            top, left, flip = (h - self.crop) // 2, (w - self.crop) // 2, None
        frames = slice(None)
        if self.arch == "frame-resnet18":
            pick = int(torch.randint(0, t, (1,), generator=gen))
            frames = slice(pick, pick + 1)
        view = self.x[:, frames, top : top + self.crop, left : left + self.crop]
        pinned = torch.empty((len(idx), *view.shape[1:]), dtype=view.dtype, pin_memory=True)
        torch.index_select(view, 0, torch.as_tensor(idx), out=pinned)
        xb = pinned.to(self.device, non_blocking=True)
        if flip is None:
            return xb
        return torch.where(flip.to(self.device, non_blocking=True)[:, None, None, None, None], xb.flip(3), xb)


def epoch_order(
    state: TrainState, train_idx: np.ndarray, config: TrainConfig, labels: np.ndarray, k: int
) -> Any:
    """The epoch's sample order: a permutation, or class-balanced draws (each class equally likely per
    draw)."""
    import torch

    if config.balanced_sampling:
        counts = np.bincount(labels[train_idx], minlength=k).astype(float)
        weights = (1.0 / np.maximum(counts, 1))[labels[train_idx]]
        return torch.multinomial(torch.from_numpy(weights), len(train_idx), True, generator=state.gen).numpy()
    return torch.randperm(len(train_idx), generator=state.gen).numpy()


def train_step(state: TrainState, xb: Any, yb: Any, config: TrainConfig) -> tuple[Any, Any]:
    """One optimiser step on a batch already on the device (AMP on CUDA, clipped gradients, the LR schedule
    stepped). Returns the loss and the correct count as device tensors: nothing here waits for the device."""
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


def train_one_epoch(
    state: TrainState, ds: EpochData, train_idx: np.ndarray, config: TrainConfig
) -> dict[str, float]:
    """One pass over ``train_idx``. On an accelerator the input path overlaps it: keypoints live on the
    device, and frames are prepared a batch ahead in a thread (the crop gathered into pinned memory, copied,
    flipped there), in the same order and with the same random draws as one thread would; losses stay on the
    device until the end."""
    import torch

    state.model.train()
    order = epoch_order(state, train_idx, config, ds.data.labels, ds.data.num_classes)
    todo = [
        b for b in batches(train_idx[order], config.batch_size) if len(b) >= 2
    ]  # BatchNorm needs two samples

    def prepare(batch: np.ndarray) -> tuple[Any, Any]:
        return ds.train_batch(batch, config.augment, state.gen), ds.y[torch.as_tensor(batch)].to(ds.device)

    total_loss, correct, seen = torch.zeros((), device=ds.device), torch.zeros((), device=ds.device), 0
    # Only batches that stream from host memory to an accelerator are prepared ahead: on the CPU a second
    # thread only contends for the same cores (measured: 2x slower), and data on the device needs no
    # preparing.
    pool = ThreadPoolExecutor(1, thread_name_prefix="train-input") if ds.streams else None
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
    return {
        "train_loss": float(total_loss) / max(seen, 1),
        "train_acc": int(correct) / max(seen, 1),
        "lr": float(state.scheduler.get_last_lr()[0]),
    }


def validate(model: Any, ds: EpochData, idx: np.ndarray, batch_size: int) -> dict[str, float]:
    """Loss and top-1 accuracy on ``idx`` (centre crop for RGB)."""
    import torch
    import torch.nn.functional as F

    logits = predict_logits(model, ds.x, idx, batch_size, ds.device, ds.crop)
    loss = float(F.cross_entropy(torch.from_numpy(logits), ds.y[torch.as_tensor(idx)]))
    return {"val_loss": loss, "val_acc": float((logits.argmax(1) == ds.data.labels[idx]).mean())}
