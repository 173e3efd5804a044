"""ffprobe/ffmpeg helpers: argv lists only (never a shell), ``-nostdin``, a protocol whitelist and a timeout.

The encode graphs are built with ffmpeg-python and compiled to argv; we run them ourselves with
:func:`subprocess.run` so that every call has a timeout and its stderr tail ends up in the error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, cast

if TYPE_CHECKING:
    import numpy as np

from action_recognition.errors import ActionRecognitionError, WorkspaceFullError

log = logging.getLogger(__name__)

#: Clipping reads only local files.
LOCAL_PROTOCOLS = "file"
#: fcntl's F_SETPIPE_SZ (Linux): how much a pipe holds.
F_SETPIPE_SZ = 1031
#: ...and only real video containers: no playlist (HLS), concat script or image sequence demuxer, which could
#: make ffmpeg read other files or URLs named inside a hostile download.
INPUT_FORMATS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv"
SAFE_INPUT = {"protocol_whitelist": LOCAL_PROTOCOLS, "format_whitelist": INPUT_FORMATS}


class MediaError(ActionRecognitionError):
    """ffmpeg or ffprobe refused a file; ``stderr_tail`` says why in ffmpeg's words."""

    def __init__(self, message: str, stderr_tail: str = "") -> None:
        super().__init__(f"{message}: {stderr_tail}" if stderr_tail else message)
        self.stderr_tail = stderr_tail


@dataclass(frozen=True)
class MediaInfo:
    """What ffprobe says about a file."""

    duration_s: float
    width: int
    height: int
    fps: float
    frames: int | None
    video_codec: str
    has_audio: bool


def _tail(text: str | bytes, chars: int = 600) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return text.strip()[-chars:]


def run_ffmpeg(argv: list[str], *, timeout_s: float, what: str) -> subprocess.CompletedProcess[bytes]:
    """Run an ffmpeg/ffprobe argv with a timeout; MediaError with the stderr tail on failure."""
    try:
        proc = subprocess.run(
            argv, capture_output=True, timeout=timeout_s, check=False, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        raise MediaError(f"{what}: timed out after {timeout_s:g} s", _tail(exc.stderr or b"")) from None
    except FileNotFoundError as exc:
        raise MediaError(f"{what}: {argv[0]} is not installed (apt-get install ffmpeg)") from exc
    if proc.returncode != 0:
        tail = _tail(proc.stderr)
        if "No space left on device" in tail:
            raise WorkspaceFullError(f"{what}: no space left in the work folder ({tail[-200:]})")
        raise MediaError(f"{what}: exit status {proc.returncode}", tail)
    return proc


def read_frames(
    argv: list[str], *, frame_bytes: int, expected: int, timeout_s: float, what: str
) -> np.ndarray:
    """Run an ffmpeg argv that writes raw frames to ``pipe:1`` and return its output as one uint8 array, read
    straight into a buffer sized for ``expected`` frames (grown if there are more) through a 1 MiB pipe: a few
    dozen reads a clip, no copies, so decoding threads barely touch the GIL (a plain read to the end was 4-6x
    slower here and held it per 64 KiB). stderr goes to a file; the process is killed at the timeout."""
    import fcntl
    import tempfile
    import threading

    import numpy as np

    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, bufsize=0
            )
        except FileNotFoundError as exc:
            raise MediaError(f"{what}: {argv[0]} is not installed (apt-get install ffmpeg)") from exc
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            proc.kill()

        timer = threading.Timer(timeout_s, expire)
        timer.start()
        buf = np.empty(max(1, expected + 2) * frame_bytes, np.uint8)
        size = 0
        try:
            with proc:
                stdout = cast(IO[bytes], proc.stdout)
                with contextlib.suppress(OSError):  # Linux only; the default 64 KiB pipe works, more slowly
                    fcntl.fcntl(stdout.fileno(), F_SETPIPE_SZ, 1 << 20)
                while got := stdout.readinto(buf.data[size:]):  # type: ignore[attr-defined]
                    size += got
                    if size == len(buf):
                        buf = np.resize(buf, 2 * len(buf))
        finally:
            timer.cancel()
        err.seek(0)
        tail = _tail(err.read())
    if proc.returncode != 0:
        if expired.is_set():
            raise MediaError(f"{what}: timed out after {timeout_s:g} s", tail)
        raise MediaError(f"{what}: exit status {proc.returncode}", tail)
    return buf[:size]


def probe(path: Path, *, timeout_s: float = 60.0) -> MediaInfo:
    """Probe a local media file. MediaError when it has no decodable video stream."""
    argv = [
        "ffprobe",
        "-v",
        "error",
        "-protocol_whitelist",
        LOCAL_PROTOCOLS,
        "-format_whitelist",
        INPUT_FORMATS,
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        str(path),
    ]
    proc = run_ffmpeg(argv, timeout_s=timeout_s, what=f"ffprobe {path.name}")
    try:
        info = json.loads(proc.stdout or b"{}")
    except json.JSONDecodeError as exc:
        raise MediaError(f"ffprobe {path.name}: unreadable output") from exc
    streams = info.get("streams", [])
    video = next(
        (
            s
            for s in streams
            if s.get("codec_type") == "video" and s.get("disposition", {}).get("attached_pic", 0) == 0
        ),
        None,
    )
    if video is None:
        kinds = sorted({s.get("codec_type", "?") for s in streams}) or ["none"]
        raise MediaError(f"{path.name}: no video stream (streams: {', '.join(kinds)})")
    duration = float(video.get("duration") or info.get("format", {}).get("duration") or 0.0)
    num, _, den = str(video.get("avg_frame_rate") or video.get("r_frame_rate") or "0/1").partition("/")
    fps = float(num) / float(den or 1) if float(den or 1) else 0.0
    frames = int(video["nb_frames"]) if str(video.get("nb_frames", "")).isdigit() else None
    return MediaInfo(
        duration_s=duration,
        width=int(video.get("width") or 0),
        height=int(video.get("height") or 0),
        fps=fps,
        frames=frames,
        video_codec=str(video.get("codec_name", "")),
        has_audio=any(s.get("codec_type") == "audio" for s in streams),
    )


def count_decoded_frames(path: Path, *, timeout_s: float = 120.0) -> int:
    """Decode every frame of a local file; the number decoded. MediaError on any decode error."""
    argv = [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-xerror",
        "-protocol_whitelist",
        LOCAL_PROTOCOLS,
        "-format_whitelist",
        INPUT_FORMATS,
        "-i",
        str(path),
        "-map",
        "0:v:0",
        "-f",
        "framemd5",
        "-",
    ]
    proc = run_ffmpeg(argv, timeout_s=timeout_s, what=f"decode {path.name}")
    if proc.stderr.strip():
        raise MediaError(f"decode {path.name}: errors while decoding", _tail(proc.stderr))
    return sum(1 for line in proc.stdout.splitlines() if line and not line.startswith(b"#"))


def scale_filter_args(short_side: int) -> dict[str, str]:
    """ffmpeg ``scale`` arguments that make the short side ``short_side`` and keep the aspect ratio (even
    sizes)."""
    return {
        "w": f"if(gt(iw,ih),-2,{short_side})",
        "h": f"if(gt(iw,ih),{short_side},-2)",
    }


def encode_clip(
    src: Path,
    dst: Path,
    *,
    start_s: float,
    duration_s: float,
    short_side: int,
    fps: int,
    crf: int,
    preset: str,
    threads: int,
    timeout_s: float,
    seek: str = "input",
) -> None:
    """Re-encode ``[start_s, start_s + duration_s)`` of ``src`` to H.264 yuv420p, no audio, faststart.

    ``seek="input"`` seeks before decoding (fast, exact with re-encoding); ``"output"`` decodes from the start
    and drops frames until ``start_s`` (slow, but works on files whose index defeats input seeking, e.g. some
    AVIs).
    """
    import ffmpeg

    if seek == "input":
        stream = ffmpeg.input(str(src), ss=f"{start_s:.3f}", t=f"{duration_s:.3f}", **SAFE_INPUT)
        output_args: dict[str, str] = {}
    else:
        stream = ffmpeg.input(str(src), **SAFE_INPUT)
        output_args = {"ss": f"{start_s:.3f}", "t": f"{duration_s:.3f}"}
    video = (
        stream.video.filter("scale", **scale_filter_args(short_side))
        .filter("setsar", "1")
        .filter("fps", fps=fps)
    )
    out = ffmpeg.output(
        video,
        str(dst),
        vcodec="libx264",
        pix_fmt="yuv420p",
        crf=crf,
        preset=preset,
        movflags="+faststart",
        map_metadata=-1,
        threads=threads,
        an=None,
        f="mp4",
        **output_args,
    )
    argv = ffmpeg.compile(out, cmd="ffmpeg", overwrite_output=True)
    argv = [argv[0], "-nostdin", "-v", "error", *argv[1:]]
    run_ffmpeg(argv, timeout_s=timeout_s, what=f"encode {src.name}")


def cut_copy(src: Path, dst: Path, *, start_s: float, duration_s: float, timeout_s: float) -> None:
    """Cut a window out of a whole downloaded video, re-encoding fast so the cut is exact."""
    argv = [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-protocol_whitelist",
        LOCAL_PROTOCOLS,
        "-format_whitelist",
        INPUT_FORMATS,
        "-ss",
        f"{start_s:.3f}",
        "-t",
        f"{duration_s:.3f}",
        "-i",
        str(src),
        "-map",
        "0:v:0",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-crf",
        "18",
        "-an",
        "-f",
        "mp4",
        str(dst),
    ]
    run_ffmpeg(argv, timeout_s=timeout_s, what=f"cut {src.name}")
