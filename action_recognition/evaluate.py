"""Score a logged or registered model on a dataset's split, with :mod:`action_recognition.metrics`."""

from __future__ import annotations

from pathlib import Path

from action_recognition.metrics import Metrics, compute_metrics
from action_recognition.services import fetch_model


def evaluate_model(
    model_uri: str,
    dataset_uri: str,
    *,
    tracking_uri: str | None = None,
    split: str = "test",
    batch_size: int = 64,
) -> Metrics:
    """Load a logged or registered model (``models:/name@champion``, ``runs:/...``) and score it on a
    split."""
    import tempfile

    import torch

    from action_recognition.datasets import DatasetError, load_dataset
    from action_recognition.serving import load_module, model_info
    from action_recognition.training.inference import fetch_dataset, predict_logits

    with tempfile.TemporaryDirectory(prefix="ar-eval-") as tmp:
        data = load_dataset(fetch_dataset(dataset_uri, Path(tmp)))
        folder = fetch_model(model_uri, tracking_uri, Path(tmp) / "model")
        meta = model_info(folder).metadata or {}
        if meta.get("classes") and list(meta["classes"]) != data.classes:
            raise DatasetError(
                f"{model_uri} predicts {len(meta['classes'])} classes that differ from the "
                f"{len(data.classes)} "
                f"classes of {dataset_uri}; evaluate on a dataset with the same classes"
            )
        model = load_module(folder, model_uri)
        indices = data.indices(split)
        if len(indices) == 0:
            raise DatasetError(f"{dataset_uri} has no {split} rows")
        crop = min(112, data.data.shape[2], data.data.shape[3]) if data.kind == "frames" else 0
        logits = predict_logits(
            model, torch.from_numpy(data.data), indices, batch_size, torch.device("cpu"), crop
        )
    return compute_metrics(logits, data.labels[indices], data.classes)
