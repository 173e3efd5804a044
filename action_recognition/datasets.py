"""Dataset files the models train on, with their shape contracts checked on load.

Keypoint dataset (``.npz``, DESIGN.md contract 3):
    keypoints  float32 (N, T, J, 3): x, y in [0, 1] of the frame, score in [0, 1]; 0 where no person or
               padding.
    labels     int64 (N,) in [0, K).
    split      str (N,), each ``train`` | ``val`` | ``test``.
    classes    str (K,).
    clip_ids   str (N,), optional.
    layout     str scalar, optional: ``coco17`` | ``ntu25`` | ``joints15`` (the skeleton graph, when known).
    meta       str scalar, optional: JSON provenance, e.g. ``{"pose_tag": ..., "untrained_pose": false}``.

RGB frames dataset (``.npz``): ``frames`` uint8 (N, T, H, W, 3) plus the same
``labels``/``split``/``classes``/ ``clip_ids``; T frames sampled uniformly (one per TSN segment) from each
normalised clip, decoded once and cached.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from action_recognition.annotations import SPLITS
from action_recognition.errors import ActionRecognitionError

log = logging.getLogger(__name__)


class DatasetError(ActionRecognitionError):
    """A dataset file breaks its contract; the message names the array and what is wrong."""

    retryable = False


@dataclass
class LabeledArrays:
    """Arrays of one dataset, validated. ``data`` is keypoints (N,T,J,3) float32 or frames (N,T,H,W,3)
    uint8."""

    data: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    classes: list[str]
    clip_ids: np.ndarray
    kind: str  # "keypoints" | "frames"
    layout: str | None = None
    sha256: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _common(npz: Any, path: Path, n: int) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    for name in ("labels", "split", "classes"):
        if name not in npz.files:
            raise DatasetError(f"{path}: missing array {name!r} (has {sorted(npz.files)})")
    labels = npz["labels"]
    split = npz["split"].astype(str)
    classes = [str(c) for c in npz["classes"].tolist()]
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{path}: labels must be int64 of shape ({n},), got {labels.dtype} {labels.shape}")
    if split.shape != (n,):
        raise DatasetError(f"{path}: split must have shape ({n},), got {split.shape}")
    unknown = sorted(set(split.tolist()) - set(SPLITS))
    if unknown:
        raise DatasetError(f"{path}: split has unknown value(s) {unknown}; allowed: {', '.join(SPLITS)}")
    if not classes or len(set(classes)) != len(classes):
        raise DatasetError(
            f"{path}: classes must be non-empty and unique, got {len(classes)} ({len(set(classes))} unique)"
        )
    if n and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DatasetError(
            f"{path}: labels must be in [0, {len(classes)}) for {len(classes)} classes, "
            f"got range [{labels.min()}, {labels.max()}]"
        )
    clip_ids = (
        npz["clip_ids"].astype(str) if "clip_ids" in npz.files else np.array([f"row{i}" for i in range(n)])
    )
    if clip_ids.shape != (n,):
        raise DatasetError(f"{path}: clip_ids must have shape ({n},), got {clip_ids.shape}")
    return labels.astype(np.int64), split, classes, clip_ids


def load_dataset(path: Path) -> LabeledArrays:
    """Load and validate a keypoint or frames dataset. Raises DatasetError naming what is wrong."""
    path = Path(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError(f"dataset file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable .npz file ({exc})") from exc
    with npz:
        try:
            return _validated(npz, path)
        except ValueError as exc:  # object arrays (pickles) are refused by allow_pickle=False
            raise DatasetError(f"{path}: not a readable dataset ({exc})") from exc


def _validated(npz: Any, path: Path) -> LabeledArrays:
    """Check every array against the contract in the module docstring."""
    if "keypoints" in npz.files:
        data = npz["keypoints"]
        if data.ndim != 4 or data.shape[-1] != 3:
            raise DatasetError(f"{path}: keypoints must be (N, T, J, 3), got shape {data.shape}")
        if data.dtype != np.float32:
            raise DatasetError(f"{path}: keypoints must be float32, got {data.dtype}")
        if not np.isfinite(data).all():
            bad = int((~np.isfinite(data)).any(axis=(1, 2, 3)).sum())
            raise DatasetError(f"{path}: keypoints hold NaN or inf in {bad} sample(s)")
        if data.size and (data.min() < -1e-6 or data.max() > 1 + 1e-6):
            raise DatasetError(
                f"{path}: keypoint x, y and score must be in [0, 1], got range [{data.min():.3f}, "
                f"{data.max():.3f}]"
            )
        if data.shape[1] < 2 or data.shape[2] < 2:
            raise DatasetError(
                f"{path}: need at least 2 frames and 2 joints, got T={data.shape[1]}, J={data.shape[2]}"
            )
        kind = "keypoints"
    elif "frames" in npz.files:
        data = npz["frames"]
        if data.ndim != 5 or data.shape[-1] != 3 or data.dtype != np.uint8:
            raise DatasetError(f"{path}: frames must be uint8 (N, T, H, W, 3), got {data.dtype} {data.shape}")
        kind = "frames"
    else:
        raise DatasetError(f"{path}: has neither 'keypoints' nor 'frames' (has {sorted(npz.files)})")
    labels, split, classes, clip_ids = _common(npz, path, data.shape[0])
    layout = str(npz["layout"]) if "layout" in npz.files else None
    try:
        meta = json.loads(str(npz["meta"])) if "meta" in npz.files else {}
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: meta is not JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: meta must be a JSON object")
    return LabeledArrays(data, labels, split, classes, clip_ids, kind, layout, file_sha256(path), meta)


def save_dataset(
    path: Path,
    *,
    labels: np.ndarray,
    split: np.ndarray,
    classes: list[str],
    clip_ids: np.ndarray | None = None,
    keypoints: np.ndarray | None = None,
    frames: np.ndarray | None = None,
    layout: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write a dataset atomically (temp file + rename); it is validated by loading it back."""
    arrays: dict[str, Any] = {
        "labels": np.asarray(labels, dtype=np.int64),
        "split": np.asarray(split).astype(str),
        "classes": np.asarray(classes).astype(str),
    }
    if keypoints is not None:
        arrays["keypoints"] = np.asarray(keypoints, dtype=np.float32)
    if frames is not None:
        arrays["frames"] = np.asarray(frames, dtype=np.uint8)
    if clip_ids is not None:
        arrays["clip_ids"] = np.asarray(clip_ids).astype(str)
    if layout:
        arrays["layout"] = np.asarray(layout)
    if meta:
        arrays["meta"] = np.asarray(json.dumps(meta, sort_keys=True))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(buf.getvalue())
    try:
        load_dataset(tmp)
    except DatasetError:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    return path


def carve_validation(labels: np.ndarray, split: np.ndarray, ratio: float, seed: int) -> np.ndarray:
    """A copy of ``split`` where ``ratio`` of each class's train rows became ``val`` (when there is no val).

    Stratified and seeded: the same inputs always give the same split.
    """
    split = split.copy()
    if (split == "val").any() or ratio <= 0:
        return split
    rng = np.random.default_rng(seed)
    for label in np.unique(labels):
        rows = np.flatnonzero((labels == label) & (split == "train"))
        if len(rows) < 2:
            continue
        take = max(1, round(len(rows) * ratio))
        split[rng.permutation(rows)[:take]] = "val"
    return split


# ------------------------------------------------------------------------------------------ synthetic data


def synthetic_skeletons(
    num_classes: int = 6,
    per_class: int = 40,
    frames: int = 40,
    joints: int = 17,
    seed: int = 0,
    noise: float = 0.01,
    missing: float = 0.05,
    confusable: bool = False,
    unknown_layout: bool = False,
) -> dict[str, Any]:
    """Generated skeleton sequences with a learnable signal: each class moves a different set of joints
    at its own frequency and phase. For tests and benchmarks only (named synthetic wherever reported).

    ``confusable``: classes come in pairs that move the same joints along the same axis, at frequencies 25%
    apart. ``unknown_layout``: the file names no layout (models must find the graph themselves). ``noise`` is
    the per-joint jitter, ``missing`` the share of frames with no person.

    Returns the arrays of the keypoint dataset format, split 60/20/20 per class.
    """
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.35, 0.65, size=(joints, 2))
    t = np.linspace(0, 2 * np.pi, frames)
    keypoints = np.zeros((num_classes * per_class, frames, joints, 3), dtype=np.float32)
    labels = np.repeat(np.arange(num_classes), per_class)
    class_rng = np.random.default_rng(seed + 1)
    layout_name = {17: "coco17", 25: "ntu25", 15: "joints15"}.get(joints)
    partner = list(range(joints))
    if layout_name:  # move mirrored joints together, so that a left-right flip keeps the class
        from action_recognition.skeletons import LAYOUTS

        partner = LAYOUTS[layout_name].flip_index()
    movers = []
    for _ in range(num_classes):
        chosen = class_rng.choice(joints, size=max(2, joints // 6), replace=False)
        movers.append(np.unique(np.concatenate([chosen, np.asarray(partner)[chosen]])))
    freq = class_rng.uniform(1.0, 3.0, size=num_classes)
    axis = class_rng.integers(0, 2, size=num_classes)
    if confusable:
        for k in range(1, num_classes, 2):
            movers[k], axis[k], freq[k] = movers[k - 1], axis[k - 1], freq[k - 1] * 1.25
    for i, label in enumerate(labels):
        centre = rng.uniform(-0.1, 0.1, size=2)
        scale = rng.uniform(0.8, 1.2)
        pose = (base - 0.5) * scale + 0.5 + centre
        seq = np.repeat(pose[None], frames, axis=0)
        phase = rng.uniform(0, 2 * np.pi)
        amp = rng.uniform(0.04, 0.08)
        seq[:, movers[label], axis[label]] += amp * np.sin(freq[label] * t + phase)[:, None]
        seq += rng.normal(0, noise, size=seq.shape)
        keypoints[i, :, :, :2] = np.clip(seq, 0, 1)
        keypoints[i, :, :, 2] = rng.uniform(0.5, 1.0, size=(frames, joints))
        gone = rng.random(frames) < missing
        keypoints[i, gone] = 0.0
    split = np.empty(len(labels), dtype="<U5")
    for k in range(num_classes):
        rows = rng.permutation(np.flatnonzero(labels == k))
        n_test = n_val = max(1, per_class // 5)
        split[rows[:n_test]] = "test"
        split[rows[n_test : n_test + n_val]] = "val"
        split[rows[n_test + n_val :]] = "train"
    return {
        "keypoints": keypoints,
        "labels": labels.astype(np.int64),
        "split": split,
        "classes": [f"synthetic-{k}" for k in range(num_classes)],
        "clip_ids": np.array([f"synthetic_{i:06d}" for i in range(len(labels))]),
        "layout": None if unknown_layout else layout_name,
    }
