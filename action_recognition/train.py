"""The ``train`` step: one architecture on one dataset file, tracked as one MLflow run.

The small-data recipe (``train.recipe``): train on ``train`` (carving ``val`` out of it, stratified and
seeded, when the dataset has none) and choose the epoch with the best val accuracy of the weights' moving
average (early stopping); then, with ``refit`` (the default), train ``seeds`` models from scratch on train +
val for that many epochs and average their logits, so that every labelled clip trains the model and no
few-hundred-clip val set decides alone. Reports every metric on ``test`` (with the seeds' spread) and logs to
MLflow: the resolved config as params, per-epoch metrics (``epoch_*`` for the selection, ``refit<i>_*`` for
each refit), system metrics, the dataset as an input, artifacts (confusion matrix PNG/CSV, per-class table,
model card) and the model with its signature. Checkpoints (with the config that made them) go to storage under
``models/<fingerprint>/``, one per stage, at most ``checkpoint_interval_s`` apart and at each stage's end, and
``resume`` continues from the last one.

A training is keyed by its fingerprint (dataset sha256 + the config that changes the result): re-running a
finished training returns the finished MLflow run instead of training again, so a re-run DAG creates no new
run or version.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from action_recognition import __version__
from action_recognition.config import TrainConfig
from action_recognition.datasets import DatasetError, LabeledArrays, carve_validation, load_dataset
from action_recognition.errors import TrainError
from action_recognition.layout import checkpoint_key, dataset_name_of, refit_checkpoint_key
from action_recognition.metrics import compute_metrics
from action_recognition.models.ensemble import LogitAverage
from action_recognition.names import model_name
from action_recognition.recipe import RecipeChoice, resolve_recipe
from action_recognition.services import experiment_id, mlflow_client
from action_recognition.storage import Storage
from action_recognition.training.augment import augment_keypoints
from action_recognition.training.card import model_card
from action_recognition.training.inference import fetch_dataset, predict_logits, rgb_crop
from action_recognition.training.loop import EpochData, train_one_epoch, validate
from action_recognition.training.runlog import RunLog, started_run
from action_recognition.training.setup import build_model, pick_device, seed_everything
from action_recognition.training.state import TrainState
from action_recognition.training.tracking import (
    fingerprint,
    flatten,
    log_artifacts,
    log_dataset_input,
    log_model,
    log_recipe,
    run_of,
    test_set_sha256,
    tracking_errors,
)
from action_recognition.workdir import job_folder, work_base

__all__ = [
    "TrainError",
    "TrainResult",
    "augment_keypoints",
    "fingerprint",
    "model_card",
    "rgb_crop",
    "train_model",
]

log = logging.getLogger(__name__)

#: The stage that chooses the epoch count on val (its metrics are ``epoch_*``; a refit's are ``refit<i>_*``).
SELECT = "select"


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
    #: The refit recipe's epoch count (0: the early-stop recipe's best epoch is the model) and models
    #: averaged.
    refit_epochs: int = 0
    refit_models: int = 0
    #: The recipe that ran and why (``train.recipe=auto`` picks by family and size), and where its settings
    #: came from (``form``, or ``champion`` with the champion's run).
    recipe: str = ""
    recipe_reason: str = ""
    recipe_source: str = "form"
    recipe_champion_run: str = ""

    def summary(self) -> dict[str, object]:
        out = asdict(self)
        out.pop("history")
        out.update(self.metrics)
        return out


@dataclass
class Job:
    """One training, resolved: what it trains on, what it is called, where its checkpoint and run go."""

    config: TrainConfig
    data: LabeledArrays
    dataset_uri: str
    arch: str
    family: str
    name: str
    registered: str
    fingerprint: str
    test_sha256: str
    manifest: dict[str, Any] | None
    work: Path
    began: float
    experiment_id: str = ""
    recipe_reason: str = ""
    recipe: RecipeChoice | None = None
    tracking_uri: str | None = None
    #: The MLflow run, once it started (:func:`_train_new`).
    run: RunLog | None = None

    @property
    def mlflow(self) -> RunLog:
        if self.run is None:
            raise RuntimeError(f"training {self.fingerprint[:12]} logged before its MLflow run started")
        return self.run

    @property
    def checkpoint(self) -> str:
        return checkpoint_key(self.fingerprint)

    @property
    def run_name(self) -> str:
        return f"{self.arch}_{self.name}_{self.config.epochs}e_s{self.config.seed}"

    def meta(self) -> dict[str, Any]:
        """What a checkpoint records beside the weights: the config and the data that made them."""
        data = self.data
        return {
            "config": self.config.model_dump(mode="json"),
            "arch": self.arch,
            "classes": data.classes,
            "layout": data.layout,
            "dataset_sha256": data.sha256,
            "input_shape": list(data.data.shape[1:]),
        }


def train_model(
    config: TrainConfig,
    dataset_uri: str,
    *,
    storage: Storage,
    tracking_uri: str | None = None,
    dataset_name: str | None = None,
    manifest: dict[str, Any] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``config.arch`` on a dataset file and track it in MLflow (see the module docstring).

    Args:
        config: The ``train`` section.
        dataset_uri: Local path or ``s3://`` URI of a keypoint or frames ``.npz``.
        storage: Where checkpoints go (``models/<fingerprint>/``).
        tracking_uri: The MLflow server (the ``tracking`` section's ``uri``); ``None``: the process's own.
        dataset_name: Name used in run names and the registered model (default: the file stem).
        manifest: Optional ``{"uri", "sha256", "availability"}`` of the dataset's manifest for the model card.
        progress: Called after each epoch with that epoch's metrics (the CLI's progress bar).
    """
    import torch

    from action_recognition.models import ARCHS

    began = time.monotonic()
    # A job folder named with this pid: one that a killed try leaves is removed by the next try's sweep.
    with job_folder(work_base(None), "train", "run") as work:
        data = load_dataset(fetch_dataset(dataset_uri, work))
        family = ARCHS[config.arch_for(data.kind)].family
        name = dataset_name or dataset_name_of(dataset_uri)
        registered = config.registered_model or model_name(name, family)
        choice = resolve_recipe(config, registered, family, tracking_uri)
        config, recipe_reason = _resolved_recipe(choice.config, data)
        arch = config.arch_for(data.kind)
        fp = fingerprint(config, arch, data.sha256)
        test_sha = test_set_sha256(data)
        if config.threads:
            torch.set_num_threads(config.threads)
        experiment = experiment_id(config.experiment, tracking_uri)
        run = run_of(mlflow_client(tracking_uri), experiment, fp, "FINISHED")
        if run is not None:
            log.info("training %s already finished as MLflow run %s: reusing it", fp[:12], run.info.run_id)
            return TrainResult(
                run_id=run.info.run_id,
                model_uri=run.data.tags.get("ar.model_uri", ""),
                arch=arch,
                family=family,
                metrics={
                    k: float(v)
                    for k, v in run.data.metrics.items()
                    if not k.startswith(("epoch_", "system/"))
                },
                epochs_run=int(run.data.tags.get("ar.epochs_run", 0)),
                best_epoch=int(run.data.tags.get("ar.best_epoch", 0)),
                seconds=time.monotonic() - began,
                checkpoint_uri=run.data.tags.get("ar.checkpoint_uri", ""),
                fingerprint=fp,
                registered_model=registered,
                untrained=run.data.tags.get("ar.untrained") == "true",
                reused=True,
                test_set_sha256=test_sha,
                experiment_id=experiment,
                refit_epochs=int(run.data.tags.get("ar.refit_epochs", 0)),
                refit_models=int(run.data.tags.get("ar.refit_models", 0)),
                recipe=run.data.tags.get("ar.recipe", ""),
                recipe_reason=recipe_reason,
                recipe_source=choice.source,
                recipe_champion_run=choice.champion_run,
            )
        job = Job(
            config=config,
            data=data,
            dataset_uri=dataset_uri,
            arch=arch,
            family=family,
            name=name,
            registered=registered,
            fingerprint=fp,
            test_sha256=test_sha,
            manifest=manifest,
            work=work,
            began=began,
            experiment_id=experiment,
            recipe_reason=recipe_reason,
            recipe=choice,
            tracking_uri=tracking_uri,
        )
        return _train_new(job, storage, progress)


def _resolved_recipe(config: TrainConfig, data: LabeledArrays) -> tuple[TrainConfig, str]:
    """``config`` with ``recipe=auto`` replaced by the recipe it picks for this dataset, and why."""
    labelled = int(np.isin(data.split, ("train", "val")).sum())
    recipe, reason = config.recipe_for(data.kind, labelled)
    log.info("recipe %s (%s)", recipe, reason)
    return config.model_copy(update={"recipe": recipe}), reason


def _split(job: Job) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Train, val and test indices; val carved from train when the dataset has none (too small to carve: val
    is train, and the run's tags say so)."""
    data, config = job.data, job.config
    split = carve_validation(data.labels, data.split, config.val_ratio, config.seed)
    train_idx, val_idx, test_idx = (np.flatnonzero(split == s) for s in ("train", "val", "test"))
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise DatasetError(
            f"dataset {job.dataset_uri} needs train and test rows; has train={len(train_idx)}, "
            f"val={len(val_idx)}, test={len(test_idx)}"
        )
    if len(val_idx) == 0:
        return train_idx, train_idx, test_idx, True
    return train_idx, val_idx, test_idx, False


def _train_new(job: Job, storage: Storage, progress: Callable[[dict[str, Any]], None] | None) -> TrainResult:
    config, data = job.config, job.data
    device = pick_device(config.device)
    train_idx, val_idx, test_idx, val_from_train = _split(job)
    model, untrained = _seeded_model(job, config.seed, device)
    untrained_pose = bool(data.meta.get("untrained_pose"))
    is_rgb = data.kind == "frames"
    ds = EpochData.of(data, job.arch, device, rgb_crop(data) if is_rgb else 0)
    steps_per_epoch = max(1, math.ceil(len(train_idx) / config.batch_size))
    state = TrainState.create(model, config, job.arch, steps_per_epoch, device)
    if config.resume and storage.exists(job.checkpoint):
        state.load(storage, job.checkpoint, device)
        log.info(
            "resumed %s from epoch %d (best val acc %.3f)", job.checkpoint, state.epoch, state.best["val_acc"]
        )

    tags = {
        "ar.fingerprint": job.fingerprint,
        "ar.arch": job.arch,
        "ar.family": job.family,
        "ar.dataset_sha256": data.sha256,
        "ar.test_set_sha256": job.test_sha256,
        "ar.code_version": __version__,
        "ar.untrained": str(untrained or untrained_pose).lower(),
        "ar.untrained_pose": str(untrained_pose).lower(),
        "ar.pretrained": str(is_rgb and not untrained).lower(),
        "ar.val_from_train": str(val_from_train).lower(),
        "ar.recipe_reason": job.recipe_reason,
        "ar.recipe_source": job.recipe.source if job.recipe else "form",
        "ar.recipe_champion_run": job.recipe.champion_run if job.recipe else "",
    }
    # A try that was killed left its MLflow run RUNNING: the retry continues that run, so a killed-and-retried
    # training ends as one FINISHED run, like an unbroken one.
    client = mlflow_client(job.tracking_uri)
    unended = run_of(client, job.experiment_id, job.fingerprint, "RUNNING") if config.resume else None
    if unended is not None:
        log.info("continuing MLflow run %s, left running by a try that did not end", unended.info.run_id)
        tags["ar.resumed_from_epoch"] = str(state.epoch)
    with (
        tracking_errors(storage, job.checkpoint, job.fingerprint, state.history, str(client.tracking_uri)),
        started_run(
            job.tracking_uri,
            job.experiment_id,
            run_id=unended.info.run_id if unended else None,
            run_name=None if unended else job.run_name,
            tags=None if unended else tags,
            system_metrics=config.system_metrics,
        ) as run,
    ):
        job.run = run
        if unended is None:
            run.params(
                flatten(
                    {
                        "train": config.model_dump(mode="json"),
                        "arch": job.arch,
                        "dataset_uri": job.dataset_uri,
                        "num_classes": data.num_classes,
                        "samples": len(data.labels),
                        "shape": list(data.data.shape[1:]),
                        "layout": data.layout or "unknown",
                        "device": device.type,
                    }
                )
            )
            log_dataset_input(run, job.dataset_uri, data, job.name, job.manifest)
            log_recipe(run, config, job.arch, job.recipe.summary() if job.recipe else {}, data)
        else:
            run.tags(tags)
        if config.recipe == "fixed":  # no selection: every labelled clip trains each model
            rows = train_idx if val_from_train else np.sort(np.concatenate([train_idx, val_idx]))
            models, last = _refit(job, ds, rows, storage, progress, epochs=config.epochs)
            return _finish(job, last, models, config.epochs, ds, test_idx, storage, untrained)
        _epochs(
            job,
            state,
            ds,
            train_idx,
            val_idx,
            storage,
            progress,
            stage=SELECT,
            epochs=config.epochs,
            key=job.checkpoint,
        )
        state.model.load_state_dict(state.best_state)
        models, refit_epochs = [state.model], 0
        if config.recipe == "refit" and not val_from_train:
            refit_epochs = int(state.best["epoch"]) + 1
            rows = np.sort(np.concatenate([train_idx, val_idx]))
            models, _ = _refit(job, ds, rows, storage, progress, epochs=refit_epochs)
        return _finish(job, state, models, refit_epochs, ds, test_idx, storage, untrained)


def _seeded_model(job: Job, seed: int, device: Any) -> tuple[Any, bool]:
    """A new model of the job's architecture on ``device`` after seeding everything with ``seed``
    (channels-last for RGB on CUDA), and whether its weights are untrained."""
    import torch

    seed_everything(seed)
    model, untrained = build_model(job.arch, job.data, job.config)
    model = model.to(device)
    if job.data.kind == "frames" and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model, untrained


def _epochs(
    job: Job,
    state: TrainState,
    ds: EpochData,
    train_idx: np.ndarray,
    val_idx: np.ndarray | None,
    storage: Storage,
    progress: Callable[[dict[str, Any]], None] | None,
    *,
    stage: str,
    epochs: int,
    key: str,
) -> None:
    """Epochs from the state's next one up to ``epochs``, each checkpointed to ``key``. With ``val_idx`` (the
    selection): validate the averaged weights, keep the best, stop when val accuracy has not improved for
    ``patience`` epochs or ``max_minutes`` has passed. Without (a refit): train, nothing else."""
    config = job.config
    deadline = job.began + config.max_minutes * 60 if config.max_minutes and val_idx is not None else math.inf
    prefix = "epoch_" if stage == SELECT else f"{stage}_"
    saved, unsaved = time.monotonic(), False
    min_epochs = config.min_epochs if config.min_epochs is not None else epochs // 2
    for epoch in range(state.epoch, epochs):
        if val_idx is not None and epoch >= min_epochs and state.stale >= config.patience:
            log.info("early stop before epoch %d: no better val accuracy for %d epochs", epoch, state.stale)
            break
        if time.monotonic() > deadline:
            log.warning("stopping before epoch %d: train.max_minutes=%g reached", epoch, config.max_minutes)
            break
        trained = train_one_epoch(state, ds, train_idx, config)
        row = {"epoch": float(epoch), "train_loss": trained["train_loss"], "train_acc": trained["train_acc"]}
        if val_idx is not None:
            row.update(validate(state.eval_model, ds, val_idx, config.batch_size * 2))
        row["lr"] = trained["lr"]
        if val_idx is not None:
            state.observe(row)
        else:
            state.advance(row)
        job.mlflow.metrics({f"{prefix}{k}": v for k, v in row.items() if k != "epoch"}, step=epoch)
        unsaved = True
        if time.monotonic() - saved >= config.checkpoint_interval_s:
            state.save(storage, key, job.work, {**job.meta(), "stage": stage})
            saved, unsaved = time.monotonic(), False
        if progress:
            progress({**row, "stage": stage})
    if unsaved:  # a finished stage is always in storage: a retry skips it
        state.save(storage, key, job.work, {**job.meta(), "stage": stage})


def _refit(
    job: Job,
    ds: EpochData,
    rows: np.ndarray,
    storage: Storage,
    progress: Callable[[dict[str, Any]], None] | None,
    *,
    epochs: int,
) -> tuple[list[Any], TrainState]:
    """``seeds`` models trained from scratch on ``rows`` (train + val) for ``epochs`` (the selected count, or
    the ``fixed`` recipe's schedule), each resumable from its own checkpoint; their averaged weights, and the
    last one's state."""
    config = job.config
    steps = max(1, math.ceil(len(rows) / config.batch_size))
    models = []
    for i in range(config.seeds):
        seed = config.seed + i
        model, _ = _seeded_model(job, seed, ds.device)
        state = TrainState.create(model, config, job.arch, steps, ds.device, epochs=epochs, seed=seed)
        key = refit_checkpoint_key(job.fingerprint, i)
        if config.resume and storage.exists(key):
            state.load(storage, key, ds.device)
        _epochs(job, state, ds, rows, None, storage, progress, stage=f"refit{i}", epochs=epochs, key=key)
        models.append(state.eval_model)
    log.info(
        "%s: %d model(s) on %d train+val clips for %d epochs", config.recipe, len(models), len(rows), epochs
    )
    return models, state


def _finish(
    job: Job,
    state: TrainState,
    models: list[Any],
    refit_epochs: int,
    ds: EpochData,
    test_idx: np.ndarray,
    storage: Storage,
    untrained: bool,
) -> TrainResult:
    """The final model (one, or the refit seeds' logits averaged) on the test split: metrics, artifacts, the
    model, and the result."""
    config, data, run = job.config, job.data, job.mlflow
    untrained_any = untrained or bool(data.meta.get("untrained_pose"))
    final = _with_test_time_flip(models[0] if len(models) == 1 else LogitAverage(models), data)
    test_logits = predict_logits(final, ds.x, test_idx, config.batch_size * 2, ds.device, ds.crop)
    metrics = compute_metrics(test_logits, data.labels[test_idx], data.classes)
    selected = config.recipe != "fixed"  # the fixed recipe validates nothing: its model is the last epoch's
    best_epoch = int(state.best["epoch"]) if selected else refit_epochs - 1
    scalars = {
        **metrics.scalars(),
        **({"best_val_acc": state.best["val_acc"]} if selected else {}),
        **_seed_spread(models, ds, test_idx, config),
    }
    run.metrics(scalars)
    log_artifacts(
        run,
        metrics,
        job.work,
        job.run_name,
        job.arch,
        data,
        job.manifest,
        scalars,
        untrained_any,
        config,
        recipe=_recipe_words(config, state, len(models), refit_epochs, final),
    )
    model_uri = (
        log_model(run, final.float().cpu().eval(), data, job.arch, job.family, untrained)
        if config.log_model
        else ""
    )
    checkpoint_uri = storage.key_uri(job.checkpoint)
    refit_models = len(models) if refit_epochs else 0
    run.tags(
        {
            "ar.model_uri": model_uri,
            "ar.epochs_run": str(len(state.history)),
            "ar.best_epoch": str(best_epoch),
            "ar.checkpoint_uri": checkpoint_uri,
            "ar.recipe": config.recipe if refit_epochs else "early_stop",
            "ar.refit_epochs": str(refit_epochs),
            "ar.refit_models": str(refit_models),
        }
    )
    log.info(
        "trained %s: test top-1 %.3f, mean class acc %.3f (run %s)",
        job.run_name,
        metrics.top1,
        metrics.mean_class_acc,
        run.run_id,
    )
    return TrainResult(
        run_id=run.run_id,
        model_uri=model_uri,
        arch=job.arch,
        family=job.family,
        metrics=scalars,
        epochs_run=len(state.history),
        best_epoch=best_epoch,
        seconds=time.monotonic() - job.began,
        checkpoint_uri=checkpoint_uri,
        fingerprint=job.fingerprint,
        registered_model=job.registered,
        untrained=untrained_any,
        test_set_sha256=job.test_sha256,
        history=state.history,
        experiment_id=job.experiment_id,
        refit_epochs=refit_epochs,
        refit_models=refit_models,
        recipe=config.recipe if refit_epochs else "early_stop",
        recipe_reason=job.recipe_reason,
        recipe_source=job.recipe.source if job.recipe else "form",
        recipe_champion_run=job.recipe.champion_run if job.recipe else "",
    )


def _recipe_words(config: TrainConfig, state: TrainState, models: int, refit_epochs: int, final: Any) -> str:
    """How the logged model was made, for its card."""
    from action_recognition.models.skeleton import FlipAverage

    best = state.best
    epoch = f"epoch {int(best['epoch']) + 1} of {len(state.history)}"
    chosen = f"{epoch} had the best val top-1 ({best['val_acc']:.3f})"
    if config.recipe == "fixed":
        words = (
            f"- Recipe `fixed`: {models} model(s) (seeds {config.seed}-{config.seed + models - 1}) trained "
            f"from scratch on every train and val clip for {refit_epochs} epochs (warm-up, then cosine "
            "decay), no validation carve-out, their logits averaged."
        )
    elif refit_epochs:
        words = (
            f"- Recipe `refit`: {chosen}; then {models} model(s) (seeds "
            f"{config.seed}-{config.seed + models - 1}) "
            f"trained from scratch on train + val for {refit_epochs} epochs, their logits averaged."
        )
    else:
        words = f"- Recipe `early_stop`: {chosen} on train alone; those weights are the model."
    if config.ema_decay:
        words += (
            f"\n- Weights: their moving average (decay {config.ema_decay}) is what was validated and kept."
        )
    if isinstance(final, FlipAverage):
        words += "\n- Test-time flip: the logits of the clip and of its left-right mirror are averaged."
    return words


def _with_test_time_flip(model: Any, data: Any) -> Any:
    """A keypoint model of a layout with left/right pairs answers the mean of the clip's and its mirror's
    logits."""
    from action_recognition.models.skeleton import FlipAverage
    from action_recognition.skeletons import layout_for

    known = layout_for(data.layout, data.data.shape[2]) if data.kind == "keypoints" else None
    return FlipAverage(model, known.flip_index()) if known is not None and known.flip_pairs else model


def _seed_spread(
    models: list[Any], ds: EpochData, test_idx: np.ndarray, config: TrainConfig
) -> dict[str, float]:
    """Each refit seed's own test top-1, their mean and standard deviation (nothing for a single model)."""
    if len(models) < 2:
        return {}
    labels = ds.data.labels[test_idx]
    tops = [
        float(
            (
                predict_logits(
                    _with_test_time_flip(m, ds.data),
                    ds.x,
                    test_idx,
                    config.batch_size * 2,
                    ds.device,
                    ds.crop,
                ).argmax(1)
                == labels
            ).mean()
        )
        for m in models
    ]
    return {
        **{f"test_top1_seed{i}": t for i, t in enumerate(tops)},
        "test_top1_seed_mean": float(np.mean(tops)),
        "test_top1_seed_std": float(np.std(tops)),
    }
