"""Faults on real components: a download killed mid-run, a full work folder. Each bounded in time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from action_recognition.clip import clip_shard
from action_recognition.config import ClipConfig, DownloadConfig, PlanConfig
from action_recognition.download import download_shard
from action_recognition.errors import WorkspaceFullError
from action_recognition.kinetics import plan_dataset
from action_recognition.ledger import final_states, read_stage
from action_recognition.localserve import VideoServer
from action_recognition.storage import LocalStorage
from tests.conftest import VIDEOS

pytestmark = pytest.mark.integration

IDS = [f"slow{i:07d}" for i in range(4)]


def _plan(tmp_path: Path, store: LocalStorage) -> None:
    csv_path = tmp_path / "kinetics-600_faults.csv"
    csv_path.write_text("label,youtube_id,time_start,time_end,split\n"
                        + "".join(f"tap dancing,{v},1,6,train\n" for v in IDS))  # fmt: skip
    plan_dataset(PlanConfig(annotations=[str(csv_path)], classes=["tap dancing"], class_contains=None,
                            dataset="faults", carve_missing_splits=False), store)  # fmt: skip


def _leftovers(*folders: Path) -> list[str]:
    found = []
    for folder in folders:
        for path in folder.rglob("*"):
            if ".partial-" in path.name or (path.is_dir() and path.name.startswith(("dl-", "clip-"))):
                found.append(str(path))
    return found


def test_killed_download_then_retry_equals_a_clean_run(tmp_path: Path) -> None:
    killed_store, clean_store = LocalStorage(tmp_path / "killed"), LocalStorage(tmp_path / "clean")
    work = tmp_path / "work"
    for store in (killed_store, clean_store):
        _plan(tmp_path, store)
    routes = dict.fromkeys(IDS, VIDEOS / "demo.mp4")
    with VideoServer(routes, throttle_bps=400_000) as srv:  # type: ignore[arg-type]
        argv = [sys.executable, "-m", "action_recognition", "download", "--dataset", "faults", "--storage",
                str(killed_store.root), "--url-template", srv.url_template, "--workers", "2", "--json",
                "--set", f"download.work_dir={work}"]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 120
        while not any(work.glob("dl-*/*")) and time.monotonic() < deadline:
            time.sleep(0.05)  # until a download is under way
        os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: yt-dlp's ffmpeg children too
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        assert not killed_store.list("raw/") or all(killed_store.size(k) for k in killed_store.list("raw/"))
        # The retry (Airflow's next try) on the same storage and work folder, and a clean run elsewhere.
        retry = download_shard("faults", killed_store, DownloadConfig(url_template=srv.url_template, work_dir=work))
        download_shard("faults", clean_store, DownloadConfig(url_template=srv.url_template, work_dir=work))
    assert retry.counts == {"ok": len(IDS)}
    assert killed_store.list("raw/") == clean_store.list("raw/")
    killed_states = {k: v.state for k, v in read_stage(killed_store, "faults", "download").items()}
    assert killed_states == {k: v.state for k, v in read_stage(clean_store, "faults", "download").items()}
    assert len(killed_states) == len(IDS)
    assert _leftovers(tmp_path / "killed", work) == [], "no partial object, temp file or job folder is left"


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs as the work folder (root only; CI runs as root)."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_full_work_folder_stops_clearly_and_publishes_nothing(tmp_path: Path, tiny_disk: Path) -> None:
    store = LocalStorage(tmp_path / "store")
    _plan(tmp_path, store)
    with VideoServer(dict.fromkeys(IDS, VIDEOS / "test.mp4")) as srv:  # type: ignore[arg-type]
        download_shard("faults", store, DownloadConfig(url_template=srv.url_template, work_dir=tmp_path / "w"))
    with pytest.raises(WorkspaceFullError, match="no space left"):
        clip_shard("faults", store, ClipConfig(), work_dir=tiny_disk)
    assert store.list("clips/") == [], "nothing partial is published"
    assert _leftovers(tmp_path / "store", tiny_disk) == []
    assert set(final_states(store, "faults").values()) == {"pending"}, "no clip was blamed for the full disk"
    result = clip_shard("faults", store, ClipConfig(), work_dir=tmp_path / "w")  # space again: it completes
    assert result.counts == {"ok": len(IDS)}


def test_full_disk_is_a_clear_cli_error(tmp_path: Path, tiny_disk: Path) -> None:
    store = LocalStorage(tmp_path / "store")
    _plan(tmp_path, store)
    with VideoServer(dict.fromkeys(IDS, VIDEOS / "test.mp4")) as srv:  # type: ignore[arg-type]
        out = subprocess.run([sys.executable, "-m", "action_recognition", "download", "--dataset", "faults",
                              "--storage", str(store.root), "--url-template", srv.url_template, "--json",
                              "--set", f"download.work_dir={tiny_disk}"],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["ok"] is False and summary["error_type"] == "WorkspaceFullError"
    assert "Traceback" not in out.stderr
    assert _leftovers(tmp_path / "store", tiny_disk) == []
