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


def test_s3_outage_short_is_absorbed_long_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A blip of the S3 server is absorbed by botocore's backoff; a long outage fails with the URI named, nothing
    partial is visible, and a later retry completes."""
    import threading

    import boto3
    from moto.server import ThreadedMotoServer

    from action_recognition.config import StorageConfig
    from action_recognition.errors import StorageError
    from action_recognition.storage import open_storage
    from tests.conftest import free_port

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-access-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret-key")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="outage")
    store = open_storage(StorageConfig(uri="s3://outage/p", endpoint_url=endpoint, max_attempts=8, connect_timeout_s=1))
    store.put_bytes("before.txt", b"1")
    server.stop()

    def come_back() -> None:
        time.sleep(2.0)
        nonlocal server
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)  # same in-process state
        server.start()

    threading.Thread(target=come_back).start()
    began = time.monotonic()
    store.put_bytes("during-blip.txt", b"2")  # retried until the server is back
    assert time.monotonic() - began >= 1.5
    assert store.get_bytes("during-blip.txt") == b"2"

    server.stop()
    impatient = open_storage(StorageConfig(uri="s3://outage/p", endpoint_url=endpoint, max_attempts=2,
                                           connect_timeout_s=1))  # fmt: skip
    with pytest.raises(StorageError, match=r"s3://outage/p/during-outage\.txt"):
        impatient.put_bytes("during-outage.txt", b"3")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        assert not impatient.exists("during-outage.txt"), "nothing partial is visible"
        impatient.put_bytes("during-outage.txt", b"3")  # the task's next try
        assert impatient.get_bytes("during-outage.txt") == b"3"
        assert impatient.list() == ["before.txt", "during-blip.txt", "during-outage.txt"]
    finally:
        server.stop()


def test_the_same_shard_twice_at_once_ends_as_one_run(tmp_path: Path) -> None:
    """Airflow may run a task twice at the same time: both finish, storage and ledger end as after one run."""
    import threading

    store, once = LocalStorage(tmp_path / "twice"), LocalStorage(tmp_path / "once")
    for s in (store, once):
        _plan(tmp_path, s)
    with VideoServer(dict.fromkeys(IDS, VIDEOS / "demo.mp4")) as srv:  # type: ignore[arg-type]
        cfg = DownloadConfig(url_template=srv.url_template, work_dir=tmp_path / "w")
        errors: list[BaseException] = []

        def run() -> None:
            try:
                download_shard("faults", store, cfg)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        download_shard("faults", once, cfg)
    assert errors == []
    assert store.list("raw/") == once.list("raw/")
    assert {k: v.state for k, v in read_stage(store, "faults", "download").items()} == {
        k: v.state for k, v in read_stage(once, "faults", "download").items()}  # fmt: skip
    assert _leftovers(tmp_path / "twice", tmp_path / "w") == []
