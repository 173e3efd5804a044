"""The ``pose`` step: Ultralytics YOLO pose on each normalised clip, the main person tracked through it.

Per clip: frames decoded once (every frame, or sampled at ``pose.fps``), inferred in batches with ``model.track``
(ByteTrack named explicitly, state kept across batches), the main person chosen (:mod:`.tracking`), and
``keypoints/<pose_tag>/<clip_id>.npz`` published with:

    keypoints  float32 (T, 17, 3): x, y in [0, 1] of the frame and the keypoint score; 0 where nobody is seen.
    people     float32 (M, T, 17, 3): the top M people (M = ``pose.top_m``), the first being ``keypoints``.
    meta       JSON: schema version, model, weights sha256, untrained flag, fps, frame size, persons seen, fraction
               of frames with the main person, mean keypoint confidence.

``pose_tag`` names the model, its weights hash and the settings, so other weights never overwrite these keypoints;
untrained weights say ``untrained`` in the tag and the metadata. Clips with no person are published too (zeros,
``main_fraction`` 0) and recorded as ``no_person`` in the pose ledger; nothing NaN is ever written.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from action_recognition.clip import clip_key
from action_recognition.config import ClipConfig, PoseConfig, default_cache_dir
from action_recognition.errors import ActionRecognitionError
from action_recognition.kinetics import read_manifest
from action_recognition.ledger import final_states, shard_rows
from action_recognition.pose.tracking import Detection, Weights, select_people
from action_recognition.storage import Storage

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
JOINTS = 17
POSE_LEDGER_COLUMNS = ("clip_id", "label", "split", "state", "frames", "persons_seen", "main_fraction", "mean_conf",
                       "seconds", "reason")  # fmt: skip


class PoseError(ActionRecognitionError):
    """Pose extraction cannot run as configured (no weights, a hash mismatch, no such device)."""


def keypoints_key(pose_tag: str, clip_id: str) -> str:
    return f"keypoints/{pose_tag}/{clip_id}.npz"


def prepare_ultralytics(config_dir: Path | None) -> None:
    """Offline settings, applied before ``ultralytics`` is imported: no downloads, no installs, no telemetry."""
    folder = config_dir or default_cache_dir() / "ultralytics"
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(folder))
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "false"
    os.environ.setdefault("YOLO_VERBOSE", "false")
    from ultralytics import settings

    settings.update({"sync": False})


@dataclass
class PoseModel:
    """A loaded YOLO pose model and what identifies it."""

    model: Any
    name: str
    weights_sha256: str
    untrained: bool
    device: str
    half: bool

    def tag(self, config: PoseConfig) -> str:
        """``yolo11n-pose-<sha8>-i320-fall`` (+ ``-untrained``): the folder of this model's keypoints."""
        rate = f"f{config.fps:g}" if config.fps else "fall"
        tag = f"{self.name}-{self.weights_sha256[:8]}-i{config.imgsz}-{rate}-m{config.top_m}"
        return f"{tag}-untrained" if self.untrained else tag


def load_pose_model(config: PoseConfig) -> PoseModel:
    """Load the weights (checking their sha256 when configured), or build an untrained model when asked to."""
    prepare_ultralytics(config.config_dir)
    import torch
    from ultralytics import YOLO

    device = config.device
    if device == "auto":
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise PoseError(f"pose.device={config.device} but no CUDA device is available")
    half = config.half and device.startswith("cuda")
    name = Path(config.weights).name.removesuffix(".pt").removesuffix(".yaml")
    if config.untrained:
        yaml_name = f"{name}.yaml"
        model = YOLO(yaml_name)
        sha = hashlib.sha256(f"untrained:{yaml_name}".encode()).hexdigest()
        log.warning("pose: UNTRAINED %s (random weights): keypoints are for tests and benchmarks only", yaml_name)
        return PoseModel(model, name, sha, True, device, half)
    from action_recognition.weights import resolve

    weights, _ = resolve(config.weights, expected_sha256=config.weights_sha256)  # storage URIs via the cache
    if not weights.is_file():
        raise PoseError(
            f"pose weights {weights} not found. Download {weights.name} from Ultralytics (with network access) and "
            "pass its path with --weights, or use --untrained for tests (random weights, tagged untrained)"
        )
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    if config.weights_sha256 and digest != config.weights_sha256:
        raise PoseError(f"pose weights {weights} have sha256 {digest}, expected {config.weights_sha256}")
    model = YOLO(str(weights))
    if getattr(model, "task", None) != "pose":
        raise PoseError(f"{weights} is a {getattr(model, 'task', '?')} model, not a pose model")
    return PoseModel(model, name, digest, False, device, half)


def decode_frames(path: Path, fps: float | None) -> tuple[list[np.ndarray], float, tuple[int, int]]:
    """Every frame (BGR), or frames sampled at ``fps``; with the rate kept and the frame size (h, w)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise PoseError(f"cannot open {path.name} for decoding")
    native = cap.get(cv2.CAP_PROP_FPS) or 25.0
    step = max(1.0, native / fps) if fps else 1.0
    frames: list[np.ndarray] = []
    index, next_keep = 0, 0.0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if index >= next_keep - 1e-6:
                frames.append(frame)
                next_keep += step
            index += 1
    finally:
        cap.release()
    if not frames:
        raise PoseError(f"{path.name} decodes to no frames")
    h, w = frames[0].shape[:2]
    return frames, native / step, (h, w)


def _detections(result: Any, width: int, height: int) -> list[Detection]:
    boxes = result.boxes
    if boxes is None or len(boxes) == 0 or result.keypoints is None:
        return []
    xyxy = boxes.xyxy.float().cpu().numpy()
    conf = boxes.conf.float().cpu().numpy()
    ids = boxes.id.int().cpu().numpy() if boxes.id is not None else [None] * len(conf)
    kpts = result.keypoints.data.float().cpu().numpy()  # (n, 17, 3) pixels + score
    if kpts.shape[-1] == 2:
        kpts = np.concatenate([kpts, np.ones((*kpts.shape[:2], 1), np.float32)], axis=-1)
    scale = np.array([width, height, 1.0], dtype=np.float32)
    out = []
    for i in range(len(conf)):
        norm = np.nan_to_num(kpts[i] / scale, nan=0.0, posinf=0.0, neginf=0.0).clip(0, 1).astype(np.float32)
        norm[norm[:, 2] <= 0] = 0.0
        box = tuple(float(v) for v in (xyxy[i] / np.array([width, height, width, height])).clip(0, 1))
        out.append(Detection(box, norm, float(conf[i]), None if ids[i] is None else int(ids[i])))  # type: ignore[arg-type]
    return out


def infer_clip(pose: PoseModel, frames: list[np.ndarray], config: PoseConfig) -> list[list[Detection]]:
    """Tracked detections per frame; the tracker is reset for each clip and kept across its batches."""
    h, w = frames[0].shape[:2]
    per_frame: list[list[Detection]] = []
    for start in range(0, len(frames), config.batch):
        results = pose.model.track(
            frames[start : start + config.batch], persist=start > 0, tracker=config.tracker, imgsz=config.imgsz,
            conf=config.conf, device=pose.device, half=pose.half, verbose=False,
        )  # fmt: skip
        per_frame.extend(_detections(r, w, h) for r in results)
    return per_frame


def extract_clip(pose: PoseModel, path: Path, config: PoseConfig) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Keypoint arrays and metadata of one clip file."""
    frames, fps, (h, w) = decode_frames(path, config.fps)
    detections = infer_clip(pose, frames, config)
    weights = Weights(config.weight_length, config.weight_area, config.weight_centre, config.weight_conf)
    people, stats = select_people(detections, JOINTS, weights, config.top_m)
    meta = {
        "schema_version": SCHEMA_VERSION, "model": pose.name, "weights_sha256": pose.weights_sha256,
        "untrained": pose.untrained, "fps": fps, "frame_size": [h, w], "frames": len(frames), "imgsz": config.imgsz,
        "tracker": config.tracker, "layout": "coco17", **stats,
    }  # fmt: skip
    return {"keypoints": people[0], "people": people}, meta


def save_keypoints(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    buf = io.BytesIO()
    payload: dict[str, Any] = {**arrays, "meta": np.array(json.dumps(meta, sort_keys=True))}
    np.savez_compressed(buf, **payload)
    path.write_bytes(buf.getvalue())
    return path


def load_keypoints(data: bytes) -> tuple[np.ndarray, dict[str, Any]]:
    """(T, 17, 3) keypoints and metadata of a per-clip file."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return npz["keypoints"].astype(np.float32), json.loads(str(npz["meta"]))


@dataclass
class PoseResult:
    """What one shard's pose extraction did."""

    dataset: str
    shard: tuple[int, int]
    pose_tag: str
    counts: dict[str, int]
    extracted: int
    skipped: int
    frames: int
    seconds: float
    untrained: bool
    keypoints_prefix: str
    ledger_uri: str

    def summary(self) -> dict[str, object]:
        return {
            "dataset": self.dataset, "shard": f"{self.shard[0]}/{self.shard[1]}", "pose_tag": self.pose_tag,
            "states": self.counts, "extracted": self.extracted, "skipped": self.skipped, "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "frames_per_s": round(self.frames / self.seconds, 2) if self.seconds else 0.0,
            "untrained": self.untrained, "keypoints_prefix": self.keypoints_prefix, "ledger_uri": self.ledger_uri,
        }  # fmt: skip


def pose_ledger_key(dataset: str, pose_tag: str, shard: tuple[int, int]) -> str:
    return f"ledger/{dataset}/pose/{pose_tag}/shard-{shard[0]:04d}-of-{shard[1]:04d}.csv"


def read_pose_ledger(storage: Storage, dataset: str, pose_tag: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for key in storage.list(f"ledger/{dataset}/pose/{pose_tag}/"):
        for row in csv.DictReader(io.StringIO(storage.get_bytes(key).decode(), newline="")):
            out[row["clip_id"]] = row
    return out


def pose_shard(
    dataset: str,
    storage: Storage,
    config: PoseConfig,
    clip_config: ClipConfig,
    shard: tuple[int, int] = (0, 1),
    *,
    model: PoseModel | None = None,
    progress: Callable[[int], None] | None = None,
) -> PoseResult:
    """Extract keypoints for every clipped clip of a shard; skip clips whose keypoints exist."""
    pose = model or load_pose_model(config)
    tag = pose.tag(config)
    states = final_states(storage, dataset)
    rows = [r for r in shard_rows(read_manifest(storage, dataset), shard) if states.get(r["clip_id"]) == "ok"]
    previous = read_pose_ledger(storage, dataset, tag)
    records: dict[str, dict[str, str]] = {}
    todo = []
    for row in rows:
        prev = previous.get(row["clip_id"])
        if (
            prev is not None
            and prev["state"] in ("ok", "no_person")
            and storage.exists(keypoints_key(tag, row["clip_id"]))
        ):
            records[row["clip_id"]] = prev
        else:
            todo.append(row)
    if progress:
        progress(len(records))
    began = time.monotonic()
    frames_total = 0
    work = Path(tempfile.mkdtemp(prefix="ar-pose-"))
    try:
        for row in todo:
            cid = row["clip_id"]
            t0 = time.monotonic()
            rec = {"clip_id": cid, "label": row["label"], "split": row["split"], "state": "ok", "frames": "0",
                   "persons_seen": "0", "main_fraction": "0", "mean_conf": "0", "reason": ""}  # fmt: skip
            try:
                src = storage.get_file(clip_key(clip_config.profile, cid), work / "clip.mp4")
                arrays, meta = extract_clip(pose, src, config)
                out = save_keypoints(work / "kp.npz", arrays, meta)
                storage.put_file(keypoints_key(tag, cid), out)
                frames_total += meta["frames"]
                rec.update(frames=str(meta["frames"]), persons_seen=f"{meta['persons_seen']:g}",
                           main_fraction=f"{meta['main_fraction']:.4f}",
                           mean_conf=f"{meta['mean_conf']:.4f}")  # fmt: skip
                if meta["main_fraction"] == 0:
                    rec.update(state="no_person", reason="no person detected in any frame")
            except PoseError as exc:
                rec.update(state="bad_media", reason=str(exc)[:300])
            rec["seconds"] = f"{time.monotonic() - t0:.3f}"
            records[cid] = rec
            if progress:
                progress(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=POSE_LEDGER_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for cid in sorted(records):
        writer.writerow({k: records[cid].get(k, "") for k in POSE_LEDGER_COLUMNS})
    ledger_key = pose_ledger_key(dataset, tag, shard)
    storage.put_bytes_if_changed(ledger_key, buf.getvalue().encode())
    seconds = time.monotonic() - began
    return PoseResult(
        dataset=dataset, shard=shard, pose_tag=tag, counts=dict(Counter(r["state"] for r in records.values())),
        extracted=len(todo), skipped=len(rows) - len(todo), frames=frames_total, seconds=seconds,
        untrained=pose.untrained, keypoints_prefix=storage.key_uri(f"keypoints/{tag}/x")[:-2],
        ledger_uri=storage.key_uri(ledger_key),
    )  # fmt: skip
