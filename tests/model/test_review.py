"""The review step on a generated dataset with planted label flips and one ruined pose: out-of-sample
probabilities (k-fold), cleanlab's confident learning, the pose figures; what it lists and why, stored
content-keyed (a second review of the same file trains nothing), and the CLI twin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from action_recognition.cli import app
from action_recognition.config import ReviewConfig, TrainConfig
from action_recognition.datasets import load_dataset, save_dataset, synthetic_skeletons
from action_recognition.review import review_dataset
from tests.support.mlflow import sqlite_store


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    arrays = synthetic_skeletons(num_classes=4, per_class=30, frames=24, seed=1)
    labels = arrays["labels"].copy()
    train = np.flatnonzero(arrays["split"] == "train")
    flipped = train[::9][:6]
    labels[flipped] = (labels[flipped] + 1) % 4
    keypoints = arrays["keypoints"].copy()
    ruined = int(np.setdiff1d(train, flipped)[0])
    keypoints[ruined, :, 3:, :] = 0  # all but three joints lost
    keypoints[ruined, :, :3, 2] = 0.05
    folder = tmp_path_factory.mktemp("review")
    path = save_dataset(
        folder / "planted-keypoints.npz", **{**arrays, "labels": labels, "keypoints": keypoints}
    )
    ids = arrays["clip_ids"]
    return {"path": path, "flipped": set(ids[flipped]), "ruined": str(ids[ruined]), "folder": folder}


def _cfg() -> TrainConfig:
    """The folds' training settings (a review trains in memory: no MLflow run)."""
    return TrainConfig(threads=1, system_metrics=False, batch_size=16)


def test_the_review_lists_planted_flips_and_the_ruined_pose_with_why(planted: dict[str, Any]) -> None:
    data = load_dataset(planted["path"])
    result = review_dataset(
        data,
        _cfg(),
        # 30-epoch folds (the product's are 80) are less sure: the suggested label 3x the given one's, not 10x
        ReviewConfig(folds=3, epochs=30, min_odds=3),
        dataset="planted",
        dataset_uri=str(planted["path"]),
    )
    items = {i["clip_id"]: i for per in result.per_class.values() for i in per}
    labelled = {cid for cid, i in items.items() if i["label_issue"]}
    assert len(labelled & planted["flipped"]) >= 4, (labelled, planted["flipped"])
    assert len(labelled - planted["flipped"]) <= 3, "few clean clips accused"
    ruined = items[planted["ruined"]]
    assert any(w.startswith("pose: ") for w in ruined["why"]) and ruined["joints_seen"] < 0.5, ruined
    flip = items[next(iter(labelled & planted["flipped"]))]
    assert flip["suggested"] != flip["label"] and flip["why"][0].startswith("label: "), flip
    for label, per in result.per_class.items():  # per class, worst label quality first
        assert all(i["label"] == label for i in per)
        assert [i["label_quality"] for i in per] == sorted(i["label_quality"] for i in per)
    assert (result.folds, result.epochs, result.clips) == (3, 30, 120)


def test_a_class_too_small_to_fold_is_said_not_reviewed(tmp_path: Path) -> None:
    arrays = synthetic_skeletons(num_classes=3, per_class=1, frames=16)
    path = save_dataset(tmp_path / "tiny-keypoints.npz", **arrays)
    result = review_dataset(load_dataset(path), _cfg(), ReviewConfig(), dataset="tiny", dataset_uri=str(path))
    assert result.listed == 0 and result.note.startswith("not reviewed: a class has 1 clip")


def test_the_cli_stores_the_review_once(planted: dict[str, Any], tmp_path: Path) -> None:
    store = tmp_path / "store"
    argv = [
        "review",
        "--dataset",
        str(planted["path"]),
        "--folds",
        "2",
        "--epochs",
        "2",
        "--storage",
        str(store),
        "--set",
        f"tracking.uri={sqlite_store(tmp_path / 'm.db')}",
        "--set",
        "train.threads=1",
        "--json",
    ]
    first = CliRunner().invoke(app, argv)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.output.strip().splitlines()[-1])
    assert summary["review_uri"].startswith(str(store / "reviews/planted/")) and not summary["reused"]
    again = json.loads(CliRunner().invoke(app, argv).output.strip().splitlines()[-1])
    assert again["reused"] and again["per_class"] == summary["per_class"]
    frames = CliRunner().invoke(app, [*argv[:2], str(tmp_path / "missing.npz"), *argv[3:]])
    assert frames.exit_code == 2, frames.output


def test_listed_clips_get_a_skeleton_thumbnail_once(tmp_path: Path) -> None:
    """The evidence for the health page: a strip of frames of the published clip with the main person's
    skeleton drawn, stored once per clip and pose tag; a clip with no keypoints in storage gets none."""
    import cv2

    from action_recognition.layout import clip_key, keypoints_key, thumbnail_key
    from action_recognition.pose.extract import save_keypoints
    from action_recognition.review import ReviewResult, attach_thumbnails
    from action_recognition.storage import open_storage
    from tests.support.media import make_video

    storage = open_storage(str(tmp_path / "store"))
    tag, profile = "yolo11n-pose-abcd1234-i320-f8-m2", "p1"
    t = np.linspace(0, 1, 80, dtype=np.float32)
    person = np.zeros((80, 17, 3), np.float32)  # a skeleton walking left to right, every joint seen
    person[..., 0] = 0.2 + 0.6 * t[:, None] + np.linspace(-0.05, 0.05, 17)[None]
    person[..., 1] = np.linspace(0.2, 0.8, 17)[None]
    person[..., 2] = 0.9
    for cid in ("shown_000000_000010", "nopose_000000_000010"):
        video = make_video(tmp_path / f"{cid}.mp4", seconds=10, size="320x180", fps=8, audio=False)
        storage.put_file(clip_key(profile, cid), video)
    npz = save_keypoints(tmp_path / "k.npz", {"keypoints": person, "people": person[None]}, {"fps": 8.0})
    storage.put_file(keypoints_key(tag, "shown_000000_000010"), npz)
    items = [
        {"clip_id": cid, "label": "tap"} for cid in ("shown_000000_000010", "nopose_000000_000010", "third")
    ]
    result = ReviewResult("d", "/d.npz", "0" * 64, "ddnet", 2, 2, 3, 3, 0, {"tap": items})

    assert attach_thumbnails(storage, result, profile, per_class=2, work=tmp_path, pose_tag=tag) == 1
    key = thumbnail_key(tag, "shown_000000_000010")
    assert items[0]["thumbnail"] == key and "thumbnail" not in items[1] and "thumbnail" not in items[2]
    strip = cv2.imdecode(np.frombuffer(storage.get_bytes(key), np.uint8), cv2.IMREAD_COLOR)
    assert strip.shape == (120, 4 * 213, 3), "four frames, 120 px high, the clip's aspect kept"
    plain = make_video(tmp_path / "plain.mp4", seconds=10, size="320x180", fps=8, audio=False)
    from action_recognition.pose.render import thumbnail_strip

    bare = cv2.imdecode(np.frombuffer(thumbnail_strip(plain, person[:0], 8.0), np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(strip.astype(int) - bare.astype(int)).max() > 100, "the skeleton is drawn"

    before = storage.get_bytes(key)
    storage.put_bytes(key, b"kept")  # made once: an existing thumbnail is not rendered again
    assert attach_thumbnails(storage, result, profile, per_class=2, work=tmp_path, pose_tag=tag) == 1
    assert storage.get_bytes(key) == b"kept" and before[:2] == b"\xff\xd8"


def test_a_frames_dataset_is_reviewed_too_and_untrained_weights_are_named(tmp_path: Path) -> None:
    """The RGB family's review: the same k-fold and cleanlab on a frames dataset with the RGB arch; no pose
    figures (nothing listed as a poor pose), and fold models from random backbone weights are said so."""
    rng = np.random.default_rng(0)
    classes, per_class = 3, 6
    labels = np.repeat(np.arange(classes), per_class)
    frames = rng.integers(0, 40, size=(len(labels), 2, 40, 40, 3), dtype=np.uint8)
    for i, label in enumerate(labels):  # each class its own colour: learnable from random weights
        frames[i, ..., label] += 180
    flipped = 4
    given = labels.copy()
    given[flipped] = 2
    path = save_dataset(
        tmp_path / "tiny-frames.npz",
        frames=frames,
        labels=given,
        split=np.tile(np.array(["train"] * 4 + ["test"] * 2), classes),
        classes=["red", "green", "blue"],
        clip_ids=np.array([f"c{i:02d}" for i in range(len(labels))]),
    )
    config = TrainConfig(
        threads=1,
        system_metrics=False,
        batch_size=8,
        pretrained=False,
        allow_untrained=True,
        lr=3e-3,
    )
    result = review_dataset(
        load_dataset(path),
        config,
        ReviewConfig(folds=2, epochs=6),
        dataset="tiny",
        dataset_uri=str(path),
    )
    assert (result.family, result.arch, result.untrained, result.poor_poses) == (
        "rgb",
        config.arch_for("frames"),
        True,
        0,
    )
    assert result.note.startswith("untrained:"), result.note
    items = [i for per in result.per_class.values() for i in per]
    assert all(i["joints_seen"] is None and not any(w.startswith("pose") for w in i["why"]) for i in items)
    assert "c04" in result.listed_ids(), result.per_class
