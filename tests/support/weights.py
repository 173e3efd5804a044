"""Weight files made here for offline tests: an untrained Ultralytics pose model saved as a .pt (the
architecture of yolo11n-pose with random weights), loaded by the real loader exactly as the released file
would be."""

from __future__ import annotations

from pathlib import Path


def untrained_pose_pt(folder: Path, name: str = "yolo11n-pose") -> Path:
    from action_recognition.pose.extract import ultralytics_offline

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.pt"
    with ultralytics_offline(folder / "ultralytics"):
        from ultralytics import YOLO

        YOLO(f"{name}.yaml").save(path)
    return path
