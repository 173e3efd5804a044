"""The pipelined pose step (decode, infer, track, write overlapping) against what it replaces, on real clips
with untrained YOLO weights: the same keypoints as ``model.track``, batches full across clips, the inference
size decoded by ffmpeg, a bad clip recorded while the others go on, and a failure that stops the step without
a hang."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from action_recognition.config import PoseConfig
from action_recognition.errors import ConfigError
from action_recognition.media import encode_clip
from action_recognition.pose.extract import PoseModel, extract_clip, load_pose_model
from action_recognition.pose.pipeline import (
    ClipPose,
    PoseItem,
    StageClock,
    decode_clip,
    extract_stream,
    tracker_settings,
)
from tests.support.paths import VIDEOS
from tests.support.pose import model_track_people

pytestmark = pytest.mark.integration

LOOSE = (
    "tracker_type: bytetrack\ntrack_high_thresh: 0.0001\ntrack_low_thresh: 0.00001\nnew_track_thresh: "
    "0.0001\n"
    "track_buffer: 30\nmatch_thresh: 0.8\nfuse_score: True\n"
)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Normalised clips of different lengths and sizes (as the clip step writes them)."""
    root = tmp_path_factory.mktemp("pipeline")
    out = {}
    for name, src, start, seconds in (
        ("demo", "demo.mp4", 0, 2.0),
        ("pool", "test.mp4", 3, 1.4),
        ("wide", "demo_skeleton.mp4", 0, 1.0),
    ):
        out[name] = root / f"{name}.mp4"
        encode_clip(
            VIDEOS / src,
            out[name],
            start_s=start,
            duration_s=seconds,
            short_side=256,
            fps=25,
            crf=23,
            preset="veryfast",
            threads=2,
            timeout_s=120,
        )
    (root / "bad.mp4").write_bytes(b"<html>not a video</html>")
    out["bad"] = root / "bad.mp4"
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[PoseModel, PoseConfig]:
    tracker = tmp_path_factory.mktemp("tracker") / "loose.yaml"
    tracker.write_text(LOOSE)
    config = PoseConfig(untrained=True, conf=1e-4, tracker=str(tracker), batch=8, top_m=2, track_in="thread")
    return load_pose_model(config), config


def _reference(pose: PoseModel, config: PoseConfig, path: Path) -> np.ndarray:
    """What ``model.track`` makes of the same decoded frames."""
    return model_track_people(pose, config, list(decode_clip(path, None, config.imgsz).frames))


def test_same_keypoints_as_model_track(setup: tuple[PoseModel, PoseConfig], clips: dict[str, Path]) -> None:
    pose, config = setup
    arrays, meta = extract_clip(pose, clips["demo"], config)
    reference = _reference(pose, config, clips["demo"])
    assert meta["tracked"] == 1.0 and meta["frames"] == 50 and meta["frame_size"] == [256, 340]
    np.testing.assert_array_equal(arrays["people"], reference)


def test_decoded_at_the_inference_size(clips: dict[str, Path]) -> None:
    demo = decode_clip(clips["demo"], None, 320)
    assert demo.frames.shape == (50, 241, 320, 3) and demo.frame_size == (256, 340) and demo.fps == 25
    wide = decode_clip(clips["wide"], None, 320)  # 1920x1080 -> 455x256 by the clip step
    assert wide.frames.shape[1:3] == (180, 320)
    small = decode_clip(clips["demo"], None, 640)  # never upscaled
    assert small.frames.shape[1:3] == (256, 340)
    sampled = decode_clip(clips["demo"], 10.0, 320)  # every 2.5th frame: the rule the step always used
    assert len(sampled.frames) == 20 and sampled.fps == 10.0


def test_batches_fill_across_clips(setup: tuple[PoseModel, PoseConfig], clips: dict[str, Path]) -> None:
    pose, config = setup
    sizes: list[int] = []
    predict = pose.model.predict

    def counting(frames: list[Any], **kw: Any) -> Any:
        sizes.append(len(frames))
        return predict(frames, **kw)

    alone = {n: extract_clip(pose, clips[n], config)[0]["people"] for n in ("demo", "pool")}
    pose.model.predict = counting  # type: ignore[method-assign]
    try:
        clock = StageClock()
        names = ["demo", "pool", "bad", "demo", "pool"]
        got = list(
            extract_stream(
                pose,
                [PoseItem(f"{i}-{n}", lambda n=n: clips[n]) for i, n in enumerate(names)],
                config,
                lambda _, c: c,
                clock=clock,
            )
        )
    finally:
        del pose.model.predict
    frames = 2 * (50 + 35)
    assert sizes == [8] * (frames // 8) + [frames % 8]  # one short batch in the whole run, not one per clip
    assert [c.key for c in got] == [f"{i}-{n}" for i, n in enumerate(names)]
    bad = got[2]
    assert bad.people is None and "bad.mp4" in (bad.error or "")
    for clip, name in zip(got, names, strict=True):
        if name != "bad":
            np.testing.assert_allclose(clip.people, alone[name], atol=1e-5)  # type: ignore[arg-type]
    assert clock.frames == frames and clock.wall > 0
    stages = clock.ms_per_frame()
    assert (
        set(stages) == {"decode", "infer", "track", "write"} and stages["infer"] > 0 and stages["decode"] > 0
    )
    assert clock.wall_ms_per_frame() >= max(stages["infer"], stages["track"]) * 0.99


def test_tracking_in_processes_gives_the_same(
    setup: tuple[PoseModel, PoseConfig], clips: dict[str, Path]
) -> None:
    pose, config = setup
    threaded = extract_clip(pose, clips["pool"], config)[0]["people"]
    processes = extract_clip(pose, clips["pool"], config.model_copy(update={"track_in": "process"}))[0][
        "people"
    ]
    np.testing.assert_array_equal(threaded, processes)


def test_a_failure_stops_the_step(setup: tuple[PoseModel, PoseConfig], clips: dict[str, Path]) -> None:
    pose, config = setup

    def lost() -> Path:
        raise ConnectionError("storage went away")

    items = [PoseItem("a", lambda: clips["demo"]), PoseItem("b", lost), PoseItem("c", lambda: clips["pool"])]
    with pytest.raises(ConnectionError, match="storage went away"):
        list(extract_stream(pose, items, config, lambda _, c: c))

    def broken_write(item: PoseItem, clip: ClipPose) -> None:
        raise OSError(f"disk full writing {item.key}")

    with pytest.raises(OSError, match="disk full writing a"):
        list(extract_stream(pose, items[:1], config, broken_write))


def test_only_trackers_that_need_no_frames() -> None:
    assert tracker_settings("bytetrack.yaml")["tracker_type"] == "bytetrack"
    with pytest.raises(ConfigError, match="use a bytetrack tracker config") as info:
        tracker_settings("botsort.yaml")  # its camera-motion compensation needs the frames
    assert not info.value.retryable
