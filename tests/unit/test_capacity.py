"""The capacity plan: its arithmetic, the ledger's figures taking over the defaults, and the CLI's JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from action_recognition.capacity import CapacityInputs, capacity, from_ledger
from action_recognition.cli import app
from action_recognition.ledger import LedgerRecord, write_shard
from action_recognition.storage import LocalStorage


def test_the_arithmetic() -> None:
    i = CapacityInputs(
        clips=10_000,
        availability=0.5,
        download_mb_per_clip=2.0,
        frames_per_clip=100,
        pose_ms_per_frame=1.0,
        rate_per_hour_per_ip=100,
        download_slots=4,
        download_s_per_clip=36,
    )
    r = capacity(i)
    assert r["usable_clips"] == 5000
    assert r["download_days"] == round(10_000 / 100 / 24, 2) and r["download_bound_by"] == "rate limit"
    assert r["storage_gb"]["raw"] == 10.0  # 5,000 fetched x 2 MB
    assert r["pose_gpu_hours"] == round(5000 * 100 * 1.0 / 3.6e6, 1)
    assert r["ips_for_a_week"] == 1  # 10,000 / (168 h x 100 an hour) < 1
    wide = capacity(
        CapacityInputs(
            clips=10_000, rate_per_hour_per_ip=100, ips=100, download_slots=4, download_s_per_clip=36
        )
    )
    assert wide["download_bound_by"] == "download pool" and wide["download_days"] == round(
        10_000 / 400 / 24, 2
    )
    double = capacity(CapacityInputs(clips=20_000))
    single = capacity(CapacityInputs(clips=10_000))
    assert double["pose_gpu_hours"] == pytest.approx(2 * single["pose_gpu_hours"], abs=0.1)
    assert set(double["train_gpu_hours"]) == {"ddnet", "tsn-resnet18"}
    with pytest.raises(ValueError, match="at least 1"):
        capacity(CapacityInputs(clips=0))


def test_the_ledger_takes_over_the_defaults(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    write_shard(
        store,
        "ds",
        "download",
        (0, 1),
        [
            LedgerRecord("a", "x", "train", "ok", bytes=3_000_000, seconds=4.0),
            LedgerRecord("b", "x", "train", "ok", bytes=1_000_000, seconds=2.0),
            LedgerRecord("c", "x", "train", "unavailable", reason="gone"),
            LedgerRecord("d", "x", "train", "unavailable", reason="gone"),
        ],
    )
    write_shard(store, "ds", "clip", (0, 1), [LedgerRecord("a", "x", "train", "ok", seconds=0.5)])
    i = from_ledger(store, "ds", CapacityInputs(clips=100))
    assert i.availability == 0.5 and i.download_mb_per_clip == 2.0 and i.download_s_per_clip == 3.0
    assert i.clip_s_per_clip == 0.5 and "ledger of ds" in i.sources["download_mb_per_clip"]
    assert (
        i.pose_ms_per_frame == CapacityInputs(clips=1).pose_ms_per_frame
    )  # not in a ledger: the benchmark's


def test_the_command() -> None:
    out = CliRunner().invoke(app, ["capacity", "--clips", "650000", "--classes", "700", "--json"])
    assert out.exit_code == 0, out.output
    r = json.loads(out.output.strip().splitlines()[-1])
    assert {
        "download_days",
        "storage_gb",
        "pose_gpu_hours",
        "train_gpu_hours",
        "celery_workers_for_a_week",
    } <= set(r)
    assert set(r["storage_gb"]) == {"raw", "clips", "keypoints", "datasets", "total"}
    # recipe=auto: 650,000 clips are far over auto_fixed_max_clips, so one keypoint model; frames refit (1 + 3)
    assert r["inputs"]["trainings_per_model"] == {"ddnet": 1, "tsn-resnet18": 4}, r["inputs"]
    assert "bench_pose" in r["sources"]["pose_ms_per_frame"]
