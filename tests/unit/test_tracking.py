"""Main-person choice on synthetic detections where the right answer is known."""

from __future__ import annotations

import numpy as np

from action_recognition.pose.tracking import Detection, Weights, rank_tracks, select_people
from tests.support.reliability import Reliability


def _det(cx: float, cy: float, size: float, score: float, tid: int | None) -> Detection:
    kp = np.zeros((17, 3), np.float32)
    kp[:, 0], kp[:, 1], kp[:, 2] = cx, cy, score
    half = size / 2
    return Detection((cx - half, cy - half, cx + half, cy + half), kp, 0.9, tid)


def test_the_big_central_long_track_wins() -> None:
    frames = []
    for t in range(20):
        dets = [_det(0.5, 0.5, 0.5, 0.8, 1)]  # the dancer: centre, big, whole clip
        if t < 5:
            dets.append(_det(0.1, 0.1, 0.6, 0.9, 2))  # a big passer-by at the edge, 5 frames
        dets.append(_det(0.9, 0.8, 0.1, 0.9, 3))  # a small spectator, whole clip
        frames.append(dets)
    assert rank_tracks(frames, Weights())[0][0] == 1
    people, stats = select_people(frames, 17, Weights(), top_m=2)
    assert people.shape == (2, 20, 17, 3)
    assert np.allclose(people[0, :, 0, 0], 0.5)
    assert stats["persons_seen"] == 3.0 and stats["main_fraction"] == 1.0 and stats["tracked"] == 1.0
    assert abs(stats["mean_conf"] - 0.8) < 1e-5


def test_weights_change_the_choice() -> None:
    frames = [[_det(0.5, 0.5, 0.1, 0.5, 1), _det(0.2, 0.2, 0.6, 0.5, 2)] for _ in range(10)]
    assert rank_tracks(frames, Weights(area=0.0, centre=1.0))[0][0] == 1
    assert rank_tracks(frames, Weights(area=3.0, centre=0.1))[0][0] == 2


def test_without_track_ids_each_frame_takes_its_best() -> None:
    frames = [[_det(0.5, 0.5, 0.4, 0.7, None), _det(0.05, 0.9, 0.05, 0.9, None)] for _ in range(6)] + [[]]
    people, stats = select_people(frames, 17, Weights())
    assert np.allclose(people[0, :6, 0, 0], 0.5)
    assert (people[0, 6] == 0).all()
    assert stats["tracked"] == 0.0 and stats["main_fraction"] == 6 / 7 and stats["persons_seen"] == 2.0


def test_nobody() -> None:
    people, stats = select_people([[] for _ in range(8)], 17, Weights())
    assert people.shape == (1, 8, 17, 3) and not people.any()
    assert stats["main_fraction"] == 0.0 and stats["persons_seen"] == 0.0


def test_a_crowd_keeps_the_dancer_and_at_most_top_m(reliability: Reliability) -> None:
    """Many people (a stage with an audience): the main person is still the dancer; the output stays top-M."""
    rng = np.random.default_rng(0)
    frames = []
    for t in range(30):
        dets = [_det(0.5 + 0.01 * np.sin(t), 0.5, 0.45, 0.7, 1)]  # the dancer
        for tid in range(2, 60):  # 58 spectators: small, scattered, some only for a few frames
            if rng.random() < 0.7:
                dets.append(_det(rng.uniform(0, 1), rng.uniform(0.75, 1), rng.uniform(0.03, 0.12), 0.95, tid))
        rng.shuffle(dets)  # type: ignore[arg-type]
        frames.append(dets)
    with reliability.handled("media: a crowd of 59 people", "the main person is the dancer; 3 people kept"):
        people, stats = select_people(frames, 17, Weights(), top_m=3)
        assert people.shape == (3, 30, 17, 3)
        assert np.allclose(people[0, :, 0, 1], 0.5) and stats["main_fraction"] == 1.0
        assert stats["persons_seen"] == 59.0
