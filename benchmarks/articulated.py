"""Generated articulated skeletons shaped like a small real benchmark of 2D ground-truth joints: 15 joints in
the JHMDB order (``joints15``), 14 classes, about 31 training and 12-13 test clips a class, 40 frames, three
"splits" (three generator seeds). For benchmarks only; every figure made on it is named synthetic.

A class is a motion program over a 2D kinematic tree (torso lean, head, shoulders, elbows, hips, knees, plus a
bounce and a drift of the whole body): a rest posture and oscillators of class-specific amplitude, frequency
and phase, arms and legs in or out of phase. Classes come in confusable pairs that differ in one thing (a
faster tempo, one limb's amplitude, a posture offset), the way "walk" and "run" do. Each clip varies what a
camera and a person vary: tempo (+-25%), phase, amplitude, posture, body size (0.6-1.3) and position, the
direction faced, joint jitter, missing frames and occluded joints.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: joints15: neck, belly, face, r/l shoulder, r/l hip, r/l elbow, r/l knee, r/l wrist, r/l ankle.
DOF = (
    "torso",
    "head",
    "r_shoulder",
    "l_shoulder",
    "r_elbow",
    "l_elbow",
    "r_hip",
    "l_hip",
    "r_knee",
    "l_knee",
)
#: rest angles (radians; 0 points down, positive turns towards the person's left as seen)
REST = np.array([np.pi, 0.0, 0.25, -0.25, 0.1, -0.1, 0.05, -0.05, 0.0, 0.0])
#: bone lengths, body units (about 1 from ankle to face)
LENGTH = {
    "torso": 0.32,
    "head": 0.12,
    "shoulder": 0.1,
    "upper": 0.17,
    "fore": 0.16,
    "hip": 0.08,
    "thigh": 0.24,
}
LENGTH["shin"] = 0.24


def _pose(angles: np.ndarray, root: np.ndarray) -> np.ndarray:
    """(T, 10) angles and (T, 2) belly positions -> (T, 15, 2) joints (y grows downwards, as in an image)."""
    t = len(angles)
    out = np.zeros((t, 15, 2))

    def ray(a: np.ndarray, length: float) -> np.ndarray:
        return np.stack([np.sin(a), np.cos(a)], -1) * length

    torso = angles[:, 0]
    out[:, 1] = root
    out[:, 0] = root + ray(torso, LENGTH["torso"])
    out[:, 2] = out[:, 0] + ray(torso + angles[:, 1], LENGTH["head"])
    across = torso + np.pi / 2
    for side, (shoulder, elbow, wrist, hip, knee, ankle, sign) in enumerate(
        [(3, 7, 11, 5, 9, 13, -1.0), (4, 8, 12, 6, 10, 14, 1.0)]
    ):
        out[:, shoulder] = out[:, 0] + ray(across, sign * LENGTH["shoulder"])
        upper = torso + np.pi + angles[:, 2 + side]
        out[:, elbow] = out[:, shoulder] + ray(upper, LENGTH["upper"])
        out[:, wrist] = out[:, elbow] + ray(upper + angles[:, 4 + side], LENGTH["fore"])
        out[:, hip] = root + ray(across, sign * LENGTH["hip"])
        thigh = torso + np.pi + angles[:, 6 + side]
        out[:, knee] = out[:, hip] + ray(thigh, LENGTH["thigh"])
        out[:, ankle] = out[:, knee] + ray(thigh + angles[:, 8 + side], LENGTH["shin"])
    return out


def _programs(num_classes: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Each class's motion program; odd classes are their even neighbour with one thing changed."""
    programs = []
    for k in range(num_classes):
        if k % 2 == 1:
            p = {
                key: np.array(v, copy=True) if isinstance(v, np.ndarray) else v
                for key, v in programs[-1].items()
            }
            change = rng.integers(0, 3)
            if change == 0:
                p["freq"] = p["freq"] * 1.35
            elif change == 1:
                d = int(rng.choice(np.flatnonzero(p["amp"] > 0)))
                p["amp"][d] *= 0.45
            else:
                d = int(rng.integers(2, 10))
                p["rest"][d] += rng.choice([-0.5, 0.5])
            programs.append(p)
            continue
        active = rng.choice(np.arange(10), size=rng.integers(2, 5), replace=False)
        amp = np.zeros(10)
        amp[active] = rng.uniform(0.3, 1.0, size=len(active))
        phase = rng.uniform(0, 2 * np.pi, size=10)
        if rng.random() < 0.5:  # limbs in or out of phase, as in walking or jumping jacks
            offset = np.pi if rng.random() < 0.5 else 0.0
            for r, left in ((2, 3), (4, 5), (6, 7), (8, 9)):
                if amp[r] > 0 or amp[left] > 0:
                    amp[r] = amp[left] = max(amp[r], amp[left])
                    phase[left] = phase[r] + offset
        programs.append(
            {
                "rest": REST + rng.normal(0, 0.25, size=10) * (np.arange(10) >= 2),
                "amp": amp,
                "freq": rng.uniform(0.6, 2.5, size=10).round(1) * (amp > 0),
                "phase": phase,
                "bounce": rng.choice([0.0, rng.uniform(0.02, 0.08)]),
                "drift": rng.choice([0.0, rng.uniform(-0.3, 0.3)]),
            }
        )
    return programs


def articulated_skeletons(
    seed: int = 0,
    num_classes: int = 14,
    train_per_class: int = 31,
    test_per_class: int = 13,
    frames: int = 40,
    jitter: float = 0.012,
    missing: float = 0.08,
    occluded: float = 0.05,
) -> dict[str, Any]:
    """The arrays of a keypoint dataset (``train`` and ``test`` splits only: the CLI carves its own val)."""
    rng = np.random.default_rng(seed)
    programs = _programs(num_classes, np.random.default_rng(seed + 1000))
    per_class = train_per_class + test_per_class
    n = num_classes * per_class
    keypoints = np.zeros((n, frames, 15, 3), dtype=np.float32)
    labels = np.repeat(np.arange(num_classes), per_class)
    split = np.tile(np.array(["train"] * train_per_class + ["test"] * test_per_class), num_classes)
    t = np.linspace(0, 1, frames)[:, None]
    for i, label in enumerate(labels):
        p = programs[label]
        tempo = rng.uniform(0.8, 1.25)
        phase = p["phase"] + rng.uniform(0, 2 * np.pi)
        amp = p["amp"] * rng.uniform(0.75, 1.25, size=10)
        rest = p["rest"] + rng.normal(0, 0.08, size=10)
        angles = rest + amp * np.sin(2 * np.pi * p["freq"] * tempo * t + phase)
        root = np.zeros((frames, 2))
        root[:, 1] = -p["bounce"] * np.abs(np.sin(2 * np.pi * 1.5 * tempo * t[:, 0] + phase[0]))
        root[:, 0] = p["drift"] * (t[:, 0] - 0.5) * tempo
        body = _pose(angles, root)
        scale = rng.uniform(0.6, 1.3) * 0.45
        centre = np.array([rng.uniform(0.3, 0.7), rng.uniform(0.35, 0.6)])
        xy = (body - body.mean((0, 1))) * scale + centre
        if rng.random() < 0.5:  # facing the other way
            xy[..., 0] = 1.0 - xy[..., 0]
        xy += rng.normal(0, jitter * scale / 0.45, size=xy.shape)
        keypoints[i, :, :, :2] = np.clip(xy, 0, 1)
        keypoints[i, :, :, 2] = rng.uniform(0.6, 1.0, size=(frames, 15))
        keypoints[i, rng.random((frames, 15)) < occluded] = 0.0
        keypoints[i, rng.random(frames) < missing] = 0.0
    return {
        "keypoints": keypoints,
        "labels": labels.astype(np.int64),
        "split": split,
        "classes": [f"synthetic-articulated-{k}" for k in range(num_classes)],
        "clip_ids": np.array([f"articulated{seed}_{i:05d}" for i in range(n)]),
        "layout": "joints15",
    }
