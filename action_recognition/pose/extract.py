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

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from action_recognition.config import ClipConfig, PoseConfig, default_cache_dir
from action_recognition.errors import ActionRecognitionError
from action_recognition.layout import clip_key, keypoints_key, keypoints_prefix, pose_stage
from action_recognition.ledger import Decision, LedgerRecord, final_states, run_shard
from action_recognition.pose.tracking import Detection, Weights, select_people
from action_recognition.storage import Storage

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
JOINTS = 17


class PoseError(ActionRecognitionError):
    """Pose extraction cannot run as configured (no weights, a hash mismatch, no such device)."""


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


def load_people(data: bytes) -> tuple[np.ndarray, float | None]:
    """Every tracked person of a per-clip file, (M, T, 17, 3) (one person in older files), and its fps."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        people = npz["people"] if "people" in npz.files else npz["keypoints"][None]
        fps = json.loads(str(npz["meta"])).get("fps") if "meta" in npz.files else None
    return people.astype(np.float32), fps


def pose_tag_of(config: PoseConfig) -> str:
    """The tag under which ``config``'s model writes keypoints (loads the model: the tag names its weights)."""
    return load_pose_model(config).tag(config)


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

    def triage(row: dict[str, str], prev: LedgerRecord | None) -> Decision:
        cid = row["clip_id"]
        if states.get(cid) != "ok":
            return "wait"  # not clipped (yet, or ever): no pose record
        if prev is not None and prev.state in ("ok", "no_person") and storage.exists(keypoints_key(tag, cid)):
            return prev
        return "process"

    def one(row: dict[str, str]) -> LedgerRecord:
        cid = row["clip_id"]
        began = time.monotonic()
        rec = LedgerRecord(cid, row["label"], row["split"], "ok", method=tag)
        try:
            src = storage.get_file(clip_key(clip_config.profile, cid), work / "clip.mp4")
            arrays, meta = extract_clip(pose, src, config)
            storage.put_file(keypoints_key(tag, cid), save_keypoints(work / "kp.npz", arrays, meta))
            rec.frames, rec.persons_seen = int(meta["frames"]), float(meta["persons_seen"])
            rec.main_fraction, rec.mean_conf = float(meta["main_fraction"]), float(meta["mean_conf"])
            if rec.main_fraction == 0:
                rec.state, rec.reason = "no_person", "no person detected in any frame"
        except PoseError as exc:
            rec.state, rec.reason = "bad_media", str(exc)[:300]
        rec.seconds = time.monotonic() - began
        return rec

    work = Path(tempfile.mkdtemp(prefix="ar-pose-"))
    try:  # one clip at a time: the model keeps its tracker state per clip
        run = run_shard(storage, dataset, pose_stage(tag), shard, triage, one, progress=progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return PoseResult(
        dataset=dataset, shard=shard, pose_tag=tag, counts=run.counts, extracted=len(run.fresh),
        skipped=run.skipped, frames=sum(r.frames for r in run.fresh), seconds=run.seconds,
        untrained=pose.untrained, keypoints_prefix=storage.prefix_uri(keypoints_prefix(tag)),
        ledger_uri=storage.key_uri(run.ledger_key),
    )  # fmt: skip
