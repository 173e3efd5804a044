"""Model tests track into SQLite files under tmp_path; MLflow puts their artifacts in ./mlruns of the working
folder, so each test works in its own tmp_path instead of the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _work_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
