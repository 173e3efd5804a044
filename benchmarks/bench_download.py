"""Bytes and seconds of a segment download against a whole-video download, measured in the same run.

A generated 5-minute 360p video is served by the local Range-capable server; the project's ``download`` step
fetches a 10 s window the default way (segment) and the baseline way (the whole video, as the original study
did). The server counts the bytes it sends. Run: ``make bench-download`` (or ``python -m
benchmarks.bench_download``).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from action_recognition.config import DownloadConfig, PlanConfig
from action_recognition.download import download_shard
from action_recognition.kinetics import plan_dataset
from action_recognition.storage import LocalStorage
from devtools.localserve import VideoServer
from tests.support.media import make_video


def measure(method: str, video: Path, work: Path, windows: list[tuple[int, int]]) -> dict[str, float]:
    ids = [f"bench{i:06d}" for i in range(len(windows))]
    csv_path = work / f"kinetics-600_{method}.csv"
    lines = [f"tap dancing,{v},{s},{e},train\n" for v, (s, e) in zip(ids, windows, strict=True)]
    csv_path.write_text("label,youtube_id,time_start,time_end,split\n" + "".join(lines))
    store = LocalStorage(work / method)
    plan_dataset(
        PlanConfig(
            annotations=[str(csv_path)],
            classes=["tap dancing"],
            class_contains=None,
            dataset="bench",
            carve_missing_splits=False,
        ),
        store,
    )
    with VideoServer(dict.fromkeys(ids, video)) as srv:
        began = time.perf_counter()
        result = download_shard(
            "bench", store, DownloadConfig(url_template=srv.url_template, method=method, workers=1)
        )
        seconds = time.perf_counter() - began
        sent = sum(srv.bytes_sent.values())
    assert result.counts == {"ok": len(ids)}, result.counts
    size = video.stat().st_size * len(ids)
    return {"bytes": sent, "fraction_of_file": sent / size, "seconds": seconds}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        video = make_video(work / "long.mp4", seconds=300)
        video_mb = round(video.stat().st_size / 1e6, 1)
        windows = [(30, 40), (120, 130), (250, 260)]
        segment = measure("segment", video, work, windows)
        whole = measure("whole", video, work, windows)
    figures = {
        "video_mb": video_mb,
        "windows": len(windows),
        "segment_fraction_of_file": round(segment["fraction_of_file"], 4),
        "whole_fraction_of_file": round(whole["fraction_of_file"], 4),
        "bytes_ratio_whole_over_segment": round(whole["bytes"] / segment["bytes"], 1),
        "seconds_segment": round(segment["seconds"], 2),
        "seconds_whole": round(whole["seconds"], 2),
        "goal_segment_fraction_at_most": 0.10,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
