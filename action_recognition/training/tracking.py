"""The training's MLflow side: what makes two trainings the same (the fingerprint), finding a finished or an
interrupted run of it, turning a tracking failure into an error that says where the checkpoint is, and logging
params, the dataset input, artifacts and the model."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from action_recognition import __version__
from action_recognition.config import TrainConfig
from action_recognition.datasets import LabeledArrays
from action_recognition.errors import TrainError
from action_recognition.metrics import Metrics
from action_recognition.names import family_of
from action_recognition.storage import Storage
from action_recognition.training.augment import centre_crop
from action_recognition.training.card import model_card
from action_recognition.training.inference import rgb_crop
from action_recognition.training.runlog import RunLog

#: Settings that change where or how fast a training runs, not its weights: not part of the fingerprint.
FINGERPRINT_EXCLUDE = {
    "keypoint_arch",  # the architecture that trains is in the fingerprint as "arch"
    "rgb_arch",
    "experiment",
    "resume",
    "log_model",
    "system_metrics",
    "registered_model",
    "device",
    "threads",
    "num_workers",
    "max_minutes",
    "checkpoint_interval_s",
    "recipe_source",  # where the settings came from; the resolved settings are in the fingerprint
    "recipe_overrides",
}


def fingerprint(config: TrainConfig, arch: str, dataset_sha256: str) -> str:
    """What makes two trainings the same: the dataset bytes and every setting that changes the weights."""
    relevant = {k: v for k, v in config.model_dump(mode="json").items() if k not in FINGERPRINT_EXCLUDE}
    relevant["arch"] = arch
    if family_of(arch) == "keypoint":  # random RGB weights allowed or not changes no keypoint model
        relevant.pop("allow_untrained", None)
    blob = json.dumps({"dataset": dataset_sha256, "config": relevant, "code": __version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def test_set_sha256(data: LabeledArrays) -> str:
    """Identity of the test split (clip ids and labels): promotion compares models only on the same one."""
    rows = sorted(
        zip(
            data.clip_ids[data.split == "test"].tolist(),
            data.labels[data.split == "test"].tolist(),
            strict=True,
        )
    )
    return hashlib.sha256(json.dumps([rows, data.classes]).encode()).hexdigest()


def run_of(client: Any, experiment_id: str, fp: str, status: str) -> Any | None:
    """The newest run of this fingerprint with ``status`` (FINISHED: reuse it; RUNNING: its try was
    killed), on ``client``'s server."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`ar.fingerprint` = '{fp}' and attributes.status = '{status}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


@contextmanager
def tracking_errors(
    storage: Storage, checkpoint: str, fp: str, history: list[dict[str, float]], tracking_uri: str
) -> Iterator[None]:
    """The tracking server at ``tracking_uri`` went away (after MLflow's own HTTP retries) or refused: a
    TrainError that says where the checkpoint is, since the next try resumes from it in the same run."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        ckpt = storage.key_uri(checkpoint) if storage.exists(checkpoint) else "none yet"
        raise TrainError(
            f"MLflow at {tracking_uri} failed during training {fp[:12]} after {len(history)} "
            "epoch(s): "
            f"{str(exc).splitlines()[0][:300]}. Checkpoint: {ckpt}; the next try resumes from it in the same "
            "run."
        ) from None


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return out


def log_recipe(
    run: RunLog, config: TrainConfig, arch: str, sources: dict[str, Any], data: LabeledArrays
) -> None:
    """The resolved training settings (what a retrain repeats: :mod:`action_recognition.recipe`), where each
    came from, and the clips per class and split (what a retrain report compares)."""
    from action_recognition.recipe import (
        CLASS_COUNTS_ARTIFACT,
        RECIPE_SOURCES_ARTIFACT,
        TRAIN_CONFIG_ARTIFACT,
    )

    run.dict({"train": config.model_dump(mode="json"), "arch": arch}, TRAIN_CONFIG_ARTIFACT)
    run.dict(sources, RECIPE_SOURCES_ARTIFACT)
    counts = {
        split: {
            c: int(((data.split == split) & (data.labels == i)).sum()) for i, c in enumerate(data.classes)
        }
        for split in ("train", "val", "test")
    }
    run.dict(counts, CLASS_COUNTS_ARTIFACT)


def log_dataset_input(
    run: RunLog, dataset_uri: str, data: LabeledArrays, name: str, manifest: dict[str, Any] | None
) -> None:
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    source_uri = dataset_uri if "://" in dataset_uri else str(Path(dataset_uri).resolve())
    source = resolve_dataset_source(source_uri)
    dataset = MetaDataset(source=source, name=name, digest=data.sha256[:16])  # type: ignore[abstract]
    tags = {
        "manifest_uri": (manifest or {}).get("uri", ""),
        "manifest_sha256": (manifest or {}).get("sha256", ""),
    }
    run.dataset(dataset, "training", {k: v for k, v in tags.items() if v})


def log_artifacts(
    run: RunLog,
    metrics: Metrics,
    work: Path,
    run_name: str,
    arch: str,
    data: LabeledArrays,
    manifest: dict[str, Any] | None,
    scalars: dict[str, float],
    untrained: bool,
    config: TrainConfig,
    *,
    recipe: str = "",
) -> None:
    out = work / "artifacts"
    out.mkdir(exist_ok=True)
    metrics.confusion_png(out / "confusion_matrix.png", title=f"{run_name}: test top-1 {metrics.top1:.3f}")
    (out / "confusion_matrix.csv").write_text(metrics.confusion_csv())
    (out / "per_class.csv").write_text(metrics.per_class_csv())
    (out / "classes.json").write_text(json.dumps(data.classes))
    (out / "model_card.md").write_text(
        model_card(run_name, arch, data, manifest, scalars, untrained, config, recipe=recipe)
    )
    run.artifacts(out)


def log_model(run: RunLog, model: Any, data: LabeledArrays, arch: str, family: str, untrained: bool) -> str:
    """The model as a pyfunc that answers with labels and probabilities (:mod:`action_recognition.serving`),
    with its signature, an input example and its metadata (classes, arch, layout, untrained)."""
    import torch

    from action_recognition.serving import log_classifier

    example = data.data[:2].copy() if len(data.data) >= 2 else np.repeat(data.data, 2, axis=0)
    if data.kind == "frames":
        example = centre_crop(torch.from_numpy(example), rgb_crop(data)).numpy()
    requirements = [f"torch=={torch.__version__.split('+')[0]}", "numpy"]
    if family == "rgb":
        import torchvision

        requirements.append(f"torchvision=={torchvision.__version__.split('+')[0]}")
    metadata = {
        "classes": data.classes,
        "arch": arch,
        "family": family,
        "layout": data.layout or "",
        "untrained": untrained or bool(data.meta.get("untrained_pose")),
        "input_kind": data.kind,
    }
    return log_classifier(
        run.client,
        run.run_id,
        model,
        np.ascontiguousarray(example),
        data.classes,
        metadata=metadata,
        requirements=requirements,
    )
