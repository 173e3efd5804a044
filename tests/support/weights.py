"""Weight files made here for offline tests: an untrained Ultralytics pose model saved as a .pt (the architecture of
yolo11n-pose with random weights), loaded by the real loader exactly as the released file would be."""

from __future__ import annotations

from pathlib import Path


def untrained_pose_pt(folder: Path, name: str = "yolo11n-pose") -> Path:
    from action_recognition.pose.extract import prepare_ultralytics

    folder.mkdir(parents=True, exist_ok=True)
    prepare_ultralytics(folder / "ultralytics")
    from ultralytics import YOLO

    path = folder / f"{name}.pt"
    YOLO(f"{name}.yaml").save(path)
    return path
