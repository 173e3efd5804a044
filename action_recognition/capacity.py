"""What a dataset of N clips costs: download days, storage per layer, pose and training GPU-hours, Celery
workers.

Every per-clip figure comes from a measurement, named in the result's ``inputs`` with where it came from: a
dataset's ledger when one is given (bytes and seconds of its downloads, seconds of its clip encodes, frames of
its keypoints), else the defaults below, measured by this project's benchmarks (README "Figures"; the device
is named). Two figures are stated rather than measured, and say so in ``sources``: YouTube's per-IP rate limit
(not published) and the seconds a segment download takes end to end from a networked machine (none was
reachable here).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from action_recognition.config import TrainConfig
from action_recognition.names import DEFAULT_KEYPOINT_ARCH, DEFAULT_RGB_ARCH

HOURS_A_WEEK = 7 * 24


@dataclass
class CapacityInputs:
    """Per-clip costs and the deployment's shape. Defaults: measured (see ``SOURCES``)."""

    clips: int
    classes: int = 700
    frames_per_clip: float = 250.0  # 10 s at the clip step's 25 fps
    availability: float = 0.73  # the share of Kinetics clips still downloadable: the seed study's 27% lost
    download_mb_per_clip: float = 1.6  # the 10 s segment at <= 360p (bench_download: 6.5% of a 25 MB video)
    download_s_per_clip: float = 6.0  # one segment download, end to end
    clip_s_per_clip: float = 0.63  # the normalising encode of a 10 s clip, one core (bench_serving)
    clip_mb_per_clip: float = 0.36  # a normalised 10 s clip, 340x256 H.264 crf 23
    keypoints_mb_per_clip: float = 0.05  # the per-clip npz, 250 x 17 x 3 and the people
    dataset_mb_per_clip: float = (
        0.40  # the built datasets: 40 x 17 x 3 float32 keypoints + 8 x 128 x 128 x 3 frames
    )
    pose_ms_per_frame: float = 1.004  # the pipelined pose step, H100, batch 64 (bench_pose)
    train_samples_per_s: dict[str, float] = field(
        default_factory=lambda: {DEFAULT_KEYPOINT_ARCH: 3135.4, DEFAULT_RGB_ARCH: 3038.6}
    )  # the whole training loop on an H100 (bench_train)
    epochs: int = 80
    trainings_per_model: dict[str, int] = field(
        default_factory=lambda: {DEFAULT_KEYPOINT_ARCH: 3, DEFAULT_RGB_ARCH: 4}
    )  # recipe=auto on a small set: keypoints fixed (three seeds), frames refit (selection, then three seeds)
    train_share: float = 0.85  # train + val of the usable clips (test held out)
    download_slots: int = 4  # the youtube_downloads pool
    rate_per_hour_per_ip: float = (
        300.0  # stated: the downloads one egress IP gets per hour before YouTube says no
    )
    ips: int = 1
    worker_concurrency: int = 4  # Celery task slots per worker (AIRFLOW_CELERY_WORKER_CONCURRENCY)
    sources: dict[str, str] = field(default_factory=dict)


#: Where each default comes from.
SOURCES = {
    "frames_per_clip": "Kinetics clips are 10 s; the clip step keeps 25 fps",
    "availability": "the seed study: 27% of the videos were gone",
    "download_mb_per_clip": "bench_download: the 10 s segment is 6.5% of a 25 MB, 300 s video",
    "download_s_per_clip": "stated, not measured here: one segment download through yt-dlp, end to end",
    "clip_s_per_clip": "bench_serving: normalising a 10 s clip, 0.63 s on one core",
    "clip_mb_per_clip": "a normalised 10 s 340x256 clip of the bundled demo video: 0.36 MB",
    "keypoints_mb_per_clip": "the per-clip npz of a 10 s clip (250 x 17 x 3, compressed)",
    "dataset_mb_per_clip": "40 x 17 x 3 float32 keypoints (8 KB) + 8 x 128 x 128 x 3 uint8 frames (393 KB)",
    "pose_ms_per_frame": "bench_pose: the pipelined pose step on an H100, batch 64",
    "train_samples_per_s": "bench_train: the whole training loop on an H100, batch 64",
    "rate_per_hour_per_ip": "stated, not measured: YouTube publishes no limit",
}


def from_ledger(storage: Any, dataset: str, inputs: CapacityInputs) -> CapacityInputs:
    """``inputs`` with the per-clip figures a dataset's ledgers recorded (where they recorded any)."""
    from action_recognition.ledger import read_stage

    downloads = read_stage(storage, dataset, "download")
    ok = [r for r in downloads.values() if r.state == "ok"]
    found: dict[str, Any] = {}
    if downloads:
        found["availability"] = len(ok) / len(downloads)
    if ok and sum(r.bytes for r in ok):
        found["download_mb_per_clip"] = sum(r.bytes for r in ok) / len(ok) / 1e6
        found["download_s_per_clip"] = sum(r.seconds for r in ok) / len(ok)
    clips = [r for r in read_stage(storage, dataset, "clip").values() if r.state == "ok" and r.seconds]
    if clips:
        found["clip_s_per_clip"] = sum(r.seconds for r in clips) / len(clips)
    sources = dict(inputs.sources)
    sources.update({k: f"the ledger of {dataset} ({len(downloads)} downloads)" for k in found})
    return CapacityInputs(**{**asdict(inputs), **found, "sources": sources})


def capacity(inputs: CapacityInputs) -> dict[str, Any]:
    """The cost of ``inputs.clips`` clips (JSON-ready)."""
    i = inputs
    if i.clips < 1 or i.ips < 1 or i.download_slots < 1 or i.worker_concurrency < 1:
        raise ValueError("clips, ips, download_slots and worker_concurrency must be at least 1")
    usable = i.clips * i.availability
    by_slots = i.download_slots * 3600 / i.download_s_per_clip  # downloads an hour the pool allows
    by_rate = i.rate_per_hour_per_ip * i.ips
    per_hour = min(by_slots, by_rate)
    storage = {
        "raw": i.clips * i.availability * i.download_mb_per_clip / 1000,
        "clips": usable * i.clip_mb_per_clip / 1000,
        "keypoints": usable * i.keypoints_mb_per_clip / 1000,
        "datasets": usable * i.dataset_mb_per_clip / 1000,
    }
    storage["total"] = sum(storage.values())
    pose_hours = usable * i.frames_per_clip * i.pose_ms_per_frame / 3.6e6
    train = {
        arch: usable * i.train_share * i.epochs * i.trainings_per_model.get(arch, 1) / sps / 3600
        for arch, sps in i.train_samples_per_s.items()
    }
    # Slot-hours of CPU work (a download holds its slot while it runs; a clip encode holds one core).
    slot_hours = (i.clips * i.download_s_per_clip + usable * i.clip_s_per_clip) / 3600
    workers = max(1, math.ceil(slot_hours / (HOURS_A_WEEK * i.worker_concurrency)))
    return {
        "clips": i.clips,
        "classes": i.classes,
        "usable_clips": round(usable),
        "download_days": round(i.clips / per_hour / 24, 2),
        "download_bound_by": "rate limit" if by_rate < by_slots else "download pool",
        "ips_for_a_week": math.ceil(i.clips / (HOURS_A_WEEK * i.rate_per_hour_per_ip)),
        "storage_gb": {k: round(v, 1) for k, v in storage.items()},
        "pose_gpu_hours": round(pose_hours, 1),
        "train_gpu_hours": {k: round(v, 1) for k, v in train.items()},
        "celery_workers_for_a_week": workers,
        "gpus_for_a_week": math.ceil((pose_hours + sum(train.values())) / HOURS_A_WEEK),
        "inputs": {k: v for k, v in asdict(i).items() if k != "sources"},
        "sources": {**SOURCES, **i.sources},
    }


def trainings_per_model(train: TrainConfig, kind: str, labelled: int) -> int:
    """How many models one training run of ``train`` trains on a dataset of ``kind`` with ``labelled``
    train+val clips (``train.recipe``: refit trains a selection and ``seeds`` refits, fixed ``seeds``)."""
    recipe, _ = train.recipe_for(kind, labelled)
    return {"refit": 1 + train.seeds, "fixed": train.seeds}.get(recipe, 1)
