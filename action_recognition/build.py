"""The ``build-dataset`` step: per-clip keypoints (or clip frames) packed into one training file.

Keypoints: ``datasets/<name>/keypoints-<hash>.npz`` in the format of :mod:`action_recognition.datasets` (every
clip resampled to ``build.frames``), plus ``keypoints-<hash>.mmaction.pkl`` in the MMAction2/pyskl skeleton
annotation format (pixel coordinates, ``keypoint`` (M, T, V, 2) and ``keypoint_score`` (M, T, V)) for interop.
Frames: ``datasets/<name>/frames-<hash>.npz``, ``build.rgb_frames`` frames per clip (the centres of equal
segments), centre-cropped squares of ``build.rgb_size``: decoded once here, so training never decodes video.

``<hash>`` covers the manifest version, the pose tag or clip profile, the settings and the clips included, so
the same inputs give the same key and an existing file is not rebuilt. Clips left out are counted by reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from action_recognition.config import BuildConfig, ClipConfig
from action_recognition.datasets import DatasetError, save_dataset
from action_recognition.layout import built_key, clip_key, keypoints_key, pose_stage
from action_recognition.ledger import final_states, read_stage
from action_recognition.manifest import read_manifest, read_plan_info
from action_recognition.storage import Storage

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    """What was packed; ``summary()`` is the CLI's JSON line (``dataset_uri`` is what ``train`` takes)."""

    dataset: str
    kind: str
    dataset_uri: str
    samples: int
    classes: int
    splits: dict[str, int]
    excluded: dict[str, int]
    built: bool
    manifest_sha256: str
    mmaction_uri: str = ""
    untrained_pose: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        return asdict(self)


def resample(sequence: np.ndarray, frames: int) -> np.ndarray:
    """Nearest-frame resampling of (T, ...) to (frames, ...): missing frames stay missing (zeros), never
    blended."""
    t = sequence.shape[0]
    index = np.round(np.linspace(0, t - 1, frames)).astype(int) if t else np.zeros(frames, dtype=int)
    return sequence[index] if t else np.zeros((frames, *sequence.shape[1:]), dtype=sequence.dtype)


def _manifest_info(storage: Storage, name: str) -> tuple[list[dict[str, str]], str, list[str]]:
    rows = read_manifest(storage, name)
    info = read_plan_info(storage, name)
    if info is None:
        raise DatasetError(f"dataset {name!r} has no plan in {storage.uri}; run plan first")
    return rows, info.manifest_sha256, sorted(info.targets)


def build_keypoint_dataset(name: str, storage: Storage, config: BuildConfig, pose_tag: str) -> BuildResult:
    """Pack the keypoints of every ok clip of ``name`` extracted with ``pose_tag``."""
    from action_recognition.pose.extract import load_keypoints

    rows, manifest_sha, classes = _manifest_info(storage, name)
    states = final_states(storage, name)
    pose_states = read_stage(storage, name, pose_stage(pose_tag))
    excluded: Counter[str] = Counter()
    chosen = []
    for row in rows:
        cid = row["clip_id"]
        if states.get(cid) != "ok":
            excluded[f"acquisition:{states.get(cid, 'pending')}"] += 1
        elif cid not in pose_states:
            excluded["pose:pending"] += 1
        elif pose_states[cid].state != "ok" or pose_states[cid].main_fraction < config.min_main_fraction:
            excluded[f"pose:{'bad_media' if pose_states[cid].state == 'bad_media' else 'no_person'}"] += 1
        else:
            chosen.append(row)
    key_hash = hashlib.sha256(
        json.dumps(
            [manifest_sha, pose_tag, config.frames, config.min_main_fraction, [r["clip_id"] for r in chosen]]
        ).encode()
    ).hexdigest()[:16]
    key = built_key(name, "keypoints", key_hash)
    pkl_key = built_key(name, "keypoints", key_hash, ".mmaction.pkl")
    splits = dict(Counter(r["split"] for r in chosen))
    result = BuildResult(
        name,
        "keypoints",
        storage.key_uri(key),
        len(chosen),
        len(classes),
        splits,
        dict(excluded),
        False,
        manifest_sha,
        storage.key_uri(pkl_key),
        pose_tag.endswith("-untrained"),
        {"pose_tag": pose_tag, "frames": config.frames},
    )
    if not chosen:
        raise DatasetError(
            f"no clip of {name} has usable keypoints for {pose_tag}: excluded {dict(excluded)}"
        )
    if storage.exists(key) and storage.exists(pkl_key):
        log.info("%s exists: nothing to build", result.dataset_uri)
        _point_latest(storage, result)
        return result
    keypoints = np.zeros((len(chosen), config.frames, 17, 3), dtype=np.float32)
    annotations = []
    for i, row in enumerate(chosen):
        kp, meta = load_keypoints(storage.get_bytes(keypoints_key(pose_tag, row["clip_id"])))
        keypoints[i] = resample(kp, config.frames)
        h, w = meta["frame_size"]
        annotations.append(
            {
                "frame_dir": row["clip_id"],
                "label": classes.index(row["label"]),
                "img_shape": (h, w),
                "original_shape": (h, w),
                "total_frames": config.frames,
                "keypoint": (keypoints[i, :, :, :2] * np.array([w, h], np.float32))[None],
                "keypoint_score": keypoints[i, :, :, 2][None],
            }
        )
    labels = np.array([classes.index(r["label"]) for r in chosen], dtype=np.int64)
    with tempfile.TemporaryDirectory(prefix="ar-build-") as tmp:
        path = save_dataset(
            Path(tmp) / "d.npz",
            keypoints=keypoints,
            labels=labels,
            split=np.array([r["split"] for r in chosen]),
            classes=classes,
            clip_ids=np.array([r["clip_id"] for r in chosen]),
            layout="coco17",
            meta={
                "pose_tag": pose_tag,
                "untrained_pose": pose_tag.endswith("-untrained"),
                "manifest_sha256": manifest_sha,
            },
        )
        mm_split = {s: [r["clip_id"] for r in chosen if r["split"] == s] for s in ("train", "val", "test")}
        pkl = Path(tmp) / "d.pkl"
        pkl.write_bytes(pickle.dumps({"split": mm_split, "annotations": annotations}, protocol=4))
        storage.put_file(pkl_key, pkl)
        storage.put_file(key, path)  # the .npz last: its presence marks a complete build
    result.built = True
    log.info("built %s: %d clips, excluded %s", result.dataset_uri, len(chosen), dict(excluded))
    _point_latest(storage, result)
    return result


def sample_frames(path: Path, count: int, size: int) -> np.ndarray:
    """``count`` RGB frames at the centres of equal segments of a clip, centre-cropped to ``size``^2,
    uint8."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    if not frames:
        raise ValueError(f"{path.name} decodes to no frames")
    n = len(frames)
    picks = [min(n - 1, int((k + 0.5) * n / count)) for k in range(count)]
    out = np.zeros((count, size, size, 3), dtype=np.uint8)
    for j, index in enumerate(picks):
        img = frames[index]
        h, w = img.shape[:2]
        scale = size / min(h, w)
        img = cv2.resize(
            img, (max(size, round(w * scale)), max(size, round(h * scale))), interpolation=cv2.INTER_AREA
        )
        h, w = img.shape[:2]
        top, left = (h - size) // 2, (w - size) // 2
        out[j] = cv2.cvtColor(img[top : top + size, left : left + size], cv2.COLOR_BGR2RGB)
    return out


def build_frames_dataset(
    name: str, storage: Storage, config: BuildConfig, clip_config: ClipConfig
) -> BuildResult:
    """Decode ``build.rgb_frames`` frames of every ok clip once and pack them for the RGB models."""
    rows, manifest_sha, classes = _manifest_info(storage, name)
    states = final_states(storage, name)
    chosen = [r for r in rows if states.get(r["clip_id"]) == "ok"]
    excluded = dict(
        Counter(
            f"acquisition:{states.get(r['clip_id'], 'pending')}"
            for r in rows
            if states.get(r["clip_id"]) != "ok"
        )
    )
    key_hash = hashlib.sha256(
        json.dumps(
            [
                manifest_sha,
                clip_config.profile,
                config.rgb_frames,
                config.rgb_size,
                [r["clip_id"] for r in chosen],
            ]
        ).encode()
    ).hexdigest()[:16]
    key = built_key(name, "frames", key_hash)
    result = BuildResult(
        name,
        "frames",
        storage.key_uri(key),
        len(chosen),
        len(classes),
        dict(Counter(r["split"] for r in chosen)),
        excluded,
        False,
        manifest_sha,
        extra={"profile": clip_config.profile, "frames": config.rgb_frames, "size": config.rgb_size},
    )
    if not chosen:
        raise DatasetError(f"no clip of {name} is clipped yet: {excluded}")
    if storage.exists(key):
        _point_latest(storage, result)
        return result
    frames = np.zeros((len(chosen), config.rgb_frames, config.rgb_size, config.rgb_size, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="ar-build-") as tmp:
        for i, row in enumerate(chosen):
            src = storage.get_file(clip_key(clip_config.profile, row["clip_id"]), Path(tmp) / "c.mp4")
            frames[i] = sample_frames(src, config.rgb_frames, config.rgb_size)
        path = save_dataset(
            Path(tmp) / "f.npz",
            frames=frames,
            labels=np.array([classes.index(r["label"]) for r in chosen], dtype=np.int64),
            split=np.array([r["split"] for r in chosen]),
            classes=classes,
            clip_ids=np.array([r["clip_id"] for r in chosen]),
        )
        storage.put_file(key, path)
    result.built = True
    _point_latest(storage, result)
    return result


def _point_latest(storage: Storage, result: BuildResult) -> None:
    from action_recognition.pipeline import write_latest

    write_latest(
        storage,
        result.dataset,
        result.kind,
        {
            "dataset_uri": result.dataset_uri,
            "manifest_sha256": result.manifest_sha256,
            "samples": result.samples,
        },
    )
