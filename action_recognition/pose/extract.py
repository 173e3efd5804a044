"""The ``pose`` step: Ultralytics YOLO pose on each normalised clip, the main person tracked through it.

Per clip: frames decoded once by ffmpeg at the inference size (every frame, or sampled at ``pose.fps``),
inferred in batches filled across clips, tracked with ByteTrack exactly as ``model.track`` would, the main
person chosen (:mod:`.tracking`): the stages overlap (:mod:`.pipeline`).
``keypoints/<pose_tag>/<clip_id>.npz`` is published with:

    keypoints  float32 (T, 17, 3): x, y in [0, 1] of the frame and the keypoint score; 0 where nobody is seen.
    people     float32 (M, T, 17, 3): the top M people (M = ``pose.top_m``), the first being ``keypoints``.
    meta       JSON: schema version, model, weights sha256, untrained flag, fps, frame size, persons seen,
               fraction of frames with the main person, mean keypoint confidence.

``pose_tag`` names the model, its weights hash and the settings, so other weights never overwrite these
keypoints; untrained weights say ``untrained`` in the tag and the metadata. Clips with no person are published
too (zeros, ``main_fraction`` 0) and recorded as ``no_person`` in the pose ledger; nothing NaN is ever
written.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from action_recognition.config import ClipConfig, PoseConfig, default_cache_dir
from action_recognition.errors import ActionRecognitionError
from action_recognition.layout import clip_key, keypoints_key, keypoints_prefix, pose_stage
from action_recognition.ledger import Decision, LedgerRecord, final_states, run_shard
from action_recognition.pose.pipeline import ClipPose, PoseItem, StageClock, extract_stream
from action_recognition.storage import Storage

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
JOINTS = 17


class PoseError(ActionRecognitionError):
    """Pose extraction cannot run as configured (no weights, a hash mismatch, no such device)."""


@contextmanager
def ultralytics_offline(config_dir: Path | None) -> Iterator[None]:
    """Ultralytics imported and used offline inside the block: no downloads, no installs, no telemetry, its
    settings in ``config_dir``. Ultralytics reads these from the environment only, when it is first imported
    (and ``YOLO_OFFLINE`` again before any download), so they are in the environment for the block alone
    (:func:`action_recognition.services.environment`); what the import fixed stays fixed after it."""
    from action_recognition.services import environment

    folder = config_dir or default_cache_dir() / "ultralytics"
    folder.mkdir(parents=True, exist_ok=True)
    offline = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false"}
    with environment(offline, defaults={"YOLO_CONFIG_DIR": str(folder), "YOLO_VERBOSE": "false"}):
        from ultralytics import settings

        settings.update({"sync": False})
        yield


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
    with ultralytics_offline(config.config_dir):
        return _load_pose_model(config)


def _load_pose_model(config: PoseConfig) -> PoseModel:
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
        log.warning(
            "pose: UNTRAINED %s (random weights): keypoints are for tests and benchmarks only", yaml_name
        )
        return PoseModel(model, name, sha, True, device, half)
    from action_recognition.weights import resolve

    weights, _ = resolve(config.weights, expected_sha256=config.weights_sha256)  # storage URIs via the cache
    if not weights.is_file():
        raise PoseError(
            f"pose weights {weights} not found. Download {weights.name} from Ultralytics (with network "
            "access) and "
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


def _meta(pose: PoseModel, config: PoseConfig, clip: ClipPose) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "model": pose.name,
        "weights_sha256": pose.weights_sha256,
        "untrained": pose.untrained,
        "fps": clip.fps,
        "frame_size": list(clip.frame_size),
        "frames": clip.frames,
        "imgsz": config.imgsz,
        "tracker": config.tracker,
        "layout": "coco17",
        **clip.stats,
    }


def extract_clip(
    pose: PoseModel, path: Path, config: PoseConfig
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Keypoint arrays and metadata of one clip file (the pipelined step with one clip in it)."""
    (clip,) = extract_stream(pose, [PoseItem(path.name, lambda: path)], config, lambda _, c: c)
    if clip.people is None:
        raise PoseError(clip.error or f"{path.name}: no frames")
    return {"keypoints": clip.people[0], "people": clip.people}, _meta(pose, config, clip)


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
    """The tag under which ``config``'s model writes keypoints (loads the model: the tag names its
    weights)."""
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
    clock: StageClock

    def summary(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
            "shard": f"{self.shard[0]}/{self.shard[1]}",
            "pose_tag": self.pose_tag,
            "states": self.counts,
            "extracted": self.extracted,
            "skipped": self.skipped,
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "frames_per_s": round(self.frames / self.seconds, 2) if self.seconds else 0.0,
            "stages_ms_per_frame": self.clock.ms_per_frame(),
            "wall_ms_per_frame": self.clock.wall_ms_per_frame(),
            "untrained": self.untrained,
            "keypoints_prefix": self.keypoints_prefix,
            "ledger_uri": self.ledger_uri,
        }


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
    """Extract keypoints for every clipped clip of a shard, pipelined (:mod:`.pipeline`); skip clips whose
    keypoints exist."""
    pose = model or load_pose_model(config)
    tag = pose.tag(config)
    states = final_states(storage, dataset)
    clock = StageClock()

    def triage(row: dict[str, str], prev: LedgerRecord | None) -> Decision:
        cid = row["clip_id"]
        if states.get(cid) != "ok":
            return "wait"  # not clipped (yet, or ever): no pose record
        if prev is not None and prev.state in ("ok", "no_person") and storage.exists(keypoints_key(tag, cid)):
            return prev
        return "process"

    def item(row: dict[str, str]) -> PoseItem:
        cid = row["clip_id"]
        return PoseItem(
            cid, lambda: storage.get_file(clip_key(clip_config.profile, cid), work / f"{cid}.mp4")
        )

    def finish(row: dict[str, str], clip: ClipPose) -> LedgerRecord:
        cid = clip.key
        rec = LedgerRecord(cid, row["label"], row["split"], "ok", method=tag)
        (work / f"{cid}.mp4").unlink(missing_ok=True)
        if clip.people is None:
            rec.state, rec.reason = "bad_media", (clip.error or "")[:300]
            return rec
        meta = _meta(pose, config, clip)
        storage.put_file(
            keypoints_key(tag, cid),
            save_keypoints(work / f"{cid}.npz", {"keypoints": clip.people[0], "people": clip.people}, meta),
        )
        (work / f"{cid}.npz").unlink(missing_ok=True)
        rec.frames, rec.persons_seen = int(meta["frames"]), float(meta["persons_seen"])
        rec.main_fraction, rec.mean_conf = float(meta["main_fraction"]), float(meta["mean_conf"])
        if rec.main_fraction == 0:
            rec.state, rec.reason = "no_person", "no person detected in any frame"
        return rec

    def stream(rows: list[dict[str, str]]) -> Iterator[LedgerRecord]:
        by_id = {r["clip_id"]: r for r in rows}
        return extract_stream(
            pose, [item(r) for r in rows], config, lambda it, c: finish(by_id[it.key], c), clock=clock
        )

    work = Path(tempfile.mkdtemp(prefix="ar-pose-"))
    try:
        run = run_shard(storage, dataset, pose_stage(tag), shard, triage, stream=stream, progress=progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return PoseResult(
        dataset=dataset,
        shard=shard,
        pose_tag=tag,
        counts=run.counts,
        extracted=len(run.fresh),
        skipped=run.skipped,
        frames=sum(r.frames for r in run.fresh),
        seconds=run.seconds,
        untrained=pose.untrained,
        keypoints_prefix=storage.prefix_uri(keypoints_prefix(tag)),
        ledger_uri=storage.key_uri(run.ledger_key),
        clock=clock,
    )
