"""Generated videos for tests and benchmarks (ffmpeg lavfi sources; nothing downloaded)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_video(
    path: Path,
    *,
    seconds: float,
    size: str = "640x360",
    fps: int = 25,
    faststart: bool = True,
    audio: bool = True,
    source: str = "testsrc2",
    bitrate: str = "600k",
) -> Path:
    """An H.264 mp4 of a moving test pattern (with a tone when ``audio``)."""
    argv = [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"{source}=size={size}:rate={fps}",
    ]
    if audio:
        argv += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]
    argv += [
        "-t",
        str(seconds),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        str(2 * fps),
        "-b:v",
        bitrate,
        "-pix_fmt",
        "yuv420p",
    ]
    if audio:
        argv += ["-c:a", "aac", "-b:a", "64k"]
    if faststart:
        argv += ["-movflags", "+faststart"]
    subprocess.run([*argv, str(path)], check=True, timeout=300)
    return path


def make_audio_only(path: Path, seconds: float = 5) -> Path:
    argv = [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
        "-t",
        str(seconds),
        "-c:a",
        "aac",
        str(path),
    ]
    subprocess.run(argv, check=True, timeout=60)
    return path


def truncate(src: Path, dest: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dest.write_bytes(data[: int(len(data) * fraction)])
    return dest
