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


def test_every_ledger_state_has_a_colour_and_the_page_shows_a_review_and_a_report() -> None:
    """A state added to the ledger (``excluded``) must render: the page draws every state with its colour; the
    review and retrain-report sections render from what the steps store."""
    from action_recognition.health_page import COLORS
    from action_recognition.ledger import PENDING, STATES

    assert set(STATES) | {PENDING} <= set(COLORS)
    item = {
        "clip_id": "c1",
        "label": "tap",
        "split": "train",
        "suggested": "salsa",
        "suggested_prob": 0.8,
        "given_prob": 0.1,
        "label_quality": 0.1,
        "label_issue": True,
        "joints_seen": 0.9,
        "mean_conf": 0.7,
        "empty_frames": 0.0,
        "why": ["label: out of sample 'tap' 0.10 and 'salsa' 0.80"],
        "thumbnail": "thumbnails/yolo11n-pose-abcd1234-i640-fall-m2/c1.jpg",
    }
    review = {
        "dataset": "d",
        "dataset_uri": "/s/datasets/d/keypoints-1.npz",
        "arch": "ddnet",
        "folds": 5,
        "epochs": 80,
        "clips": 40,
        "listed": 1,
        "label_issues": 1,
        "poor_poses": 0,
        "note": "",
        "per_class": {"tap": [item]},
    }
    frames_item = {**item, "joints_seen": None, "mean_conf": None, "empty_frames": None, "thumbnail": ""}
    rgb = {**review, "family": "rgb", "arch": "tsn-resnet18", "per_class": {"tap": [frames_item]}}
    report = {
        "decision": "kept the champion",
        "reason": "test_top1 0.5 does not beat 0.6",
        "champion": {"version": "1", "dataset_uri": "/s/a.npz", "epochs": "4"},
        "challenger": {"version": "2", "dataset_uri": "/s/b.npz", "epochs": "4"},
        "recipe": {"source": "champion", "champion_run": "r1", "arch": "stgcn"},
        "compared_on": "the same test set",
        "clips": {"tap": {"champion": 4, "challenger": 3, "change": -1}},
        "per_class": {"tap": {"champion": 0.5, "challenger": 0.25}},
    }
    health = {
        "dataset": "d",
        "generated_at": "2026-12-07T00:00:00+00:00",
        "status": {
            "rows": 2,
            "states": {"ok": 1, "excluded": 1},
            "per_class": {"tap": {"ok": 1, "excluded": 1}},
        },
        "stages": {},
        "classes": [
            {"class": "tap", "planned": 2, "target": 2, "usable": 1, "states": {"ok": 1, "excluded": 1}}
        ],
        "top_ups": [],
        "failures": {},
        "champions": {},
        "reviews": {"keypoint": review, "rgb": rgb},
        "retrains": {"keypoint": report},
    }
    page = render_page(health, ["d"])
    assert "excluded" in page and "<table id=review-keypoint" in page and "salsa (0.80)" in page
    assert "<table id=review-rgb" in page and "poor poses" not in page.split("<h3>rgb</h3>")[1][:300]
    legacy = render_page({**health, "reviews": None, "review": review}, ["d"])  # a summary of before
    assert "<table id=review-keypoint" in legacy and "review-rgb" not in legacy
    assert '<img class=thumb src="thumbnails/yolo11n-pose-abcd1234-i640-fall-m2/c1.jpg"' in page, (
        "the evidence, relative to the page: the health app serves it from storage"
    )
    assert "retrain-keypoint" in page and "-1" in page and "champion run <code>r1</code>" in page
