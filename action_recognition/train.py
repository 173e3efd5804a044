"""The ``train`` step: one architecture on one dataset file, tracked as one MLflow run.

Trains on ``train`` (carving ``val`` out of it, stratified and seeded, when the dataset has none), selects the epoch
with the best val accuracy (early stopping), reports every metric on ``test``, and logs to MLflow: the resolved config
as params, per-epoch metrics, system metrics, the dataset as an input, artifacts (confusion matrix PNG/CSV,
per-class table, model card) and the model with its signature. Checkpoints (with the config that made them) go to
storage every epoch under ``models/<fingerprint>/``, and ``resume`` continues from the last one.

A training is keyed by its fingerprint (dataset sha256 + the config that changes the result): re-running a finished
training returns the finished MLflow run instead of training again, so a re-run DAG creates no new run or version.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import math
import pickle
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from action_recognition import __version__
from action_recognition.config import TrainConfig
from action_recognition.datasets import DatasetError, LabeledArrays, carve_validation, load_dataset
from action_recognition.errors import ActionRecognitionError
from action_recognition.evaluate import Metrics, compute_metrics
from action_recognition.storage import Storage, open_storage
from action_recognition.workdir import job_folder, work_base

log = logging.getLogger(__name__)

FINGERPRINT_EXCLUDE = {
    "tracking_uri", "experiment", "resume", "log_model", "system_metrics", "registered_model", "device", "threads",
    "num_workers", "max_minutes",
}  # fmt: skip
LICENCE_NOTE = (
    "Kinetics annotations: DeepMind, CC BY 4.0. The videos belong to their YouTube uploaders; a model trained on them "
    "is for research. Pretrained backbones carry their own licences (torchvision: BSD-3-Clause)."
)


class TrainError(ActionRecognitionError):
    """Training cannot start or continue as configured."""


@dataclass
class TrainResult:
    """What a training produced; ``summary()`` is the CLI's JSON line."""

    run_id: str
    model_uri: str
    arch: str
    family: str
    metrics: dict[str, float]
    epochs_run: int
    best_epoch: int
    seconds: float
    checkpoint_uri: str
    fingerprint: str
    registered_model: str
    untrained: bool = False
    reused: bool = False
    test_set_sha256: str = ""
    experiment_id: str = ""
    history: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        out = asdict(self)
        out.pop("history")
        out.update(self.metrics)
        return out


def fingerprint(config: TrainConfig, arch: str, dataset_sha256: str) -> str:
    """What makes two trainings the same: the dataset bytes and every setting that changes the weights."""
    relevant = {k: v for k, v in config.model_dump(mode="json").items() if k not in FINGERPRINT_EXCLUDE}
    relevant["arch"] = arch
    blob = json.dumps({"dataset": dataset_sha256, "config": relevant, "code": __version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def test_set_sha256(data: LabeledArrays) -> str:
    """Identity of the test split (clip ids and labels): promotion compares models only on the same one."""
    rows = sorted(zip(data.clip_ids[data.split == "test"].tolist(), data.labels[data.split == "test"].tolist(),
                      strict=True))  # fmt: skip
    return hashlib.sha256(json.dumps([rows, data.classes]).encode()).hexdigest()


def fetch_dataset(uri: str, work: Path) -> Path:
    """A local path for a dataset file given as a path or ``s3://bucket/key``."""
    if uri.startswith("s3://"):
        bucket, _, key = uri[5:].partition("/")
        store = open_storage(f"s3://{bucket}")
        return store.get_file(key, work / Path(key).name)
    path = Path(uri[7:] if uri.startswith("file://") else uri)
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist")
    return path


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


# -------------------------------------------------------------------------------------------- augmentation


def augment_keypoints(x: Any, layout: str | None, gen: Any) -> Any:
    """Skeleton-respecting augmentation of a batch (B, T, J, 3): left-right flip with joint swap (known layouts
    only), scale, small rotation about the sequence centre, and a temporal crop resampled back to T."""
    import torch

    from action_recognition.models.skeleton import layout_for

    b, t, j, _ = x.shape
    x = x.clone()
    mask = (x[..., 2] > 0).unsqueeze(-1).to(x.dtype)
    known = layout_for(layout, j)
    if known is not None:
        flip = torch.rand(b, generator=gen, device=x.device) < 0.5
        if flip.any():
            flipped = x[flip][:, :, known.flip_index()]
            flipped[..., 0] = torch.where(flipped[..., 2] > 0, 1.0 - flipped[..., 0], flipped[..., 0])
            x[flip] = flipped
            mask = (x[..., 2] > 0).unsqueeze(-1).to(x.dtype)
    centre = (x[..., :2] * mask).sum((1, 2), keepdim=True) / mask.sum((1, 2), keepdim=True).clamp_min(1)
    angle = (torch.rand(b, generator=gen, device=x.device) - 0.5) * (2 * math.pi / 18)  # +-10 degrees
    scale = 0.9 + 0.2 * torch.rand(b, generator=gen, device=x.device)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, 2, 2)
    xy = torch.einsum("btjc,bdc->btjd", x[..., :2] - centre, rot) + centre
    x[..., :2] = torch.where(mask > 0, xy.clamp(0, 1), x[..., :2])
    # Temporal crop of 80-100% of the clip, resampled to T frames (nearest: keeps missing frames missing).
    keep = (0.8 + 0.2 * torch.rand(b, generator=gen, device=x.device)) * (t - 1)
    start = torch.rand(b, generator=gen, device=x.device) * ((t - 1) - keep)
    pos = start[:, None] + keep[:, None] * torch.linspace(0, 1, t, device=x.device)[None]
    index = pos.round().long().clamp(0, t - 1)
    return torch.gather(x, 1, index[:, :, None, None].expand(b, t, j, 3))


def augment_frames(x: Any, gen: Any, crop: int) -> Any:
    """Random crop to ``crop`` and horizontal flip of a uint8 batch (B, T, H, W, 3)."""
    import torch

    b, _, h, w, _ = x.shape
    top = int(torch.randint(0, h - crop + 1, (1,), generator=gen))
    left = int(torch.randint(0, w - crop + 1, (1,), generator=gen))
    x = x[:, :, top : top + crop, left : left + crop]
    flip = torch.rand(b, generator=gen) < 0.5
    if flip.any():
        x = x.clone()
        x[flip] = x[flip].flip(3)
    return x


def centre_crop(x: Any, crop: int) -> Any:
    h, w = x.shape[2], x.shape[3]
    top, left = (h - crop) // 2, (w - crop) // 2
    return x[:, :, top : top + crop, left : left + crop]


# -------------------------------------------------------------------------------------------------- train


def _device(choice: str) -> Any:
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise TrainError("train.device=cuda but no CUDA device is available")
    return torch.device("cuda" if choice in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def build_model(arch: str, data: LabeledArrays, config: TrainConfig) -> tuple[Any, bool]:
    """The model for ``arch`` and whether its weights are untrained (RGB without downloadable weights)."""
    from action_recognition.models import ARCHS

    spec = ARCHS[arch]
    k = data.num_classes
    if spec.family == "keypoint":
        if data.kind != "keypoints":
            raise DatasetError(f"{arch} is a keypoint model but the dataset holds {data.kind}")
        return spec.build(
            num_classes=k, joints=data.data.shape[2], frames=data.data.shape[1], layout=data.layout
        ), False
    if data.kind != "frames":
        raise DatasetError(f"{arch} is an RGB model but the dataset holds {data.kind}")
    if config.pretrained and config.backbone_weights:
        from action_recognition.weights import WeightsError, WeightsMismatch

        model = spec.build(num_classes=k, frames=data.data.shape[1], pretrained=False)
        try:
            return _with_backbone(model, config.backbone_weights), False
        except WeightsMismatch:
            raise  # the wrong file is never replaced by random weights
        except WeightsError as exc:
            if not config.allow_untrained:
                raise TrainError(f"cannot read the backbone weights of {arch} ({exc}); pull them with "
                                 "`action-recognition weights pull`, or pass --allow-untrained (tagged untrained)"
                                 ) from exc  # fmt: skip
            log.warning("backbone weights of %s unavailable (%s): training from random weights", arch, exc)
            return model, True
    if config.pretrained:
        try:
            return spec.build(num_classes=k, frames=data.data.shape[1], pretrained=True), False
        except OSError as exc:  # URLError, HTTP errors and offline DNS failures are all OSErrors
            if not config.allow_untrained:
                raise TrainError(
                    f"cannot download the pretrained weights of {arch} ({exc}); connect to the network, put the "
                    "weights in TORCH_HOME, or pass --allow-untrained to train from random weights (tagged untrained)"
                ) from exc
            log.warning("pretrained weights of %s unavailable (%s): training from random weights", arch, exc)
    elif not config.allow_untrained:
        raise TrainError(f"{arch} with pretrained=false trains from random weights: pass --allow-untrained to do so")
    return spec.build(num_classes=k, frames=data.data.shape[1], pretrained=False), True


def _with_backbone(model: Any, value: str) -> Any:
    """Load a pretrained backbone state dict (from storage through the weights cache, or a path) into an RGB model:
    every backbone tensor must match; the classifier head (``fc``) stays new."""
    import torch

    from action_recognition.weights import WeightsError, WeightsMismatch, resolve

    path, _ = resolve(value)
    if not path.is_file():
        raise WeightsError(f"backbone weights {value}: no such file")
    state = torch.load(path, map_location="cpu", weights_only=True)  # not ours: tensors only, no pickled code
    if not isinstance(state, dict):
        raise WeightsMismatch(f"backbone weights {value}: not a state dict")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        missing, unexpected = model.net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of another shape
        raise WeightsMismatch(f"backbone weights {value} do not fit {type(model).__name__}: {exc}") from exc
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise WeightsMismatch(f"backbone weights {value} do not fit {type(model).__name__}: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")  # fmt: skip
    log.info("RGB backbone loaded from %s", value)
    return model


def _batches(indices: np.ndarray, batch: int) -> list[np.ndarray]:
    return [indices[i : i + batch] for i in range(0, len(indices), batch)]


def predict_logits(model: Any, x: Any, indices: np.ndarray, batch: int, device: Any, crop: int = 0) -> np.ndarray:
    """Logits (len(indices), K) in eval mode, in batches."""
    import torch

    model.eval()
    outs = []
    with torch.inference_mode():
        for idx in _batches(indices, batch):
            xb = x[torch.as_tensor(idx)]
            if crop:
                xb = centre_crop(xb, crop)
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                outs.append(model(xb.to(device, non_blocking=True)).float().cpu())
    return torch.cat(outs).numpy() if outs else np.zeros((0, 0), dtype=np.float32)


def train_model(
    config: TrainConfig,
    dataset_uri: str,
    *,
    storage: Storage,
    dataset_name: str | None = None,
    manifest: dict[str, Any] | None = None,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``config.arch`` on a dataset file and track it in MLflow (see the module docstring).

    Args:
        config: The ``train`` section.
        dataset_uri: Local path or ``s3://`` URI of a keypoint or frames ``.npz``.
        storage: Where checkpoints go (``models/<fingerprint>/``).
        dataset_name: Name used in run names and the registered model (default: the file stem).
        manifest: Optional ``{"uri", "sha256", "availability"}`` of the dataset's manifest for the model card.
        progress: Called after each epoch with that epoch's metrics (the CLI's progress bar).
    """
    import mlflow
    import torch

    from action_recognition.models import ARCHS, DEFAULT_KEYPOINT_ARCH, DEFAULT_RGB_ARCH

    began = time.monotonic()
    # A job folder named with this pid: one that a killed try leaves is removed by the next try's sweep.
    with job_folder(work_base(None), "train", "run") as work:
        data = load_dataset(fetch_dataset(dataset_uri, work))
        arch = config.arch or (DEFAULT_KEYPOINT_ARCH if data.kind == "keypoints" else DEFAULT_RGB_ARCH)
        family = ARCHS[arch].family
        name = dataset_name or Path(dataset_uri).stem.split("-")[0]
        registered = config.registered_model or f"{name}-{family}"
        fp = fingerprint(config, arch, data.sha256)
        test_sha = test_set_sha256(data)
        if config.threads:
            torch.set_num_threads(config.threads)
        if config.tracking_uri:
            mlflow.set_tracking_uri(config.tracking_uri)
        experiment = mlflow.set_experiment(config.experiment)
        done = mlflow.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`ar.fingerprint` = '{fp}' and attributes.status = 'FINISHED'",
            output_format="list",
            max_results=1,
        )
        if done:
            run = done[0]
            log.info("training %s already finished as MLflow run %s: reusing it", fp[:12], run.info.run_id)
            return TrainResult(
                run_id=run.info.run_id, model_uri=run.data.tags.get("ar.model_uri", ""), arch=arch, family=family,
                metrics={k: float(v) for k, v in run.data.metrics.items() if not k.startswith(("epoch_", "system/"))},
                epochs_run=int(run.data.tags.get("ar.epochs_run", 0)),
                best_epoch=int(run.data.tags.get("ar.best_epoch", 0)),
                seconds=time.monotonic() - began, checkpoint_uri=run.data.tags.get("ar.checkpoint_uri", ""),
                fingerprint=fp, registered_model=registered, untrained=run.data.tags.get("ar.untrained") == "true",
                reused=True, test_set_sha256=test_sha, experiment_id=experiment.experiment_id,
            )  # fmt: skip
        return _train_new(config, data, arch, family, name, registered, fp, test_sha, dataset_uri, storage, manifest,
                          progress, work, began, experiment.experiment_id)  # fmt: skip


def _train_new(
    config: TrainConfig, data: LabeledArrays, arch: str, family: str, name: str, registered: str, fp: str,
    test_sha: str, dataset_uri: str, storage: Storage, manifest: dict[str, Any] | None,
    progress: Callable[[dict[str, float]], None] | None, work: Path, began: float, experiment_id: str,
) -> TrainResult:  # fmt: skip
    import mlflow
    import torch
    import torch.nn.functional as F

    seed_everything(config.seed)
    device = _device(config.device)
    split = carve_validation(data.labels, data.split, config.val_ratio, config.seed)
    train_idx, val_idx, test_idx = (np.flatnonzero(split == s) for s in ("train", "val", "test"))
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise DatasetError(
            f"dataset {dataset_uri} needs train and test rows; has train={len(train_idx)}, "
            f"val={len(val_idx)}, test={len(test_idx)}"
        )
    val_from_train = len(val_idx) == 0
    if val_from_train:
        val_idx = train_idx  # too small to carve: select on train, and say so in the tags
    model, untrained = build_model(arch, data, config)
    untrained_pose = bool(data.meta.get("untrained_pose"))
    model = model.to(device)
    is_rgb = data.kind == "frames"
    crop = rgb_crop(data) if is_rgb else 0
    if is_rgb and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    x_all = torch.from_numpy(data.data)
    y_all = torch.from_numpy(data.labels)
    from action_recognition.models import ARCHS

    lr = config.lr or ARCHS[arch].lr
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(train_idx) / config.batch_size))
    total_steps = steps_per_epoch * config.epochs
    warmup = max(1, total_steps // 30)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total_steps)))
    )
    scaler = torch.amp.GradScaler(enabled=device.type == "cuda")
    gen = torch.Generator().manual_seed(config.seed)
    counts = np.bincount(data.labels[train_idx], minlength=data.num_classes).astype(float)
    weights = (1.0 / np.maximum(counts, 1))[data.labels[train_idx]]
    prefix = f"models/{fp[:16]}"
    start_epoch, stale, best, history = 0, 0, {"val_acc": -1.0, "val_loss": math.inf, "epoch": 0}, []
    best_state = copy.deepcopy(model.state_dict())
    if config.resume and storage.exists(f"{prefix}/last.pt"):
        try:  # weights_only: a checkpoint is data, never code, even one that someone planted in the bucket
            ckpt = torch.load(
                io.BytesIO(storage.get_bytes(f"{prefix}/last.pt")), map_location=device, weights_only=True
            )
        except pickle.UnpicklingError as exc:
            raise TrainError(
                f"refusing checkpoint {storage.key_uri(prefix + '/last.pt')}: it holds more than tensors and plain "
                f"values ({str(exc).splitlines()[0][:200]})"
            ) from exc
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        best_state, best, history = ckpt["best_model"], ckpt["best"], ckpt["history"]
        start_epoch = int(ckpt["epoch"]) + 1
        stale = int(ckpt["epoch"]) - int(best["epoch"])
        # The sampler's and torch's random states as they were: the resumed try trains exactly as an unbroken one.
        gen.set_state(ckpt["rng"]["sampler"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        log.info("resumed %s from epoch %d (best val acc %.3f)", prefix, start_epoch, best["val_acc"])

    run_name = f"{arch}_{name}_{config.epochs}e_s{config.seed}"
    tags = {
        "ar.fingerprint": fp, "ar.arch": arch, "ar.family": family, "ar.dataset_sha256": data.sha256,
        "ar.test_set_sha256": test_sha, "ar.code_version": __version__,
        "ar.untrained": str(untrained or untrained_pose).lower(), "ar.untrained_pose": str(untrained_pose).lower(),
        "ar.pretrained": str(is_rgb and not untrained).lower(), "ar.val_from_train": str(val_from_train).lower(),
    }  # fmt: skip
    # A try that was killed left its MLflow run RUNNING: the retry continues that run, so a killed-and-retried
    # training ends as one FINISHED run, like an unbroken one.
    unended = _unended_run(mlflow, experiment_id, fp) if config.resume else None
    if unended is not None:
        log.info("continuing MLflow run %s, left running by a try that did not end", unended)
        tags["ar.resumed_from_epoch"] = str(start_epoch)
    with (
        _tracking_errors(storage, prefix, fp, history),
        mlflow.start_run(
            run_id=unended,
            run_name=None if unended else run_name,
            tags=None if unended else tags,
            log_system_metrics=config.system_metrics,
        ) as run,
    ):
        if unended is None:
            params = _flatten({"train": config.model_dump(mode="json"), "arch": arch, "dataset_uri": dataset_uri,
                               "num_classes": data.num_classes, "samples": len(data.labels),
                               "shape": list(data.data.shape[1:]), "layout": data.layout or "unknown",
                               "device": device.type})  # fmt: skip
            mlflow.log_params(params)
            _log_dataset_input(dataset_uri, data, name, manifest)
        else:
            mlflow.set_tags(tags)
        deadline = began + config.max_minutes * 60 if config.max_minutes else math.inf
        epoch = start_epoch
        for epoch in range(start_epoch, config.epochs):
            model.train()
            if config.balanced_sampling:  # class-balanced: each class equally likely per draw
                order = torch.multinomial(torch.from_numpy(weights), len(train_idx), True, generator=gen).numpy()
            else:
                order = torch.randperm(len(train_idx), generator=gen).numpy()
            total_loss, correct, seen = 0.0, 0, 0
            for batch in _batches(train_idx[order], config.batch_size):
                if len(batch) < 2:
                    continue  # BatchNorm needs two samples
                xb = x_all[torch.as_tensor(batch)]
                yb = y_all[torch.as_tensor(batch)].to(device)
                if is_rgb:
                    xb = augment_frames(xb, gen, crop) if config.augment else centre_crop(xb, crop)
                    if arch == "frame-resnet18":  # the baseline sees one random frame per clip
                        pick = int(torch.randint(0, xb.shape[1], (1,), generator=gen))
                        xb = xb[:, pick : pick + 1]
                elif config.augment:
                    xb = augment_keypoints(xb, data.layout, gen)
                xb = xb.to(device, non_blocking=True)
                with torch.autocast(device.type, enabled=device.type == "cuda"):
                    logits = model(xb)
                    loss = F.cross_entropy(logits.float(), yb, label_smoothing=config.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                total_loss += float(loss.detach()) * len(batch)
                correct += int((logits.argmax(1) == yb).sum())
                seen += len(batch)
            val_logits = predict_logits(model, x_all, val_idx, config.batch_size * 2, device, crop)
            val_loss = float(F.cross_entropy(torch.from_numpy(val_logits), y_all[torch.as_tensor(val_idx)]))
            val_acc = float((val_logits.argmax(1) == data.labels[val_idx]).mean())
            row = {"epoch": float(epoch), "train_loss": total_loss / max(seen, 1),
                   "train_acc": correct / max(seen, 1), "val_loss": val_loss, "val_acc": val_acc,
                   "lr": float(scheduler.get_last_lr()[0])}  # fmt: skip
            history.append(row)
            mlflow.log_metrics({f"epoch_{k}": v for k, v in row.items() if k != "epoch"}, step=epoch)
            if val_acc > best["val_acc"] or (val_acc == best["val_acc"] and val_loss < best["val_loss"]):
                best = {"val_acc": val_acc, "val_loss": val_loss, "epoch": epoch}
                best_state = copy.deepcopy(model.state_dict())
                stale = 0
            else:
                stale += 1
            _save_checkpoint(storage, prefix, work, model, optimizer, scheduler, epoch, best, best_state, history,
                             config, arch, data, gen)  # fmt: skip
            if progress:
                progress(row)
            if stale >= config.patience:
                log.info("early stop at epoch %d: no better val accuracy for %d epochs", epoch, stale)
                break
            if time.monotonic() > deadline:
                log.warning("stopping at epoch %d: train.max_minutes=%g reached", epoch, config.max_minutes)
                break
        model.load_state_dict(best_state)
        test_logits = predict_logits(model, x_all, test_idx, config.batch_size * 2, device, crop)
        metrics = compute_metrics(test_logits, data.labels[test_idx], data.classes)
        scalars = metrics.scalars()
        scalars["best_val_acc"] = best["val_acc"]
        mlflow.log_metrics(scalars)
        _log_artifacts(metrics, work, run_name, arch, data, manifest, scalars, untrained or untrained_pose, config)
        model_uri = ""
        if config.log_model:
            model_uri = _log_model(model.float().cpu().eval(), data, arch, family, untrained, work)
        checkpoint_uri = storage.key_uri(f"{prefix}/last.pt")
        mlflow.set_tags({"ar.model_uri": model_uri, "ar.epochs_run": str(len(history)),
                         "ar.best_epoch": str(best["epoch"]), "ar.checkpoint_uri": checkpoint_uri})  # fmt: skip
        run_id = run.info.run_id
    log.info("trained %s: test top-1 %.3f, mean class acc %.3f (run %s)", run_name, metrics.top1,
             metrics.mean_class_acc, run_id)  # fmt: skip
    return TrainResult(
        run_id=run_id, model_uri=model_uri, arch=arch, family=family, metrics=scalars, epochs_run=len(history),
        best_epoch=int(best["epoch"]), seconds=time.monotonic() - began, checkpoint_uri=checkpoint_uri,
        fingerprint=fp, registered_model=registered, untrained=untrained or untrained_pose, test_set_sha256=test_sha,
        history=history,
        experiment_id=run.info.experiment_id,
    )  # fmt: skip


@contextmanager
def _tracking_errors(storage: Storage, prefix: str, fp: str, history: list[dict[str, float]]) -> Iterator[None]:
    """The tracking server went away (after MLflow's own HTTP retries) or refused: a TrainError that says where the
    checkpoint is, since the next try resumes from it in the same run."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        ckpt = storage.key_uri(f"{prefix}/last.pt") if storage.exists(f"{prefix}/last.pt") else "none yet"
        raise TrainError(
            f"MLflow at {mlflow.get_tracking_uri()} failed during training {fp[:12]} after {len(history)} epoch(s): "
            f"{str(exc).splitlines()[0][:300]}. Checkpoint: {ckpt}; the next try resumes from it in the same run."
        ) from None


def _unended_run(mlflow: Any, experiment_id: str, fp: str) -> str | None:
    """The newest run of this fingerprint that is still RUNNING (its process was killed), if any."""
    runs = mlflow.search_runs(
        [experiment_id], filter_string=f"tags.`ar.fingerprint` = '{fp}' and attributes.status = 'RUNNING'",
        order_by=["attributes.start_time DESC"], output_format="list", max_results=1,
    )  # fmt: skip
    return runs[0].info.run_id if runs else None


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return out


def _save_checkpoint(
    storage: Storage, prefix: str, work: Path, model: Any, optimizer: Any, scheduler: Any, epoch: int,
    best: dict[str, Any], best_state: dict[str, Any], history: list[dict[str, float]], config: TrainConfig,
    arch: str, data: LabeledArrays, gen: Any,
) -> None:  # fmt: skip
    """The last state plus the best weights and the config that made them; loadable with weights_only=True."""
    import torch

    ckpt = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "epoch": epoch, "best": best, "best_model": best_state, "history": history,
        "config": config.model_dump(mode="json"), "arch": arch, "classes": data.classes, "layout": data.layout,
        "dataset_sha256": data.sha256, "input_shape": list(data.data.shape[1:]),
        "rng": {"sampler": gen.get_state(), "torch": torch.get_rng_state()},
    }  # fmt: skip
    path = work / "last.pt"
    torch.save(ckpt, path)
    storage.put_file(f"{prefix}/last.pt", path)


def _log_dataset_input(dataset_uri: str, data: LabeledArrays, name: str, manifest: dict[str, Any] | None) -> None:
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    source_uri = dataset_uri if "://" in dataset_uri else str(Path(dataset_uri).resolve())
    dataset = MetaDataset(source=resolve_dataset_source(source_uri), name=name, digest=data.sha256[:16])  # type: ignore[abstract]
    context = "training"
    tags = {"manifest_uri": (manifest or {}).get("uri", ""), "manifest_sha256": (manifest or {}).get("sha256", "")}
    mlflow.log_input(dataset, context=context, tags={k: v for k, v in tags.items() if v})


def _log_artifacts(
    metrics: Metrics, work: Path, run_name: str, arch: str, data: LabeledArrays, manifest: dict[str, Any] | None,
    scalars: dict[str, float], untrained: bool, config: TrainConfig,
) -> None:  # fmt: skip
    import mlflow

    out = work / "artifacts"
    out.mkdir(exist_ok=True)
    metrics.confusion_png(out / "confusion_matrix.png", title=f"{run_name}: test top-1 {metrics.top1:.3f}")
    (out / "confusion_matrix.csv").write_text(metrics.confusion_csv())
    (out / "per_class.csv").write_text(metrics.per_class_csv())
    (out / "classes.json").write_text(json.dumps(data.classes))
    (out / "model_card.md").write_text(model_card(run_name, arch, data, manifest, scalars, untrained, config))
    mlflow.log_artifacts(str(out))


def model_card(
    run_name: str, arch: str, data: LabeledArrays, manifest: dict[str, Any] | None, scalars: dict[str, float],
    untrained: bool, config: TrainConfig,
) -> str:  # fmt: skip
    """A Markdown model card: data, availability, metrics, limits, licence."""
    from action_recognition.models import ARCHS

    splits = {s: int((data.split == s).sum()) for s in ("train", "val", "test")}
    chance = 1.0 / data.num_classes
    availability = (manifest or {}).get("availability") or {}
    family = ARCHS[arch].family
    lines = [
        f"# {run_name}", "",
        f"**Architecture**: `{arch}`: {ARCHS[arch].summary}.", "",
        "## Data",
        f"- {len(data.labels)} clips of {data.num_classes} classes; {input_statement(arch, data)}",
        f"- splits: {splits}; dataset sha256 `{data.sha256[:16]}`.",
    ]  # fmt: skip
    if manifest:
        lines.append(f"- manifest: `{manifest.get('uri', '')}` (sha256 `{str(manifest.get('sha256', ''))[:16]}`).")
    if availability:
        lines.append(f"- availability of the planned clips: {json.dumps(availability)}.")
    lines += ["", "## Metrics (test split)", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in sorted(scalars.items())]
    lines += [
        f"| chance (1/K) | {chance:.4f} |", "",
        "Baselines of the original study (15 dance classes): single-frame ResNet18 0.069 val accuracy, keypoint LSTM "
        "0.205 test accuracy.", "",
        "## Limits",
        "- Trained on YouTube clips that were still available; the classes' availability differs (see above).",
        "- Keypoint models see one person (the main track); interactions between people are not modelled."
        if family == "keypoint" else
        "- RGB models see the whole frame: scene and background can stand in for the action (dataset bias).",
    ]  # fmt: skip
    if untrained:
        what = ("keypoints from an untrained pose model (tag ar.untrained_pose)" if family == "keypoint"
                else "a backbone with random weights, no pretrained ones (tag ar.untrained)")  # fmt: skip
        lines.append(f"- **UNTRAINED WEIGHTS**: {what}; the metrics are not representative.")
    if data.classes and all(c.startswith("synthetic-") for c in data.classes):
        lines.append("- **SYNTHETIC DATA**: generated skeleton motions, for tests and benchmarks only.")
    lines += ["", "## Licence", LICENCE_NOTE, "", f"Config: `{json.dumps(config.model_dump(mode='json'))}`", ""]
    return "\n".join(lines)


def rgb_crop(data: LabeledArrays) -> int:
    """The square side an RGB model takes: frames are centre-cropped to it (randomly cropped in training)."""
    return min(112, int(data.data.shape[2]), int(data.data.shape[3]))


def input_statement(arch: str, data: LabeledArrays) -> str:
    """What the model takes, in words true for its family."""
    if data.kind == "frames":
        t, h, w = data.data.shape[1:4]
        side = rgb_crop(data)
        return (f"input {t} RGB frames a clip, stored at {h} x {w} and centre-cropped to {side} x {side} "
                f"(random {side} x {side} crops and flips in training).")  # fmt: skip
    t, joints, channels = data.data.shape[1:4]
    if data.layout:
        layout = f"joint layout {data.layout}"
    elif arch == "stgcn":
        layout = "joint layout not named: a graph learned over the joints"
    else:
        layout = f"joint layout not named ({arch} needs no skeleton graph)"
    return f"input {t} frames x {joints} joints x {channels} (x, y, score), {layout}."


def _log_model(model: Any, data: LabeledArrays, arch: str, family: str, untrained: bool, work: Path) -> str:
    import mlflow
    import torch
    from mlflow.models import infer_signature

    example = data.data[:2].copy() if len(data.data) >= 2 else np.repeat(data.data, 2, axis=0)
    if data.kind == "frames":
        crop = min(112, example.shape[2], example.shape[3])
        example = centre_crop(torch.from_numpy(example), crop).numpy()
    with torch.inference_mode():
        output = model(torch.from_numpy(example)).numpy()
    version = torch.__version__.split("+")[0]
    requirements = [f"torch=={version}", "numpy"]
    if family == "rgb":
        import torchvision

        requirements.append(f"torchvision=={torchvision.__version__.split('+')[0]}")
    info = mlflow.pytorch.log_model(
        model,
        name="model",
        signature=infer_signature(example, output),
        input_example=example,
        pip_requirements=requirements,
        metadata={
            "classes": data.classes,
            "arch": arch,
            "family": family,
            "layout": data.layout or "",
            "untrained": untrained or bool(data.meta.get("untrained_pose")),
            "input_kind": data.kind,
        },
        serialization_format="pickle",
    )
    return str(info.model_uri)
