"""Pose extraction speed on the same frames, in one run:

1. the project's ``pose`` step on a clip (decode + batched ``model.track`` + main-person choice);
2. raw batched YOLO pose inference alone on the same, already decoded frames (the floor);
3. the original study's extractor: torchvision ``keypointrcnn_resnet50_fpn`` on each frame (random weights: the
   speed is the architecture's, not the weights').

Goals: (1) at least 10x faster per frame than (3); (1) at most 1.3x the time of (2). Weights are untrained in every
case (shapes and speed only). Run: ``make bench`` or ``python -m benchmarks.bench_pose [--device cuda]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from action_recognition.config import ClipConfig, PoseConfig
from action_recognition.media import encode_clip
from action_recognition.pose.extract import decode_frames, extract_clip, load_pose_model

VIDEO = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "videos" / "demo.mp4"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=4.0, help="clip length (25 fps)")
    parser.add_argument("--rcnn-frames", type=int, default=6, help="frames timed for the Keypoint R-CNN")
    parser.add_argument("--batch", type=int, default=16, help="pose.batch: frames per inference call")
    parser.add_argument(
        "--clip", type=Path, default=None, help="an already normalised clip (no ffmpeg encode: machines without it)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = args.clip or Path(tmp) / "clip.mp4"
        if args.clip is None:
            c = ClipConfig()
            encode_clip(VIDEO, clip, start_s=0, duration_s=args.seconds, short_side=c.short_side, fps=c.fps,
                        crf=c.crf, preset=c.preset, threads=2, timeout_s=120)  # fmt: skip
        # The default threshold, as a trained model runs (untrained alone would keep every random detection).
        cfg = PoseConfig(untrained=True, conf=0.25, device=args.device, batch=args.batch)
        pose = load_pose_model(cfg)
        frames, _, (h, w) = decode_frames(clip, None)
        pose.model.predict(frames[:16], imgsz=cfg.imgsz, device=pose.device, half=pose.half, verbose=False)  # warm-up

        # Each timed twice, the second kept: the first pass pays for CUDA/cuDNN start-up and kernel selection.
        for _ in range(2):
            began = time.perf_counter()
            for start in range(0, len(frames), cfg.batch):
                pose.model.predict(frames[start : start + cfg.batch], imgsz=cfg.imgsz, conf=cfg.conf,
                                   device=pose.device, half=pose.half, verbose=False)  # fmt: skip
            raw = (time.perf_counter() - began) / len(frames)

        for _ in range(2):
            began = time.perf_counter()
            extract_clip(pose, clip, cfg)
            step = (time.perf_counter() - began) / len(frames)

        from torchvision.models.detection import keypointrcnn_resnet50_fpn

        rcnn = keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval().to(args.device)
        tensors = [torch.from_numpy(f[:, :, ::-1].copy()).permute(2, 0, 1).float().div(255) for f in frames]
        with torch.inference_mode():
            for t in tensors[:3]:
                rcnn([t.to(args.device)])  # warm-up
            began = time.perf_counter()
            for t in tensors[: args.rcnn_frames]:
                rcnn([t.to(args.device)])  # one frame at a time, as the original study did
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            original = (time.perf_counter() - began) / args.rcnn_frames
    device = (
        torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"cpu ({torch.get_num_threads()} threads)"
    )
    print(json.dumps({
        "device": device, "frames": len(frames), "frame_size": [h, w], "imgsz": cfg.imgsz, "batch": cfg.batch,
        "weights": "untrained",
        "ms_per_frame_pose_step": round(step * 1000, 2), "ms_per_frame_raw_yolo": round(raw * 1000, 2),
        "ms_per_frame_keypoint_rcnn": round(original * 1000, 1),
        "speedup_vs_original": round(original / step, 1), "overhead_vs_raw": round(step / raw, 2),
        "goals": {"speedup_vs_original_at_least": 10, "overhead_vs_raw_at_most": 1.3},
        "clips_per_s_10s": round(1 / (step * 250), 3),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
