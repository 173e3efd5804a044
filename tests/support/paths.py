"""Where the tests' real data lives, and a free port on 127.0.0.1: plain values every test and support module
may import (support code never imports ``conftest``; pytest owns that module)."""

from __future__ import annotations

import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
KINETICS = FIXTURES / "kinetics"
VIDEOS = FIXTURES / "videos"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
