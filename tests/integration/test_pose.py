"""Pose extraction on the real videos (untrained YOLO weights: shapes, ranges, metadata and plumbing only),
the keypoint dataset built from it, the MMAction2 export, and the overlay."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from action_recognition.build import build_frames_dataset, build_keypoint_dataset
from action_recognition.clip import clip_shard
from action_recognition.config import BuildConfig, ClipConfig, DownloadConfig, PlanConfig, PoseConfig
from action_recognition.datasets import load_dataset
from action_recognition.download import download_shard
from action_recognition.kinetics import plan_dataset
from action_recognition.layout import clip_key, keypoints_key, pose_stage
from action_recognition.ledger import read_stage
from action_recognition.media import probe
from action_recognition.pose.extract import PoseError, load_keypoints, load_pose_model, pose_shard
from action_recognition.pose.render import render_overlay
from action_recognition.storage import LocalStorage
from action_recognition.weights import WeightsMismatch
from devtools.localserve import VideoServer
from tests.support.media import make_video
from tests.support.paths import VIDEOS
from tests.support.reliability import Reliability

pytestmark = pytest.mark.integration

CLIPS = {  # id: (file, start, end)
    "ntuOnePers1": ("S001C001P001R001A001_rgb.avi", 0, 3),  # one person, 1920x1080
    "demoTwoPpl1": ("demo.mp4", 0, 4),  # two people, 340x256
    "hugSkeleton": ("demo_skeleton.mp4", 0, 2),  # several people, 1920x1080
    "poolCleaner": ("test.mp4", 3, 6),  # 340x256
    "blackVideo1": ("black", 0, 3),
}


@pytest.fixture(scope="module")
def pose_store(tmp_path_factory: pytest.TempPathFactory) -> LocalStorage:
    root = tmp_path_factory.mktemp("pose")
    black = make_video(root / "black.mp4", seconds=4, source="color", audio=False)
    routes = {vid: (black if f == "black" else VIDEOS / f) for vid, (f, _, _) in CLIPS.items()}
    csv_path = root / "kinetics-400_pose.csv"
    csv_path.write_text(
        "label,youtube_id,time_start,time_end,split\n"
        + "".join(f"salsa dancing,{v},{s},{e},train\n" for v, (_, s, e) in CLIPS.items())
    )
    store = LocalStorage(root / "store")
    plan_dataset(
        PlanConfig(
            annotations=[str(csv_path)],
            class_contains="salsa",
            dataset="posetest",
            carve_missing_splits=False,
        ),
        store,
    )
    with VideoServer(routes) as srv:  # type: ignore[arg-type]
        download_shard("posetest", store, DownloadConfig(url_template=srv.url_template, margin_s=0))
    clip_shard("posetest", store, ClipConfig())
    return store


def _loose_tracker(tmp: Path) -> str:
    """ByteTrack with thresholds low enough that untrained detections get track ids."""
    path = tmp / "bytetrack-loose.yaml"
    path.write_text(
        "tracker_type: bytetrack\ntrack_high_thresh: 0.0001\ntrack_low_thresh: 0.00001\n"
        "new_track_thresh: 0.0001\ntrack_buffer: 30\nmatch_thresh: 0.8\nfuse_score: True\n"
    )
    return str(path)


def test_pose_on_real_videos(pose_store: LocalStorage, tmp_path: Path) -> None:
    cfg = PoseConfig(untrained=True, conf=1e-4, tracker=_loose_tracker(tmp_path), batch=8, top_m=2)
    result = pose_shard("posetest", pose_store, cfg, ClipConfig())
    assert result.untrained and result.pose_tag.endswith("-untrained")
    assert result.counts.get("ok", 0) + result.counts.get("no_person", 0) == len(CLIPS)
    summary = result.summary()  # the pipelined step says where its time went
    assert set(summary["stages_ms_per_frame"]) == {"decode", "infer", "track", "write"}  # type: ignore[arg-type]
    assert summary["wall_ms_per_frame"] > summary["stages_ms_per_frame"]["infer"] > 0  # type: ignore[index,operator]
    for vid, (_, start, end) in CLIPS.items():
        cid = f"{vid}_{start:06d}_{end:06d}"
        kp, meta = load_keypoints(pose_store.get_bytes(keypoints_key(result.pose_tag, cid)))
        frames = round((end - start) * 25)
        assert kp.shape == (frames, 17, 3) and kp.dtype == np.float32, (vid, kp.shape)
        assert np.isfinite(kp).all() and kp.min() >= 0 and kp.max() <= 1
        assert meta["untrained"] is True and meta["schema_version"] == 1 and meta["layout"] == "coco17"
        assert meta["frames"] == frames and meta["fps"] == 25
        h, w = meta["frame_size"]
        assert min(h, w) == 256
        assert {"persons_seen", "main_fraction", "mean_conf", "weights_sha256", "model"} <= set(meta)
    # Re-running skips every clip.
    again = pose_shard("posetest", pose_store, cfg, ClipConfig())
    assert again.extracted == 0 and again.skipped == len(CLIPS)

    # The keypoint dataset and its MMAction2 export.
    built = build_keypoint_dataset(
        "posetest", pose_store, BuildConfig(frames=32, min_main_fraction=0.0), result.pose_tag
    )
    data = load_dataset(pose_store.path(built.dataset_uri.split(str(pose_store.root) + "/", 1)[1]))
    assert data.data.shape[1:] == (32, 17, 3) and data.layout == "coco17"
    assert built.untrained_pose
    with open(pose_store.root / built.mmaction_uri.split(str(pose_store.root) + "/", 1)[1], "rb") as fh:
        mm = pickle.load(fh)
    ann = mm["annotations"][0]
    assert ann["keypoint"].shape == (1, 32, 17, 2) and ann["keypoint_score"].shape == (1, 32, 17)
    assert set(mm["split"]) == {"train", "val", "test"}
    rebuilt = build_keypoint_dataset(
        "posetest", pose_store, BuildConfig(frames=32, min_main_fraction=0.0), result.pose_tag
    )
    assert not rebuilt.built and rebuilt.dataset_uri == built.dataset_uri

    # The overlay: an H.264 mp4 with every frame.
    cid = "demoTwoPpl1_000000_000004"
    with np.load(pose_store.path(keypoints_key(result.pose_tag, cid))) as npz:
        people = npz["people"]
    assert people.shape[0] == 2
    out = render_overlay(
        pose_store.path(clip_key(ClipConfig().profile, cid)), people, tmp_path / "o.mp4", label="x"
    )
    info = probe(out)
    assert info.video_codec == "h264" and info.frames == 100


def test_black_video_has_no_person(pose_store: LocalStorage, reliability: Reliability) -> None:
    # The default threshold, given explicitly (untrained alone lowers it): random weights find nobody in black
    # frames.
    cfg = PoseConfig(untrained=True, conf=PoseConfig.model_fields["conf"].default)
    result = pose_shard("posetest", pose_store, cfg, ClipConfig())
    black = read_stage(pose_store, "posetest", pose_stage(result.pose_tag))["blackVideo1_000000_000003"]
    reliability.rejected("media: black video (pose)", black.reason if black.state == "no_person" else None)
    kp, meta = load_keypoints(
        pose_store.get_bytes(keypoints_key(result.pose_tag, "blackVideo1_000000_000003"))
    )
    assert not kp.any() and meta["main_fraction"] == 0.0 and meta["persons_seen"] == 0


def test_frames_dataset(pose_store: LocalStorage) -> None:
    built = build_frames_dataset("posetest", pose_store, BuildConfig(rgb_frames=4, rgb_size=96), ClipConfig())
    data = load_dataset(pose_store.root / built.dataset_uri.split(str(pose_store.root) + "/", 1)[1])
    assert data.kind == "frames" and data.data.shape[1:] == (4, 96, 96, 3)
    assert data.data[data.clip_ids.tolist().index("blackVideo1_000000_000003")].max() < 30


def test_weights_are_required(tmp_path: Path) -> None:
    with pytest.raises(PoseError, match="--untrained"):
        load_pose_model(PoseConfig(weights=str(tmp_path / "yolo11n-pose.pt")))
    fake = tmp_path / "fake-pose.pt"
    fake.write_bytes(b"not weights")
    with pytest.raises(WeightsMismatch, match="sha256"):  # not retryable: the same file fails the same way
        load_pose_model(PoseConfig(weights=str(fake), weights_sha256="0" * 64))
