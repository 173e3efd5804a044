"""The pose step as it was before the pipeline, as a reference: Ultralytics' own ``model.track`` batch after
batch over a clip's frames (one fresh tracker kept across the batches), then the same main-person choice. The
pipeline test compares against it and ``bench_pose`` times it as the baseline."""

from __future__ import annotations

from typing import Any

import numpy as np

from action_recognition.config import PoseConfig
from action_recognition.pose.extract import PoseModel
from action_recognition.pose.pipeline import to_detections
from action_recognition.pose.tracking import Weights, select_people


def model_track_people(pose: PoseModel, config: PoseConfig, frames: list[Any]) -> np.ndarray:
    """The main people (M, T, 17, 3) that ``model.track`` finds in ``frames`` (BGR arrays of one clip)."""
    h, w = frames[0].shape[:2]
    pose.model.predictor = None  # a fresh predictor, so a fresh tracker
    per_frame = []
    for start in range(0, len(frames), config.batch):
        for r in pose.model.track(
            frames[start : start + config.batch],
            persist=True,
            tracker=config.tracker,
            imgsz=config.imgsz,
            conf=config.conf,
            device=pose.device,
            half=pose.half,
            verbose=False,
        ):
            b = r.boxes
            ids = None if b is None or b.id is None else b.id.int().cpu().numpy()
            per_frame.append(
                []
                if b is None or len(b) == 0
                else to_detections(
                    b.xyxy.float().cpu().numpy(),
                    b.conf.float().cpu().numpy(),
                    ids,
                    r.keypoints.data.float().cpu().numpy(),
                    w,
                    h,
                )
            )
    people, _ = select_people(per_frame, 17, Weights(), config.top_m)
    return people
