"""Pose keypoints: Ultralytics YOLO pose inference, tracking and main-person choice, overlays."""
