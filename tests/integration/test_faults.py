"""Faults on real components: a download killed mid-run, a full work folder. Each bounded in time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from action_recognition.clip import clip_shard
from action_recognition.config import ClipConfig, DownloadConfig, PlanConfig
from action_recognition.download import download_shard
from action_recognition.errors import WorkspaceFullError
from action_recognition.kinetics import plan_dataset
from action_recognition.ledger import final_states, read_stage
from action_recognition.storage import LocalStorage
from devtools.localserve import VideoServer
from tests.support.paths import VIDEOS
from tests.support.reliability import Reliability
from tests.support.train import train_args

pytestmark = pytest.mark.integration

IDS = [f"slow{i:07d}" for i in range(4)]


def _plan(tmp_path: Path, store: LocalStorage) -> None:
    csv_path = tmp_path / "kinetics-600_faults.csv"
    csv_path.write_text(
        "label,youtube_id,time_start,time_end,split\n" + "".join(f"tap dancing,{v},1,6,train\n" for v in IDS)
    )
    plan_dataset(
        PlanConfig(
            annotations=[str(csv_path)],
            classes=["tap dancing"],
            class_contains=None,
            dataset="faults",
            carve_missing_splits=False,
        ),
        store,
    )


def _leftovers(*folders: Path) -> list[str]:
    found = []
    for folder in folders:
        for path in folder.rglob("*"):
            if ".partial-" in path.name or (path.is_dir() and path.name.startswith(("dl-", "clip-"))):
                found.append(str(path))
    return found


def test_killed_download_then_retry_equals_a_clean_run(tmp_path: Path, reliability: Reliability) -> None:
    with reliability.fault("SIGKILL a download process group mid-run, then the retry"):
        killed_store, clean_store = LocalStorage(tmp_path / "killed"), LocalStorage(tmp_path / "clean")
        work = tmp_path / "work"
        for store in (killed_store, clean_store):
            _plan(tmp_path, store)
        routes = dict.fromkeys(IDS, VIDEOS / "demo.mp4")
        with VideoServer(routes, throttle_bps=400_000) as srv:  # type: ignore[arg-type]
            argv = [
                sys.executable,
                "-m",
                "action_recognition",
                "download",
                "--dataset",
                "faults",
                "--storage",
                str(killed_store.root),
                "--url-template",
                srv.url_template,
                "--workers",
                "2",
                "--json",
                "--set",
                f"download.work_dir={work}",
            ]
            proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
            )
            deadline = time.monotonic() + 120
            while not any(work.glob("dl-*/*")) and time.monotonic() < deadline:
                time.sleep(0.05)  # until a download is under way
            os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: yt-dlp's ffmpeg children too
            proc.wait(timeout=30)
            assert proc.returncode == -signal.SIGKILL
            assert not killed_store.list("raw/") or all(
                killed_store.size(k) for k in killed_store.list("raw/")
            )
            # The retry (Airflow's next try) on the same storage and work folder, and a clean run elsewhere.
            retry = download_shard(
                "faults", killed_store, DownloadConfig(url_template=srv.url_template, work_dir=work)
            )
            download_shard(
                "faults", clean_store, DownloadConfig(url_template=srv.url_template, work_dir=work)
            )
        assert retry.counts == {"ok": len(IDS)}
        assert killed_store.list("raw/") == clean_store.list("raw/")
        killed_states = {k: v.state for k, v in read_stage(killed_store, "faults", "download").items()}
        assert killed_states == {k: v.state for k, v in read_stage(clean_store, "faults", "download").items()}
        assert len(killed_states) == len(IDS)
        reliability.rows("download ledger after SIGKILL + retry", len(IDS), Counter(killed_states.values()))
        left = _leftovers(tmp_path / "killed", work)
        reliability.leftovers("temp files and job folders", temp_files=len(left))
        assert left == [], "no partial object, temp file or job folder is left"


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs as the work folder (root only; CI runs as root)."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_full_work_folder_stops_clearly_and_publishes_nothing(
    tmp_path: Path, tiny_disk: Path, reliability: Reliability
) -> None:
    with reliability.fault("the work folder fills up during clipping"):
        store = LocalStorage(tmp_path / "store")
        _plan(tmp_path, store)
        with VideoServer(dict.fromkeys(IDS, VIDEOS / "test.mp4")) as srv:  # type: ignore[arg-type]
            download_shard(
                "faults", store, DownloadConfig(url_template=srv.url_template, work_dir=tmp_path / "w")
            )
        with pytest.raises(WorkspaceFullError, match="no space left"):
            clip_shard("faults", store, ClipConfig(), work_dir=tiny_disk)
        assert store.list("clips/") == [], "nothing partial is published"
        left = _leftovers(tmp_path / "store", tiny_disk)
        reliability.leftovers("temp files and job folders", temp_files=len(left))
        assert left == []
        assert set(final_states(store, "faults").values()) == {"pending"}, (
            "no clip was blamed for the full disk"
        )
        result = clip_shard(
            "faults", store, ClipConfig(), work_dir=tmp_path / "w"
        )  # space again: it completes
        assert result.counts == {"ok": len(IDS)}


def test_full_disk_is_a_clear_cli_error(tmp_path: Path, tiny_disk: Path, reliability: Reliability) -> None:
    with reliability.fault("the work folder is full for the download CLI"):
        store = LocalStorage(tmp_path / "store")
        _plan(tmp_path, store)
        with VideoServer(dict.fromkeys(IDS, VIDEOS / "test.mp4")) as srv:  # type: ignore[arg-type]
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "action_recognition",
                    "download",
                    "--dataset",
                    "faults",
                    "--storage",
                    str(store.root),
                    "--url-template",
                    srv.url_template,
                    "--json",
                    "--set",
                    f"download.work_dir={tiny_disk}",
                ],
                capture_output=True,
                text=True,
                timeout=300,
            )
        assert out.returncode == 2, out.stderr[-2000:]
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        assert summary["ok"] is False and summary["error_type"] == "WorkspaceFullError"
        assert "Traceback" not in out.stderr
        left = _leftovers(tmp_path / "store", tiny_disk)
        reliability.leftovers("temp files and job folders", temp_files=len(left))
        assert left == []


def test_s3_outage_short_is_absorbed_long_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reliability: Reliability
) -> None:
    """A blip of the S3 server is absorbed (storage.unreachable_s, not botocore's backoff: since botocore 1.40
    it waits 50 ms doubling for connection errors, under 2 s in all at the default attempts, and a 2 s blip
    failed CI); an outage past the window fails with the URI named, nothing partial is visible, and a later
    retry completes."""
    import threading

    import boto3
    from moto.server import ThreadedMotoServer

    from action_recognition.config import StorageConfig
    from action_recognition.errors import StorageError
    from action_recognition.storage import open_storage
    from tests.support.paths import free_port
    from tests.support.tcpproxy import Proxy

    with reliability.fault("the S3 server down for 2 s, then past the retry budget"):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-access-key")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret-key")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
        server.start()
        # The clients talk to the server through a proxy that the test cuts and restores: the server is "down"
        # without being stopped and restarted on the same port.
        with Proxy.serving(server.get_host_and_port()[1]) as proxy:
            boto3.client("s3", endpoint_url=proxy.url).create_bucket(Bucket="outage")
            store = open_storage(
                StorageConfig(uri="s3://outage/p", endpoint_url=proxy.url, connect_timeout_s=1)
            )
            store.put_bytes("before.txt", b"1")
            proxy.up = False
            proxy.cut()

            def come_back() -> None:
                time.sleep(2.0)
                proxy.up = True

            threading.Thread(target=come_back, daemon=True).start()
            began = time.monotonic()
            store.put_bytes("during-blip.txt", b"2")  # retried until the server is back
            assert time.monotonic() - began >= 1.5
            assert store.get_bytes("during-blip.txt") == b"2"

            proxy.up = False
            proxy.cut()
            impatient = open_storage(
                StorageConfig(
                    uri="s3://outage/p",
                    endpoint_url=proxy.url,
                    max_attempts=2,
                    connect_timeout_s=1,
                    unreachable_s=3,
                )
            )
            try:
                began = time.monotonic()
                with pytest.raises(StorageError, match=r"s3://outage/p/during-outage\.txt"):
                    impatient.put_bytes("during-outage.txt", b"3")
                assert 3 <= time.monotonic() - began < 15, "retried for the window, then gave up"
                proxy.up = True
                assert not impatient.exists("during-outage.txt"), "nothing partial is visible"
                impatient.put_bytes("during-outage.txt", b"3")  # the task's next try
                assert impatient.get_bytes("during-outage.txt") == b"3"
                assert impatient.list() == ["before.txt", "during-blip.txt", "during-outage.txt"]
            finally:
                server.stop()


def test_the_same_shard_twice_at_once_ends_as_one_run(tmp_path: Path, reliability: Reliability) -> None:
    """Airflow may run a task twice at the same time: both finish, storage and ledger end as after one run."""
    import threading

    with reliability.fault("the same download shard twice at once"):
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
        reliability.duplicates(
            "raw objects beyond one run's", len(store.list("raw/")) - len(once.list("raw/"))
        )
        assert store.list("raw/") == once.list("raw/")
        assert {k: v.state for k, v in read_stage(store, "faults", "download").items()} == {
            k: v.state for k, v in read_stage(once, "faults", "download").items()
        }
        left = _leftovers(tmp_path / "twice", tmp_path / "w")
        reliability.leftovers("temp files and job folders", temp_files=len(left))
        assert left == []


def _train_argv(dataset: Path, store: Path, experiment: str) -> list[str]:
    return [sys.executable, "-m", "action_recognition", *train_args(str(dataset), str(store), experiment)]


def _runs(client: object, experiment: str) -> list[object]:
    exp = client.get_experiment_by_name(experiment)  # type: ignore[attr-defined]
    return list(client.search_runs([exp.experiment_id])) if exp else []  # type: ignore[attr-defined]


def test_killed_training_then_retry_equals_a_clean_run(
    tmp_path: Path, synthetic_dataset: Path, mlflow_server: str, reliability: Reliability
) -> None:
    """SIGKILL mid-training leaves a RUNNING MLflow run and a checkpoint; the retry continues both and ends
    exactly where an unbroken training ends: one FINISHED run, the same metrics, the same objects, no job
    folder left."""
    from mlflow import MlflowClient

    with reliability.fault("SIGKILL a training process mid-run, then the retry"):
        client = MlflowClient(mlflow_server)
        env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"), MLFLOW_TRACKING_URI=mlflow_server)
        (tmp_path / "tmp").mkdir()
        killed, clean = tmp_path / "killed", tmp_path / "clean"
        experiment = f"kill-{tmp_path.name}"
        argv = _train_argv(synthetic_dataset, killed, experiment)
        proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + 180
        while (
            not list(killed.glob("models/*/last.pt")) and time.monotonic() < deadline and proc.poll() is None
        ):
            time.sleep(0.05)  # until the first checkpoint is written
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, "the training ended before it could be killed"
        [left_running] = _runs(client, experiment)
        assert left_running.info.status == "RUNNING"  # type: ignore[attr-defined]
        assert list((tmp_path / "tmp").glob("action-recognition/train-*")), (
            "the killed try left its job folder"
        )

        retry = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        assert retry.returncode == 0, retry.stderr[-3000:]
        once = subprocess.run(
            _train_argv(synthetic_dataset, clean, f"clean-{tmp_path.name}"),
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert once.returncode == 0, once.stderr[-3000:]
        after = json.loads(retry.stdout.strip().splitlines()[-1])
        unbroken = json.loads(once.stdout.strip().splitlines()[-1])
        [run] = _runs(client, experiment)
        [clean_run] = _runs(client, f"clean-{tmp_path.name}")
        reliability.duplicates("MLflow runs beyond one per training", len(_runs(client, experiment)) - 1)
        assert run.info.run_id == left_running.info.run_id, "the retry continued the killed try's run"  # type: ignore[attr-defined]
        assert run.info.status == clean_run.info.status == "FINISHED"  # type: ignore[attr-defined]
        assert int(run.data.tags["ar.resumed_from_epoch"]) > 0  # type: ignore[attr-defined]
        assert after["metrics"] == unbroken["metrics"], (
            "the resumed training ends exactly like an unbroken one"
        )
        assert after["epochs_run"] == unbroken["epochs_run"] == 60
        assert sorted(p.relative_to(killed).as_posix() for p in killed.rglob("*") if p.is_file()) == sorted(
            p.relative_to(clean).as_posix() for p in clean.rglob("*") if p.is_file()
        )
        left = _leftovers(killed, tmp_path / "tmp") + [
            str(p) for p in (tmp_path / "tmp").glob("action-recognition/train-*")
        ]
        reliability.leftovers("training job folders and temp files", temp_files=len(left))
        assert left == []


def test_mlflow_down_during_logging(
    tmp_path: Path, synthetic_dataset: Path, reliability: Reliability
) -> None:
    """The tracking server dies mid-training: the try fails within its retry budget with a clear error (no
    hang), the checkpoints stay in storage; with the server back, the retry resumes them in the same run,
    which ends FINISHED, and registering it gives one version."""
    from mlflow import MlflowClient

    from action_recognition.config import RegistryConfig
    from action_recognition.registry import register_run
    from tests.support.mlflow import RestartableMlflow

    with reliability.fault("the MLflow server down during training's logging"):
        (tmp_path / "mlflow").mkdir()
        server = RestartableMlflow(tmp_path / "mlflow").start()
        store = tmp_path / "store"
        env = dict(
            os.environ,
            TMPDIR=str(tmp_path),
            MLFLOW_TRACKING_URI=server.uri,
            MLFLOW_HTTP_REQUEST_MAX_RETRIES="2",
            MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1",
            MLFLOW_HTTP_REQUEST_TIMEOUT="5",
        )
        argv = _train_argv(synthetic_dataset, store, "mlflow-down")
        try:
            proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 180
            while (
                not list(store.glob("models/*/last.pt"))
                and time.monotonic() < deadline
                and proc.poll() is None
            ):
                time.sleep(0.05)
            server.stop()
            began = time.monotonic()
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 2, err[-3000:]
            assert time.monotonic() - began < 120, "the failing try ends within its retry budget"
            summary = json.loads(out.strip().splitlines()[-1])
            assert summary["error_type"] == "TrainError" and "MLflow" in summary["error"], summary
            assert "Traceback" not in err
            assert list(store.glob("models/*/last.pt")), "the checkpoint survives in storage"

            server.start()
            retry = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
            assert retry.returncode == 0, retry.stderr[-3000:]
            result = json.loads(retry.stdout.strip().splitlines()[-1])
            client = MlflowClient(server.uri)
            runs = client.search_runs([client.get_experiment_by_name("mlflow-down").experiment_id])
            reliability.duplicates("MLflow runs beyond one after the outage", len(runs) - 1)
            assert [r.info.status for r in runs] == ["FINISHED"] and runs[0].info.run_id == result["run_id"]
            assert result["epochs_run"] == 60 and result["model_uri"]
            reg = register_run(result["run_id"], "outage-keypoint", RegistryConfig(), tracking_uri=server.uri)
            again = register_run(
                result["run_id"], "outage-keypoint", RegistryConfig(), tracking_uri=server.uri
            )
            assert reg.version == again.version == "1"
        finally:
            server.stop()
