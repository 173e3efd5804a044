"""Dataset health from storage: the status part is `status` itself, stages count the clips that reached them,
failures keep their reasons, the page escapes what came from data."""

from __future__ import annotations

from pathlib import Path

from action_recognition.health import (
    dataset_health,
    datasets_with_health,
    live_health,
    read_health,
    write_health,
)
from action_recognition.health_page import render_page
from action_recognition.layout import manifest_key
from action_recognition.ledger import LedgerRecord, status, write_shard
from action_recognition.manifest import MANIFEST_COLUMNS, csv_bytes
from action_recognition.storage import LocalStorage

CLASSES = ["salsa dancing", "<script>alert(1)</script>"]


def _dataset(tmp_path: Path) -> LocalStorage:
    store = LocalStorage(tmp_path)
    rows = [
        (f"vid{i:08d}_000000_000010", f"vid{i:08d}", "0", "10", CLASSES[i % 2], "train") for i in range(6)
    ]
    store.put_bytes(manifest_key("d"), csv_bytes(MANIFEST_COLUMNS, rows))
    ids = [r[0] for r in rows]
    downloads = [LedgerRecord(c, CLASSES[i % 2], "train", "ok") for i, c in enumerate(ids[:5])]
    downloads.append(LedgerRecord(ids[5], CLASSES[1], "train", "unavailable", reason="HTTP 404 <b>gone</b>"))
    write_shard(store, "d", "download", (0, 1), downloads)
    clips = [LedgerRecord(c, CLASSES[i % 2], "train", "ok") for i, c in enumerate(ids[:4])]
    clips.append(LedgerRecord(ids[4], CLASSES[0], "train", "bad_media", reason="zero frames"))
    write_shard(store, "d", "clip", (0, 1), clips)
    write_shard(
        store,
        "d",
        "pose/yolo-x",
        (0, 1),
        [LedgerRecord(c, CLASSES[i % 2], "train", "ok") for i, c in enumerate(ids[:3])],
    )
    return store


def test_health_is_status_plus_the_stages_and_reasons(tmp_path: Path) -> None:
    store = _dataset(tmp_path)
    report = dataset_health(
        store,
        "d",
        champions={
            "keypoint": {
                "model": "models:/d-keypoint/1",
                "test_top1": 0.5,
                "per_class_acc": {CLASSES[0]: 0.75},
            }
        },
    )
    assert report.status == status(store, "d").summary(), "one function: the status part is status --json"
    assert report.stages["download"][CLASSES[1]] == {"ok": 2, "unavailable": 1}
    assert report.stages["clip"][CLASSES[1]] == {"ok": 2}, "the unavailable clip never reached the clip stage"
    assert report.stages["pose"][CLASSES[0]] == {"ok": 2}, "the bad_media clip never reached pose"
    assert report.stages["pose"][CLASSES[1]] == {"ok": 1, "pending": 1}
    assert report.pose_tag == "yolo-x"
    by_class = {c["class"]: c for c in report.classes}
    assert by_class[CLASSES[0]]["usable"] == 2 and by_class[CLASSES[0]]["test_accuracy"] == {"keypoint": 0.75}
    assert {f["clip_id"] for f in report.failures["unavailable"]} == {"vid00000005_000000_000010"}
    assert report.failures["bad_media"][0]["reason"] == "zero frames"
    assert "per_class_acc" not in report.champions["keypoint"]

    write_health(store, report, dag_id="kinetics_pipeline", run_id="manual__1")
    assert datasets_with_health(store) == ["d"] and read_health(store, "d")["run_id"] == "manual__1"
    again = dataset_health(
        store,
        "d",
        champions={
            "keypoint": {
                "model": "models:/d-keypoint/1",
                "test_top1": 0.5,
                "per_class_acc": {CLASSES[0]: 0.75},
            }
        },
    )
    write_health(store, again, dag_id="kinetics_pipeline", run_id="manual__2")
    assert read_health(store, "d")["run_id"] == "manual__1", (
        "unchanged numbers: nothing rewritten (content-keyed)"
    )
    html = render_page(read_health(store, "d"), ["d"])
    assert "<script>alert" not in html and "&lt;script&gt;" in html and "&lt;b&gt;gone" in html
    assert "unavailable" in html and "zero frames" in html and "models:/d-keypoint/1" in html

    # A run in progress: the ledgers move on, the page can recompute them now and keeps the champions'
    # accuracy.
    write_shard(
        store,
        "d",
        "pose/yolo-x",
        (0, 1),
        [LedgerRecord(f"vid{i:08d}_000000_000010", CLASSES[i % 2], "train", "ok") for i in range(4)],
    )
    live = live_health(store, "d", read_health(store, "d"))
    assert live["live"] and live["stages"]["pose"][CLASSES[1]] == {"ok": 2}
    assert {c["class"]: c["test_accuracy"] for c in live["classes"]}[CLASSES[0]] == {"keypoint": 0.75}
    assert "now, from the ledgers" in render_page(live, ["d"])
