"""The health app's thumbnail route: only ``thumbnails/<pose_tag>/<clip_id>.jpg`` of the deployment's storage,
behind Airflow's login (the app-wide ``get_user`` dependency, replaced here by a signed-in user)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.airflow import ROOT

sys.path.insert(0, str(ROOT / "plugins"))


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    from airflow.api_fastapi.core_api.security import get_user
    from ar_provider import health_app
    from fastapi.testclient import TestClient

    from action_recognition.storage import open_storage

    storage = open_storage(str(tmp_path / "store"))
    storage.put_bytes("thumbnails/yolo11n-pose-abcd1234-i640-fall-m2/abc_000001_000011.jpg", b"\xff\xd8jpeg")
    storage.put_bytes("health/d.json", b"{}")
    monkeypatch.setattr(health_app, "_storage", lambda: storage)
    health_app.app.dependency_overrides[get_user] = lambda: {"name": "someone"}
    try:
        yield TestClient(health_app.app)
    finally:
        health_app.app.dependency_overrides.clear()


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/thumbnails/yolo11n-pose-abcd1234-i640-fall-m2/abc_000001_000011.jpg", 200),
        ("/thumbnails/yolo11n-pose-abcd1234-i640-fall-m2/other_000001_000011.jpg", 404),
        ("/thumbnails/../health/d.jpg", 404),  # no route: a path parameter holds no slash
        ("/thumbnails/..%2Fhealth/d.jpg", 404),
        ("/thumbnails/a..b/abc_000001_000011.jpg", 422),
        ("/thumbnails/.hidden/abc_000001_000011.jpg", 422),
    ],
)
def test_only_thumbnails_are_served(client: Any, path: str, status: int) -> None:
    answer = client.get(path)
    assert answer.status_code == status, answer.text
    if status == 200:
        assert answer.headers["content-type"] == "image/jpeg" and answer.content == b"\xff\xd8jpeg"
