"""Dependencies: a lock with a hash for every pin, known-bad versions excluded, the venv matching the lock."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from tests.support.reliability import Reliability

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "lock.txt"
BAD_ULTRALYTICS = ["8.3.41", "8.3.42", "8.3.45", "8.3.46"]  # the releases published with a crypto-miner


def _entries() -> dict[str, tuple[str, list[str]]]:
    text = LOCK.read_text().replace("\\\n", " ")
    found = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            pin, *hashes = line.split()
            name, ver = pin.split("==")
            found[re.sub(r"[-_.]+", "-", name).lower()] = (ver, [h.split(":", 1)[1] for h in hashes])
    return found


def test_every_pin_has_a_sha256(reliability: Reliability) -> None:
    with reliability.probe("dependencies: every pin of the lock carries a sha256 (pip --require-hashes)"):
        entries = _entries()
        assert len(entries) > 200
        bad = [
            n
            for n, (_, hashes) in entries.items()
            if not hashes or not all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes)
        ]
        assert bad == [], f"pins without a sha256: {bad}"
        assert {"pip", "setuptools", "wheel"} <= set(entries), "the installer itself is locked too"
        makefile = (ROOT / "Makefile").read_text()
        assert "--require-hashes -r $(LOCK)" in makefile


def test_known_bad_versions_are_excluded(reliability: Reliability) -> None:
    entries = _entries()
    with reliability.probe("dependencies: torch >= 2.6 (torch.load weights_only is safe by default)"):
        assert Version(entries["torch"][0]) >= Version("2.6")
        assert Version(version("torch").split("+")[0]) >= Version("2.6")
    with reliability.probe("dependencies: no compromised Ultralytics release (8.3.41/42/45/46)"):
        assert entries["ultralytics"][0] not in BAD_ULTRALYTICS
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        spec = next(
            SpecifierSet(d.split("ultralytics", 1)[1])
            for d in extras["worker"]
            if d.startswith("ultralytics")
        )
        assert not any(spec.contains(v) for v in BAD_ULTRALYTICS), spec


def test_the_venv_is_the_lock() -> None:
    entries = _entries()
    for name in ("torch", "ultralytics", "yt-dlp", "mlflow", "apache-airflow", "boto3"):
        assert version(name).split("+")[0] == entries[name][0], name


def test_constraints_for_the_images() -> None:
    argv = [
        sys.executable,
        str(ROOT / "scripts" / "lock.py"),
        "--constraints",
        "--exclude",
        "^(torch|torchvision|triton|nvidia-|cuda-)",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines and all(re.fullmatch(r"[A-Za-z0-9._-]+==[^\s]+", ln) for ln in lines)
    assert not any(ln.startswith(("torch==", "torchvision==")) for ln in lines)
    assert any(ln.startswith("ultralytics==") for ln in lines)
    for dockerfile in ("worker.Dockerfile", "airflow.Dockerfile"):
        assert (
            "lock.py" in (ROOT / "docker" / dockerfile).read_text()
            and "--constraints" in (ROOT / "docker" / dockerfile).read_text()
        )
