"""The yt-dlp update lane's pin logic (`scripts/lock.py --bump`, what `make update-yt-dlp` runs): the package
moves, its extras' exact pins move with it, a lower bound the lock no longer meets moves, everything else
stays."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from tests.support.paths import ROOT


def _lock() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lock_script", ROOT / "scripts/lock.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REQUIRES = [
    "yt-dlp-ejs==0.9.0; extra == 'default'",
    "certifi; extra == 'default'",
    "requests<3,>=2.32.2; extra == 'default'",
    "deno>=3.0.0; extra == 'deno'",
    "pyinstaller>=6; extra == 'pyinstaller'",
]


def test_exact_pins_and_unmet_bounds_move_with_the_package() -> None:
    lock = _lock()
    pinned = {
        "yt-dlp": "2026.10.26",
        "yt-dlp-ejs": "0.8.0",
        "certifi": "2025.1.1",
        "requests": "2.32.5",
        "deno": "2.9.8",
    }
    moved = lock.moved_with("yt-dlp[default,deno]", REQUIRES, pinned)
    assert moved == {"yt-dlp", "yt-dlp-ejs", "deno"}, (
        "certifi and requests still satisfy; pyinstaller not asked"
    )
    versions = {"yt-dlp": "2027.1.1", "yt-dlp-ejs": "0.9.0", "deno": "3.1.0", "certifi": "2027.1.1"}
    pins = lock.bump(list(pinned.items()), versions, moved)
    assert dict(pins) == {**pinned, "yt-dlp": "2027.1.1", "yt-dlp-ejs": "0.9.0", "deno": "3.1.0"}


def test_a_dependency_the_lock_lacks_is_added() -> None:
    lock = _lock()
    moved = lock.moved_with("yt-dlp[default]", REQUIRES, {"yt-dlp": "2026.10.26"})
    assert "yt-dlp-ejs" in moved and "certifi" in moved
    pins = lock.bump(
        [("yt-dlp", "2026.10.26")],
        {"yt-dlp": "2027.1.1", "yt-dlp-ejs": "0.9.0", "certifi": "1", "requests": "2.33.0"},
        moved,
    )
    assert ("yt-dlp-ejs", "0.9.0") in pins and ("yt-dlp", "2027.1.1") in pins
