"""The demo's "YouTube" (the compose stack's video server): a site folder served with its annotation CSV."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.paths import VIDEOS

pytestmark = pytest.mark.integration


def test_a_demo_site_serves_its_csv_and_videos_by_range(tmp_path: Path) -> None:
    from devtools.demo import DEMO_CSV, build_demo_site, load_demo_site
    from devtools.localserve import VideoServer

    build_demo_site(tmp_path / "site", VIDEOS, per_class=1)
    routes, files = load_demo_site(tmp_path / "site")
    assert all(p.is_file() and (tmp_path / "site") in p.parents for p in routes.values()), "the site is whole"
    with VideoServer(routes, files=files) as server:  # type: ignore[arg-type]
        with urllib.request.urlopen(f"{server.base_url}/{DEMO_CSV}", timeout=10) as resp:
            csv_text = resp.read().decode()
        ids = [line.split(",")[1] for line in csv_text.splitlines()[1:]]
        assert set(ids) - set(routes) == {"gone0000404"}, "every id but the lost one is served"
        req = urllib.request.Request(
            server.url_template.format(youtube_id=ids[0]), headers={"Range": "bytes=0-99"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 206 and len(resp.read()) == 100
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(server.url_template.format(youtube_id="gone0000404"), timeout=10)
