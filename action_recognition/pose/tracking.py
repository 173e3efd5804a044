"""Choosing the main person of a clip from tracked detections (pure functions, no model).

A clip's detections are a list per frame of :class:`Detection`. With track ids, each track is scored by how
long it lasts, how big it is, how near the frame centre it stays and how confident its keypoints are; the best
track is the main person. Without ids (the tracker found nothing), each frame's best detection by the same
criteria is taken.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detection:
    """One person in one frame. ``box`` is (x1, y1, x2, y2) and ``keypoints`` (J, 3) x, y, score, all
    normalised to [0, 1] of the frame; ``track_id`` is None when the tracker did not assign one."""

    box: tuple[float, float, float, float]
    keypoints: np.ndarray
    conf: float
    track_id: int | None = None

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    @property
    def centre_distance(self) -> float:
        """Distance of the box centre to the frame centre, 0 (centre) .. 1 (corner)."""
        x1, y1, x2, y2 = self.box
        return float(np.hypot((x1 + x2) / 2 - 0.5, (y1 + y2) / 2 - 0.5) / np.hypot(0.5, 0.5))

    @property
    def keypoint_conf(self) -> float:
        return float(self.keypoints[:, 2].mean()) if len(self.keypoints) else 0.0


@dataclass(frozen=True)
class Weights:
    """How much each criterion counts."""

    length: float = 1.0
    area: float = 1.0
    centre: float = 0.5
    conf: float = 0.5


def _detection_score(det: Detection, w: Weights) -> float:
    return (
        w.area * float(np.sqrt(det.area)) + w.centre * (1 - det.centre_distance) + w.conf * det.keypoint_conf
    )


def rank_tracks(frames: list[list[Detection]], weights: Weights) -> list[tuple[int, float]]:
    """Track ids with their scores, best first. Length counts as the fraction of frames a track is in."""
    by_track: dict[int, list[Detection]] = defaultdict(list)
    for dets in frames:
        for det in dets:
            if det.track_id is not None:
                by_track[det.track_id].append(det)
    total = max(1, len(frames))
    scored = []
    for tid, dets in by_track.items():
        mean = float(np.mean([_detection_score(d, weights) for d in dets]))
        scored.append((tid, weights.length * len(dets) / total + mean))
    return sorted(scored, key=lambda item: (-item[1], item[0]))


def select_people(
    frames: list[list[Detection]], joints: int, weights: Weights, top_m: int = 1
) -> tuple[np.ndarray, dict[str, float]]:
    """Keypoints of the ``top_m`` main people, (M, T, J, 3), zeros where a person is absent, and statistics.

    Statistics: ``persons_seen`` (tracks, or the most people in a frame without tracks), ``main_fraction``
    (frames with the main person), ``mean_conf`` (mean keypoint score of the main person where present),
    ``tracked`` (1 when track ids were used).
    """
    t = len(frames)
    out = np.zeros((top_m, t, joints, 3), dtype=np.float32)
    ranked = rank_tracks(frames, weights)
    if ranked:
        chosen = [tid for tid, _ in ranked[:top_m]]
        for fi, dets in enumerate(frames):
            for det in dets:
                if det.track_id in chosen:
                    out[chosen.index(det.track_id), fi] = det.keypoints
        persons = len(ranked)
    else:  # no track ids: per frame, the best detections by the same criteria
        for fi, dets in enumerate(frames):
            best = sorted(dets, key=lambda d: -_detection_score(d, weights))[:top_m]
            for m, det in enumerate(best):
                out[m, fi] = det.keypoints
        persons = max((len(d) for d in frames), default=0)
    present = out[0, :, :, 2].max(axis=1) > 0 if t else np.zeros(0, dtype=bool)
    stats = {
        "persons_seen": float(persons),
        "main_fraction": float(present.mean()) if t else 0.0,
        "mean_conf": float(out[0, present, :, 2].mean()) if present.any() else 0.0,
        "tracked": float(bool(ranked)),
    }
    return np.clip(out, 0.0, 1.0), stats
