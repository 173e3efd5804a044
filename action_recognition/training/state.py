"""Everything a training needs to continue where a killed try stopped: model, optimiser, LR schedule, AMP
scaler, the sampler's random generator, the best weights so far and the history; saved to storage after every
epoch as one checkpoint that loads with ``weights_only=True`` (a checkpoint is data, never code)."""

from __future__ import annotations

import copy
import io
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from action_recognition.config import TrainConfig
from action_recognition.errors import TrainError
from action_recognition.storage import Storage


def _no_best() -> dict[str, float]:
    return {"val_acc": -1.0, "val_loss": math.inf, "epoch": 0}


class Ema:
    """An exponential moving average of a model's weights and buffers, updated after every optimiser step; the
    decay warms up as ``(1 + n) / (10 + n)`` so that the first steps' random weights fade fast."""

    def __init__(self, model: Any, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.updates = decay, 0

    def update(self, model: Any) -> None:
        import torch

        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            for mine, theirs in zip(
                self.module.state_dict().values(), model.state_dict().values(), strict=True
            ):
                if mine.dtype.is_floating_point:
                    mine.mul_(d).add_(theirs.detach(), alpha=1 - d)
                else:
                    mine.copy_(theirs)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


def amp_dtype(device: Any) -> Any:
    """Autocast's dtype on CUDA: bfloat16 where the GPU has it (no loss scaling, so no per-step sync), else
    float16."""
    import torch

    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16


@dataclass
class TrainState:
    model: Any
    optimizer: Any
    scheduler: Any
    scaler: Any
    gen: Any
    #: The weights' moving average (None: ``ema_decay`` 0); what validation sees and what is kept as best.
    ema: Ema | None = None
    #: The next epoch to run.
    epoch: int = 0
    #: Epochs since the best one (early stopping).
    stale: int = 0
    best: dict[str, float] = field(default_factory=_no_best)
    best_state: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        model: Any,
        config: TrainConfig,
        arch: str,
        steps_per_epoch: int,
        device: Any,
        *,
        epochs: int | None = None,
        seed: int | None = None,
    ) -> TrainState:
        """AdamW (the config's learning rate and weight decay, else the architecture's); a linear warm-up over
        the first 1/30 of the steps of ``epochs`` (default ``config.epochs``), then cosine decay to 0 at the
        last; the sampler seeded with ``seed`` (default ``config.seed``)."""
        import torch

        from action_recognition.models import ARCHS

        spec = ARCHS[arch]
        decay = spec.weight_decay if config.weight_decay is None else config.weight_decay
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr or spec.lr, weight_decay=decay)
        total = steps_per_epoch * (epochs or config.epochs)
        warmup = max(1, total // 30)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))),
        )
        return cls(
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=torch.amp.GradScaler(enabled=device.type == "cuda" and amp_dtype(device) == torch.float16),
            gen=torch.Generator().manual_seed(config.seed if seed is None else seed),
            ema=Ema(model, config.ema_decay) if config.ema_decay > 0 else None,
            best_state=copy.deepcopy(model.state_dict()),
        )

    @property
    def eval_model(self) -> Any:
        """The weights a validation, the best-so-far copy and the final model use: the average when there is
        one."""
        return self.ema.module if self.ema is not None else self.model

    def after_step(self) -> None:
        if self.ema is not None:
            self.ema.update(self.model)

    def observe(self, row: dict[str, float]) -> bool:
        """Record a finished epoch's metrics; True when it is the best so far (val accuracy, then val
        loss)."""
        self.history.append(row)
        epoch, val_acc, val_loss = int(row["epoch"]), row["val_acc"], row["val_loss"]
        self.epoch = epoch + 1
        if val_acc > self.best["val_acc"] or (
            val_acc == self.best["val_acc"] and val_loss < self.best["val_loss"]
        ):
            self.best = {"val_acc": val_acc, "val_loss": val_loss, "epoch": epoch}
            self.best_state = copy.deepcopy(self.eval_model.state_dict())
            self.stale = 0
            return True
        self.stale += 1
        return False

    def advance(self, row: dict[str, float]) -> None:
        """Record a finished epoch of a training without validation (a refit): its weights are the last
        ones."""
        self.history.append(row)
        self.epoch = int(row["epoch"]) + 1

    def save(self, storage: Storage, key: str, work: Path, meta: dict[str, Any]) -> None:
        """The checkpoint after the last finished epoch, with ``meta`` (config, arch, classes...) beside
        it."""
        import torch

        ckpt = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch - 1,
            "best": self.best,
            "best_model": self.best_state,
            "history": self.history,
            "rng": {"sampler": self.gen.get_state(), "torch": torch.get_rng_state()},
            **meta,
        }
        if self.ema is not None:
            ckpt["ema"] = self.ema.state_dict()
        path = work / Path(key).name
        torch.save(ckpt, path)
        storage.put_file(key, path)

    def load(self, storage: Storage, key: str, device: Any) -> None:
        """Continue from the checkpoint at ``key``: the resumed try trains exactly as an unbroken one
        would."""
        import torch

        try:  # weights_only: a checkpoint is data, never code, even one that someone planted in the bucket
            ckpt = torch.load(io.BytesIO(storage.get_bytes(key)), map_location=device, weights_only=True)
        except pickle.UnpicklingError as exc:
            raise TrainError(
                f"refusing checkpoint {storage.key_uri(key)}: it holds more than tensors and plain "
                f"values ({str(exc).splitlines()[0][:200]})"
            ) from exc
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if "scaler" in ckpt:
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            if "ema" not in ckpt:
                raise TrainError(
                    f"checkpoint {storage.key_uri(key)} has no weight average; train.ema_decay is on"
                )
            self.ema.load_state_dict(ckpt["ema"])
        self.best_state, self.best, self.history = ckpt["best_model"], ckpt["best"], ckpt["history"]
        self.epoch = int(ckpt["epoch"]) + 1
        self.stale = int(ckpt["epoch"]) - int(self.best["epoch"])
        self.gen.set_state(ckpt["rng"]["sampler"])
        torch.set_rng_state(ckpt["rng"]["torch"])
