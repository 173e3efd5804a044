"""The pose step as a pipeline: decoding, inference, tracking and writing overlap, several clips in flight.

    decode  ``pose.workers`` threads, each an ffmpeg process that decodes a clip straight to the inference
            size (long side ``pose.imgsz``; never upscaled), BGR, a bounded number of clips ahead
    infer   one thread; batches of ``pose.batch`` frames filled across clip boundaries, so the accelerator
            never sees the short last batch of every clip
    track   per clip, once its last frame is inferred: ByteTrack (a fresh tracker per clip, exactly as
            ``model.track`` runs it) and the main-person choice, off the inference thread: in a thread, or in
            worker processes (``pose.track_in``; ``auto`` = processes on CUDA, where the GIL would otherwise
            be shared with the inference thread's pre- and post-processing)
    write   the caller's ``finish`` (the npz and its upload), in one thread, in clip order

Queues between the stages are bounded, so memory holds a few clips whatever the shard's size. Every stage's
busy seconds are kept in a :class:`StageClock`: per-stage ms per frame beside the wall time say which stage
bounds the step. A clip that cannot be decoded ends as an error for that clip; anything else (storage, CUDA)
stops the step.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from action_recognition.config import PoseConfig
from action_recognition.errors import ActionRecognitionError, ConfigError
from action_recognition.media import INPUT_FORMATS, LOCAL_PROTOCOLS, MediaError, read_frames
from action_recognition.pose.tracking import Detection, Weights, select_people
from action_recognition.threads import use_its_share_of_cores

STAGES = ("decode", "infer", "track", "write")
JOINTS = 17
R = TypeVar("R")


class DecodeError(ActionRecognitionError):
    """A clip that cannot be decoded (its own fault: recorded for the clip, the step goes on)."""

    retryable = False


@dataclass
class Decoded:
    """A clip's frames at the inference size and what they came from."""

    frames: np.ndarray  # (T, h, w, 3) uint8 BGR, the long side at most pose.imgsz
    fps: float  # of the kept frames
    frame_size: tuple[int, int]  # the file's own (h, w)


def _video_props(path: Path) -> tuple[int, int, float, int]:
    """(width, height, fps, frames) as the decoder reports them (OpenCV reads the header; no subprocess)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise DecodeError(f"cannot open {path.name} for decoding")
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or 25.0
        frames = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
    finally:
        cap.release()
    if w <= 0 or h <= 0:
        raise DecodeError(f"{path.name} has no video frames to decode")
    return w, h, fps, frames


def decode_clip(path: Path, fps: float | None, imgsz: int, *, timeout_s: float = 600.0) -> Decoded:
    """Every frame (or frames sampled at ``fps``), decoded by ffmpeg at the inference size: the long side
    ``imgsz`` (never upscaled), aspect kept; local files only (protocol and format whitelists). Raw video
    output has no timestamps, so ffmpeg passes every decoded frame through once (no frame dropped or
    duplicated)."""
    w, h, native, count = _video_props(path)
    scale = min(1.0, imgsz / max(w, h))
    sw, sh = max(2, round(w * scale)), max(2, round(h * scale))
    argv = [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-protocol_whitelist",
        LOCAL_PROTOCOLS,
        "-format_whitelist",
        INPUT_FORMATS,
        "-threads",
        "1",
        "-i",
        str(path),
        "-an",
        "-sn",
        "-dn",
        "-map",
        "0:v:0",
        "-vf",
        f"scale={sw}:{sh}:flags=area",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "bgr24",
        "pipe:1",
    ]
    try:
        size = sw * sh * 3
        raw = read_frames(
            argv, frame_bytes=size, expected=count, timeout_s=timeout_s, what=f"decode {path.name}"
        )
    except MediaError as exc:
        raise DecodeError(str(exc)) from exc
    if not len(raw) or len(raw) % size:
        raise DecodeError(
            f"{path.name} decodes to no frames"
            if not len(raw)
            else f"{path.name}: decoded {len(raw)} bytes, not whole {sw}x{sh} frames"
        )
    frames = raw.reshape(-1, sh, sw, 3)
    step = max(1.0, native / fps) if fps else 1.0
    if step > 1.0:  # the same rule as ever: keep frame i when i reaches the next multiple of step
        keep, next_keep = [], 0.0
        for i in range(len(frames)):
            if i >= next_keep - 1e-6:
                keep.append(i)
                next_keep += step
        frames = frames[keep]
    return Decoded(frames, native / step, (h, w))


@dataclass
class StageClock:
    """Busy seconds per stage and the frames that went through; thread-safe."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    frames: int = 0
    wall: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, stage: str, seconds: float, frames: int = 0) -> None:
        with self._lock:
            self.seconds[stage] += seconds
            self.frames += frames

    def ms_per_frame(self) -> dict[str, float]:
        """Each stage's busy time per frame (decode summed over its threads)."""
        return {s: round(1000 * v / self.frames, 3) if self.frames else 0.0 for s, v in self.seconds.items()}

    def wall_ms_per_frame(self) -> float:
        return round(1000 * self.wall / self.frames, 3) if self.frames else 0.0


@dataclass
class PoseItem:
    """One clip to extract: a key that names it and how to get its file (called in a decode thread)."""

    key: str
    fetch: Callable[[], Path]


@dataclass
class ClipPose:
    """What one clip ended as: the people (M, T, 17, 3) and their statistics, or the reason it could not be
    read."""

    key: str
    people: np.ndarray | None = None
    stats: dict[str, float] = field(default_factory=dict)
    fps: float = 0.0
    frame_size: tuple[int, int] = (0, 0)
    frames: int = 0
    error: str | None = None


def raw_detections(result: Any) -> tuple[np.ndarray, np.ndarray]:
    """One frame's detections as numpy: boxes (n, 6) x1 y1 x2 y2 conf cls in pixels, keypoints (n, 17, 3)."""
    if result.boxes is None or len(result.boxes) == 0 or result.keypoints is None:
        return np.zeros((0, 6), np.float32), np.zeros((0, JOINTS, 3), np.float32)
    boxes = result.boxes.data.float().cpu().numpy()
    return boxes[:, :6], _with_scores(result.keypoints.data.float().cpu().numpy())


def _with_scores(kpts: np.ndarray) -> np.ndarray:
    """(n, 17, 3): a model without keypoint scores gets 1 for every keypoint."""
    if kpts.shape[-1] == 2:
        return np.concatenate([kpts, np.ones((*kpts.shape[:2], 1), np.float32)], axis=-1)
    return kpts


def batch_detections(results: list[Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`raw_detections` of a whole batch with one copy from the device (not two per frame): the boxes
    and keypoints of every frame concatenated where they are, copied once, and split by the counts."""
    import torch

    found = [r for r in results if r.boxes is not None and len(r.boxes) and r.keypoints is not None]
    if len(found) < 2 or not found[0].boxes.data.is_cuda:
        return [raw_detections(r) for r in results]
    boxes = torch.cat([r.boxes.data[:, :6].float() for r in found]).cpu().numpy()
    kpts = _with_scores(torch.cat([r.keypoints.data.float() for r in found]).cpu().numpy())
    out, at = [], 0
    empty = (np.zeros((0, 6), np.float32), np.zeros((0, JOINTS, 3), np.float32))
    for r in results:
        n = len(r.boxes) if r.boxes is not None and r.keypoints is not None else 0
        out.append((boxes[at : at + n], kpts[at : at + n]) if n else empty)
        at += n
    return out


def to_detections(
    xyxy: np.ndarray, conf: np.ndarray, ids: np.ndarray | None, kpts: np.ndarray, w: int, h: int
) -> list[Detection]:
    scale = np.array([w, h, 1.0], dtype=np.float32)
    out = []
    for i in range(len(conf)):
        norm = np.nan_to_num(kpts[i] / scale, nan=0.0, posinf=0.0, neginf=0.0).clip(0, 1).astype(np.float32)
        norm[norm[:, 2] <= 0] = 0.0
        box = tuple(float(v) for v in (xyxy[i] / np.array([w, h, w, h])).clip(0, 1))
        track = None if ids is None else int(ids[i])
        out.append(Detection(box, norm, float(conf[i]), track))  # type: ignore[arg-type]
    return out


def tracker_settings(tracker: str) -> dict[str, Any]:
    """The tracker's YAML (a name Ultralytics ships or a path), checked: tracking runs without the frames,
    which ByteTrack never needs (BoT-SORT's camera-motion compensation would)."""
    from ultralytics.utils import YAML
    from ultralytics.utils.checks import check_yaml

    settings = dict(YAML.load(check_yaml(tracker)))
    if settings.get("tracker_type") != "bytetrack":
        raise ConfigError(
            f"pose.tracker={tracker}: tracker_type {settings.get('tracker_type')!r} is not supported; the "
            "pose step "
            "tracks off the inference path, without the frames: use a bytetrack tracker config"
        )
    return settings


def track_clip(
    raw: list[tuple[np.ndarray, np.ndarray]],
    size: tuple[int, int],
    settings: dict[str, Any],
    weights: Weights,
    top_m: int,
) -> tuple[np.ndarray, dict[str, float], float]:
    """ByteTrack over a clip's raw detections, as ``model.track`` does it (a fresh tracker; a frame whose
    tracker output is empty keeps its detections without ids, or none while a new track is unconfirmed), then
    the main people. Returns (people, stats, seconds). Top level and plain data in and out: it runs in worker
    processes."""
    from ultralytics.engine.results import Boxes
    from ultralytics.trackers.byte_tracker import BYTETracker
    from ultralytics.utils import IterableSimpleNamespace

    began = time.perf_counter()  # after the imports: a worker process pays for them once
    h, w = size
    tracker = BYTETracker(args=IterableSimpleNamespace(**settings))
    frames: list[list[Detection]] = []
    for boxes, kpts in raw:
        tracks = tracker.update(Boxes(boxes, (h, w)), None)
        if len(tracks) == 0:
            hidden = any(not t.is_activated for t in tracker.tracked_stracks)
            frames.append([] if hidden else to_detections(boxes[:, :4], boxes[:, 4], None, kpts, w, h))
            continue
        idx = tracks[:, -1].astype(int)
        frames.append(to_detections(tracks[:, :4], tracks[:, 5], tracks[:, 4], kpts[idx], w, h))
    people, stats = select_people(frames, JOINTS, weights, top_m)
    return people, stats, time.perf_counter() - began


def _spawn_context() -> Any:
    return multiprocessing.get_context("spawn")  # never fork a process that holds CUDA and threads


def track_executor(config: PoseConfig, device: str) -> Executor:
    """Where tracking runs: processes on CUDA (or when asked), else one thread."""
    if config.track_in == "process" or (config.track_in == "auto" and device.startswith("cuda")):
        return ProcessPoolExecutor(max_workers=2, mp_context=_spawn_context())
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="pose-track")


@dataclass
class _Clip:
    item: PoseItem
    decoded: Decoded
    raw: list[Any]
    left: int


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


def _put(q: queue.Queue[Any], value: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(value, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


@dataclass
class _Run(Generic[R]):
    """One pipelined extraction; its threads and queues."""

    pose: Any
    config: PoseConfig
    finish: Callable[[PoseItem, ClipPose], R]
    clock: StageClock
    tracking: Executor
    settings: dict[str, Any]
    stop: threading.Event = field(default_factory=threading.Event)
    finishing: queue.Queue[Any] = field(default_factory=lambda: queue.Queue(maxsize=4))
    out: queue.Queue[Any] = field(default_factory=queue.Queue)
    pending: deque[_Clip | tuple[PoseItem, str]] = field(default_factory=deque)  # in order, not yet tracked

    def decoded(self, items: Iterable[PoseItem], pool: ThreadPoolExecutor) -> Iterator[tuple[PoseItem, Any]]:
        """Clips in order, decoded ahead by the pool (at most workers + 1 clips held)."""

        def decode(item: PoseItem) -> Decoded | str:
            began = time.perf_counter()
            try:
                return decode_clip(item.fetch(), self.config.fps, self.config.imgsz)
            except DecodeError as exc:
                return str(exc)
            finally:
                self.clock.add("decode", time.perf_counter() - began)

        window: deque[tuple[PoseItem, Future[Decoded | str]]] = deque()
        source = iter(items)
        for item in source:
            window.append((item, pool.submit(decode, item)))
            if len(window) > self.config.workers:
                break
        while window and not self.stop.is_set():
            item, future = window.popleft()
            nxt = next(source, None)
            if nxt is not None:
                window.append((nxt, pool.submit(decode, nxt)))
            yield item, future.result()

    def infer(self, items: Iterable[PoseItem]) -> None:
        """The inference thread: full batches across clips; a finished clip goes to tracking."""
        try:
            with ThreadPoolExecutor(self.config.workers, thread_name_prefix="pose-decode") as pool:
                batch: list[tuple[_Clip, int]] = []
                for item, dec in self.decoded(items, pool):
                    if isinstance(dec, str):
                        self.pending.append((item, dec))
                        self.release()
                        continue
                    clip = _Clip(item, dec, [None] * len(dec.frames), len(dec.frames))
                    self.pending.append(clip)
                    for i in range(len(dec.frames)):
                        batch.append((clip, i))
                        if len(batch) == self.config.batch:
                            self.run_batch(batch)
                            batch = []
                if batch:
                    self.run_batch(batch)
            _put(self.finishing, _END, self.stop)
        except BaseException as exc:
            _put(self.finishing, _Failure(exc), self.stop)

    def run_batch(self, batch: list[tuple[_Clip, int]]) -> None:
        use_its_share_of_cores()
        began = time.perf_counter()
        results = self.pose.model.predict(
            [clip.decoded.frames[i] for clip, i in batch],
            imgsz=self.config.imgsz,
            conf=self.config.conf,
            device=self.pose.device,
            half=self.pose.half,
            verbose=False,
        )
        for (clip, i), raw in zip(batch, batch_detections(results), strict=True):
            clip.raw[i] = raw
            clip.left -= 1
        self.clock.add("infer", time.perf_counter() - began, frames=len(batch))
        self.release()

    def release(self) -> None:
        """Hand the clips at the head of the queue that are done (inferred, or unreadable) to tracking, in
        order."""
        weights = Weights(
            self.config.weight_length,
            self.config.weight_area,
            self.config.weight_centre,
            self.config.weight_conf,
        )
        while self.pending and (isinstance(head := self.pending[0], tuple) or head.left == 0):
            self.pending.popleft()
            if isinstance(head, tuple):
                _put(self.finishing, (head[0], None, head[1]), self.stop)
                continue
            h, w = head.decoded.frames.shape[1:3]
            future = self.tracking.submit(
                track_clip, head.raw, (h, w), self.settings, weights, self.config.top_m
            )
            _put(self.finishing, (head.item, (head.decoded.fps, head.decoded.frame_size), future), self.stop)
            head.decoded.frames = head.decoded.frames[
                :0
            ]  # the frames are done with: memory holds a few clips

    def write(self) -> None:
        """The write thread: tracking's results in clip order, handed to ``finish``."""
        try:
            while not self.stop.is_set():
                try:
                    entry = self.finishing.get(timeout=0.1)
                except queue.Empty:
                    continue
                if entry is _END or isinstance(entry, _Failure):
                    self.out.put(entry)
                    return
                item, source, tracked = entry
                if source is None:
                    clip = ClipPose(item.key, error=tracked)
                else:
                    people, stats, seconds = tracked.result()
                    self.clock.add("track", seconds)
                    clip = ClipPose(item.key, people, stats, source[0], source[1], people.shape[1])
                began = time.perf_counter()
                self.out.put(self.finish(item, clip))
                self.clock.add("write", time.perf_counter() - began)
        except BaseException as exc:
            self.stop.set()
            self.out.put(_Failure(exc))


def extract_stream(
    pose: Any,
    items: Iterable[PoseItem],
    config: PoseConfig,
    finish: Callable[[PoseItem, ClipPose], R],
    *,
    clock: StageClock | None = None,
    tracking: Executor | None = None,
) -> Iterator[R]:
    """``finish``'s result for every item, in item order, the stages overlapping. ``pose`` is a loaded
    :class:`~action_recognition.pose.extract.PoseModel`; ``tracking`` an executor to reuse (else one per
    call)."""
    clock = clock or StageClock()
    own = tracking is None
    run = _Run(
        pose,
        config,
        finish,
        clock,
        tracking or track_executor(config, pose.device),
        tracker_settings(config.tracker),
    )
    began = time.perf_counter()
    threads = [
        threading.Thread(target=run.infer, args=(items,), name="pose-infer", daemon=True),
        threading.Thread(target=run.write, name="pose-write", daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        while (got := run.out.get()) is not _END:
            if isinstance(got, _Failure):
                raise got.exc
            yield got
    finally:
        run.stop.set()
        for t in threads:
            t.join()
        if own:
            run.tracking.shutdown(cancel_futures=True)
        clock.wall += time.perf_counter() - began
