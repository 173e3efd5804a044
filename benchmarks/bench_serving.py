"""What a consumer of ``<dataset>-video`` waits for: CPU latency per 10 s clip, in-process and over HTTP.

A 10 s video (the bundled ``demo.mp4`` looped, its own size) is classified by two video models logged the way
registration logs them: keypoint (``ddnet``; normalise the clip, YOLO pose at 320, the main person, the
network) and RGB (``tsn-resnet18``; normalise, sample 8 frames, the network). The networks train one epoch on
generated data and the pose weights are untrained: latency only, the answers mean nothing. Each is timed
in-process (``mlflow.pyfunc.load_model(...).predict``) and through ``mlflow models serve`` (bytes posted,
base64), the median of ``--repeats``, with the clip normalisation alone as the baseline the model adds to.

Run: ``python -m benchmarks.bench_serving [--repeats 3] [--json]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

VIDEO = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "videos" / "demo.mp4"


def _ten_seconds(out: Path) -> Path:
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-stream_loop",
            "-1",
            "-i",
            str(VIDEO),
            "-t",
            "10",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-an",
            str(out),
        ],
        check=True,
        timeout=300,
    )
    return out


def _video_model(work: Path, family: str, tracking: str) -> str:
    """Train one epoch on generated data, log it as registration does; the video model's URI."""
    from action_recognition.config import ClipConfig, PoseConfig, RegistryConfig, TrainConfig
    from action_recognition.datasets import save_dataset, synthetic_skeletons
    from action_recognition.pose.extract import load_pose_model
    from action_recognition.storage import LocalStorage
    from action_recognition.train import train_model
    from action_recognition.video_model import log_video_model

    rng = np.random.default_rng(0)
    if family == "keypoint":
        data = save_dataset(
            work / "k.npz", **synthetic_skeletons(num_classes=5, per_class=12, frames=40, seed=0)
        )
        arch = "ddnet"
    else:
        n = 40
        data = save_dataset(
            work / "f.npz",
            labels=np.arange(n) % 5,
            split=np.array(["train", "val", "test", "train"] * (n // 4)),
            classes=[f"class {i}" for i in range(5)],
            frames=rng.integers(0, 255, (n, 8, 128, 128, 3), dtype=np.uint8),
        )
        arch = "tsn-resnet18"
    cfg = TrainConfig.model_validate(
        {
            "arch": arch,
            "epochs": 1,
            "recipe": "early_stop",
            "system_metrics": False,
            "allow_untrained": True,
            "batch_size": 8,
        }
    )
    trained = train_model(
        cfg,
        str(data),
        storage=LocalStorage(work / "s"),
        tracking_uri=tracking,
        dataset_name=f"bench-{family}",
    )
    pose_pt = work / "yolo11n-pose.pt"
    if not pose_pt.exists():
        load_pose_model(PoseConfig(untrained=True)).model.save(pose_pt)
    pose = PoseConfig(weights=str(pose_pt), conf=0.25)
    return log_video_model(
        trained.run_id,
        trained.model_uri,
        pose=pose,
        clip=ClipConfig(),
        config=RegistryConfig(),
        tracking_uri=tracking,
    )


def _median_s(call: Any, repeats: int) -> float:
    call()  # warm-up: first-call costs (imports, allocator) are not a clip's latency
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _served(uri: str, clip: Path, repeats: int, env: dict[str, str]) -> float:
    import requests

    from tests.support.serving import served_model

    body = {
        "dataframe_split": {
            "columns": ["video_bytes"],
            "data": [[base64.b64encode(clip.read_bytes()).decode()]],
        }
    }
    with served_model(uri, env, clip.parent / "serve.log") as url:

        def post() -> None:
            answer = requests.post(f"{url}/invocations", json=body, timeout=600)
            answer.raise_for_status()

        return _median_s(post, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import mlflow
    import pandas as pd
    import torch

    from action_recognition.clip import make_clip
    from action_recognition.config import ClipConfig
    from action_recognition.media import probe

    torch.set_num_threads(os.cpu_count() or 1)
    results: dict[str, Any] = {"threads": torch.get_num_threads(), "clip_s": 10}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        work = Path(tmp)
        clip = _ten_seconds(work / "ten-seconds.mp4")
        info = probe(clip)
        results["video"] = f"{info.width}x{info.height} {info.fps:g} fps {info.duration_s:.1f} s"
        tracking = f"sqlite:///{work}/mlflow.db"
        os.environ["MLFLOW_TRACKING_URI"] = tracking
        os.chdir(work)  # MLflow's local artifacts
        results["normalise_s"] = _median_s(
            lambda: make_clip(clip, work / "norm.mp4", offset_s=0, window_s=10.0, config=ClipConfig()),
            args.repeats,
        )
        for family in ("keypoint", "rgb"):
            uri = _video_model(work, family, tracking)
            model = mlflow.pyfunc.load_model(uri)
            frame = pd.DataFrame({"video": [str(clip)]})
            results[f"{family}_in_process_s"] = _median_s(lambda m=model, f=frame: m.predict(f), args.repeats)
            results[f"{family}_served_s"] = _served(uri, clip, args.repeats, dict(os.environ))
    print(
        f"CPU latency per 10 s clip ({results['video']}, {results['threads']} threads; untrained weights: "
        "latency "
        "only), median of",
        args.repeats,
    )
    print(f"  clip normalisation alone (the baseline)      {results['normalise_s']:6.2f} s")
    for family in ("keypoint", "rgb"):
        base = results["normalise_s"]
        for how in ("in_process", "served"):
            value = results[f"{family}_{how}_s"]
            print(
                f"  {family:8s} video model, {how.replace('_', '-'):10s}       {value:6.2f} s  "
                f"({value / base:4.1f}x the normalisation)"
            )
    if args.json:
        print(json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    main()
