"""The raw-frame reader the pose step decodes through: whole output whatever the size guess, the exit status
and stderr of a failure, a timeout that kills the process (any program writing to stdout stands in for
ffmpeg)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from action_recognition.media import MediaError, read_frames


def test_reads_everything_whatever_the_guess(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 255, 3 * 1000 + 7, dtype=np.uint8)
    src = tmp_path / "raw.bin"
    src.write_bytes(data.tobytes())
    for expected in (0, 1, 3, 50):  # too small (grown), exact, too large (trimmed)
        got = read_frames(["cat", str(src)], frame_bytes=1000, expected=expected, timeout_s=30, what="cat")
        np.testing.assert_array_equal(got, data)


def test_a_failure_says_why() -> None:
    script = "import sys; sys.stderr.write('Invalid data found when processing input'); sys.exit(3)"
    with pytest.raises(MediaError, match="exit status 3") as info:
        read_frames(
            [sys.executable, "-c", script], frame_bytes=10, expected=1, timeout_s=30, what="decode x.mp4"
        )
    assert "Invalid data" in info.value.stderr_tail


def test_a_timeout_kills_it() -> None:
    with pytest.raises(MediaError, match=r"timed out after 0\.5 s"):
        read_frames(
            [sys.executable, "-c", "import time; time.sleep(30)"],
            frame_bytes=10,
            expected=1,
            timeout_s=0.5,
            what="decode slow.mp4",
        )


def test_a_missing_program_is_named() -> None:
    with pytest.raises(MediaError, match="not installed"):
        read_frames(["no-such-ffmpeg-here"], frame_bytes=10, expected=1, timeout_s=5, what="decode")
