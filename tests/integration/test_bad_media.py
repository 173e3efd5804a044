"""Bad media, each rejected by the clip gate with a clear reason: 0 crashes, 0 silently accepted."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from action_recognition.clip import make_clip
from action_recognition.config import ClipConfig
from action_recognition.media import MediaError
from tests.support.media import make_audio_only, make_video, truncate
from tests.support.paths import VIDEOS
from tests.support.reliability import Reliability

pytestmark = [pytest.mark.integration]


def _zero_byte(d: Path) -> Path:
    (d / "empty.mp4").write_bytes(b"")
    return d / "empty.mp4"


def _html_named_mp4(d: Path) -> Path:
    (d / "page.mp4").write_text("<html><body>Video unavailable</body></html>")
    return d / "page.mp4"


def _zero_frames(d: Path) -> Path:
    path = d / "zero.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-frames:v",
            "0",
            "-c:v",
            "libx264",
            str(path),
        ],
        check=True,
        timeout=60,
    )
    return path


def _truncated_no_faststart(d: Path) -> Path:
    return truncate(make_video(d / "plain.mp4", seconds=6, faststart=False), d / "trunc.mp4", 0.6)


def _truncated_faststart(d: Path) -> Path:
    return truncate(make_video(d / "fast.mp4", seconds=12), d / "trunc-fast.mp4", 0.3)


def _random_bytes(d: Path) -> Path:
    (d / "noise.mp4").write_bytes(bytes(range(256)) * 400)
    return d / "noise.mp4"


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "zero bytes": (_zero_byte, "empty"),
    "html with an mp4 name": (_html_named_mp4, "ffprobe"),
    "random bytes": (_random_bytes, "ffprobe"),
    "audio only": (lambda d: make_audio_only(d / "a.m4a"), "no video stream"),
    "zero frames": (_zero_frames, ""),
    "truncated, moov at the end": (_truncated_no_faststart, "ffprobe"),
    "truncated, faststart": (_truncated_faststart, "truncated or corrupt"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_media_is_rejected_with_a_reason(case: str, tmp_path: Path, reliability: Reliability) -> None:
    make, words = CASES[case]
    src = make(tmp_path)
    with reliability.bad_input(
        f"media: {case}", rejects=MediaError, match=f"(?i){re.escape(words)}"
    ) as caught:
        make_clip(src, tmp_path / "out.mp4", offset_s=0.0, window_s=10.0, config=ClipConfig())
    assert len(caught.message) > 15, caught.message


def test_huge_resolution_is_refused_before_decoding(tmp_path: Path, reliability: Reliability) -> None:
    src = VIDEOS / "S001C001P001R001A001_rgb.avi"  # 1920x1080: above a limit of 1280x720 pixels
    with reliability.bad_input(
        "media: huge resolution", MediaError, r"1920x1080 is above clip\.max_input_pixels"
    ):
        make_clip(
            src, tmp_path / "o.mp4", offset_s=0, window_s=3, config=ClipConfig(max_input_pixels=1280 * 720)
        )


def test_wrong_extension_but_real_video_is_accepted(tmp_path: Path, reliability: Reliability) -> None:
    """The content decides, not the name: an AVI named .mp4 is a video like any other."""
    src = tmp_path / "really-an-avi.mp4"
    src.write_bytes((VIDEOS / "S001C001P001R001A001_rgb.avi").read_bytes())
    with reliability.handled("media: an AVI named .mp4", "clipped like any video: the content decides"):
        duration, short = make_clip(src, tmp_path / "o.mp4", offset_s=0, window_s=3, config=ClipConfig())
        assert abs(duration - 3.0) <= 0.1 and not short


def _playlist(d: Path, name: str, target: str) -> Path:
    path = d / name
    path.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n{target}\n#EXT-X-ENDLIST\n")
    return path


@pytest.mark.parametrize("case", ["hls to http", "hls to a local file", "concat script", "image sequence"])
def test_ffmpeg_reads_nothing_but_the_file_itself(
    case: str, tmp_path: Path, reliability: Reliability
) -> None:
    """A download that is really a playlist or a script naming other files or URLs (SSRF, local file read):
    the clip gate refuses it, and nothing named inside it is fetched."""
    import http.server
    import threading

    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            return None

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/probe.ts"
    real = VIDEOS / "demo.mp4"
    src = {
        "hls to http": lambda: _playlist(tmp_path, "a.mp4", url),
        "hls to a local file": lambda: _playlist(tmp_path, "b.mp4", f"file://{real}"),
        "concat script": lambda: _write(tmp_path / "c.mp4", f"ffconcat version 1.0\nfile '{real}'\n"),
        "image sequence": lambda: _write(tmp_path / "frame-%03d.mp4", "x"),
    }[case]()
    try:
        with reliability.probe(f"ffmpeg: {case}"):
            with pytest.raises(MediaError):
                make_clip(src, tmp_path / "out.mp4", offset_s=0.0, window_s=3.0, config=ClipConfig())
            assert hits == [], f"ffmpeg fetched {hits}"
            assert not (tmp_path / "out.mp4").exists()
    finally:
        httpd.shutdown()
        httpd.server_close()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
