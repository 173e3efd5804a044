"""What evaluation, prediction and training share: a dataset file fetched to a local path, logits in batches,
and the square crop an RGB model takes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from action_recognition.datasets import DatasetError, LabeledArrays
from action_recognition.storage import open_storage
from action_recognition.training.augment import centre_crop


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


def batches(indices: np.ndarray, batch: int) -> list[np.ndarray]:
    return [indices[i : i + batch] for i in range(0, len(indices), batch)]


def predict_logits(
    model: Any, x: Any, indices: np.ndarray, batch: int, device: Any, crop: int = 0
) -> np.ndarray:
    """Logits (len(indices), K) in eval mode, in batches."""
    import torch

    model.eval()
    outs = []
    with torch.inference_mode():
        for idx in batches(indices, batch):
            xb = x[torch.as_tensor(idx)]
            if crop:
                xb = centre_crop(xb, crop)
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                outs.append(model(xb.to(device, non_blocking=True)).float().cpu())
    return torch.cat(outs).numpy() if outs else np.zeros((0, 0), dtype=np.float32)


def rgb_crop(data: LabeledArrays) -> int:
    """The square side an RGB model takes: frames are centre-cropped to it (randomly cropped in training)."""
    return min(112, int(data.data.shape[2]), int(data.data.shape[3]))
