"""The lint checks, in one place: ruff (rules and format) over the repository and mypy over the package and the developer tools. `make
lint` runs this file and `make test` runs it with the rest; lint kept apart from CI went red unnoticed (mypy
on media.py, after a numpy upgrade)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.paths import ROOT

pytestmark = pytest.mark.check  # `make check`: under a minute, before every commit

CHECKS = {
    "ruff rules": ["-m", "ruff", "check", "--no-cache", "."],
    "ruff format": ["-m", "ruff", "format", "--check", "--no-cache", "."],
    "mypy": ["-m", "mypy", "action_recognition", "devtools"],
}


@pytest.mark.parametrize("name", CHECKS)
def test_lint_passes(name: str) -> None:
    out = subprocess.run(
        [sys.executable, *CHECKS[name]], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, f"{name} (`make lint`):\n{out.stdout[-4000:]}{out.stderr[-2000:]}"
