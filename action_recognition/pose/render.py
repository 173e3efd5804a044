"""Skeleton overlays: the clip with the main person's keypoints (and optionally a label) drawn on it, as H.264
mp4."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from action_recognition.media import MediaError
from action_recognition.pose.extract import decode_frames
from action_recognition.skeletons import COCO17

_COLOURS = [(0, 200, 255), (255, 120, 0), (0, 255, 120), (255, 0, 200)]


def draw_skeleton(
    frame: np.ndarray, keypoints: np.ndarray, colour: tuple[int, int, int], min_score: float = 0.05
) -> None:
    """Draw one person's COCO-17 skeleton (normalised keypoints (17, 3)) on a BGR frame, in place."""
    import cv2

    h, w = frame.shape[:2]
    pts = [(int(x * w), int(y * h), s) for x, y, s in keypoints]
    for a, b in COCO17.edges:
        if pts[a][2] > min_score and pts[b][2] > min_score:
            cv2.line(frame, pts[a][:2], pts[b][:2], colour, 2, cv2.LINE_AA)
    for x, y, s in pts:
        if s > min_score:
            cv2.circle(frame, (x, y), 3, (255, 255, 255), -1, cv2.LINE_AA)


def thumbnail_strip(
    video: Path, person: np.ndarray, fps: float | None, *, frames: int = 4, height: int = 120
) -> bytes:
    """A JPEG strip of ``frames`` evenly spaced frames of ``video``, each with the main person's skeleton
    (``person`` (T, 17, 3), sampled at ``fps`` as the pose step read it) drawn, ``height`` pixels high."""
    import cv2

    decoded, _, (h, w) = decode_frames(video, fps)
    picks = np.unique(np.linspace(0, len(decoded) - 1, num=frames).round().astype(int))
    size = (max(1, round(w * height / h)), height)
    tiles = []
    for t in picks:
        canvas = decoded[t].copy()
        if t < len(person):
            draw_skeleton(canvas, person[t], _COLOURS[0])
        tiles.append(cv2.resize(canvas, size, interpolation=cv2.INTER_AREA))
    ok, jpeg = cv2.imencode(".jpg", np.hstack(tiles), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise MediaError(f"thumbnail of {video.name}: JPEG encoding failed", "")
    return bytes(jpeg.tobytes())


def render_overlay(
    video: Path,
    people: np.ndarray,
    out: Path,
    *,
    fps: float | None = None,
    label: str | None = None,
    timeout_s: float = 300,
) -> Path:
    """Write ``out`` (H.264 mp4): ``video``'s frames with ``people`` (M, T, 17, 3) or (T, 17, 3) drawn on
    them."""
    import cv2

    frames, rate, (h, w) = decode_frames(video, fps)
    if people.ndim == 3:
        people = people[None]
    argv = [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-protocol_whitelist",
        "pipe,file",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "bgr24",
        "-s",
        f"{w}x{h}",
        "-r",
        f"{rate:.3f}",
        "-i",
        "pipe:0",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-vf",
        "pad=ceil(iw/2)*2:ceil(ih/2)*2",
        "-movflags",
        "+faststart",
        str(out),
    ]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        for t, frame in enumerate(frames):
            canvas = frame.copy()
            for m in range(people.shape[0]):
                if t < people.shape[1]:
                    draw_skeleton(canvas, people[m, t], _COLOURS[m % len(_COLOURS)])
            if label:
                cv2.putText(canvas, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
                cv2.putText(
                    canvas, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA
                )
            proc.stdin.write(canvas.tobytes())
        _, err = proc.communicate(timeout=timeout_s)  # closes stdin: ffmpeg finishes the file
    except (BrokenPipeError, subprocess.TimeoutExpired) as exc:
        proc.kill()
        raise MediaError(
            f"render {out.name}: ffmpeg failed", (proc.stderr.read() if proc.stderr else b"").decode()[-500:]
        ) from exc
    if proc.returncode != 0:
        raise MediaError(
            f"render {out.name}: exit status {proc.returncode}", err.decode(errors="replace")[-500:]
        )
    return out
