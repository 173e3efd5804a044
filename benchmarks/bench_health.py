"""The dataset health page at Kinetics scale: what a request costs when the steps' summary is read (one
object, rendered) against recomputing it from every ledger shard per request (the baseline), in one run.

A generated dataset in a local storage folder: ``--classes`` x ``--per-class`` clips over 64 shards, every
stage's ledger written, 10% of downloads unavailable and 2% of clips bad_media. Goal: a page from the summary
in under a second for thousands of clips. Run: ``python -m benchmarks.bench_health [--classes 700 --per-class
10]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from action_recognition.health import dataset_health, read_health, write_health
from action_recognition.health_page import render_page
from action_recognition.layout import manifest_key
from action_recognition.ledger import LedgerRecord, shard_rows, write_shard
from action_recognition.manifest import MANIFEST_COLUMNS, csv_bytes
from action_recognition.storage import LocalStorage


def _make(store: LocalStorage, classes: int, per_class: int, shards: int = 64) -> int:
    rows = [
        {
            "clip_id": f"v{k:04d}{i:06d}_000000_000010",
            "youtube_id": f"v{k:04d}{i:06d}",
            "time_start": "0",
            "time_end": "10",
            "label": f"class {k:03d}",
            "split": "train",
        }
        for k in range(classes)
        for i in range(per_class)
    ]
    store.put_bytes(
        manifest_key("big"), csv_bytes(MANIFEST_COLUMNS, ([r[c] for c in MANIFEST_COLUMNS] for r in rows))
    )
    for s in range(shards):
        part = shard_rows(rows, (s, shards))
        down = [
            LedgerRecord(
                r["clip_id"],
                r["label"],
                "train",
                "unavailable" if j % 10 == 0 else "ok",
                reason="HTTP 404" if j % 10 == 0 else "",
            )
            for j, r in enumerate(part)
        ]
        fetched = [r for r in down if r.state == "ok"]
        clips = [
            LedgerRecord(r.clip_id, r.label, "train", "bad_media" if j % 50 == 0 else "ok")
            for j, r in enumerate(fetched)
        ]
        poses = [LedgerRecord(r.clip_id, r.label, "train", "ok") for r in clips if r.state == "ok"]
        write_shard(store, "big", "download", (s, shards), down)
        write_shard(store, "big", "clip", (s, shards), clips)
        write_shard(store, "big", "pose/yolo11n-pose-x", (s, shards), poses)
    return len(rows)


def _median(call: object, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        call()  # type: ignore[operator]
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", type=int, default=700)
    parser.add_argument("--per-class", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-health-") as tmp:
        store = LocalStorage(Path(tmp))
        clips = _make(store, args.classes, args.per_class)
        write_health(store, dataset_health(store, "big"))
        recompute = _median(
            lambda: render_page(dataset_health(store, "big").summary() | {"run_id": ""}, ["big"]), 3
        )
        served = _median(lambda: render_page(read_health(store, "big"), ["big"]))
        size = len(render_page(read_health(store, "big"), ["big"]))
    print(
        f"dataset health page, {clips} clips in {args.classes} classes, 64 shards x 3 stages (local storage):"
    )
    print(f"  recomputed from the ledgers per request (baseline)  {recompute * 1000:8.0f} ms")
    print(
        f"  read from health.json and rendered (the page)       {served * 1000:8.0f} ms  "
        f"({recompute / served:.1f}x "
        f"faster; {size / 1e6:.1f} MB of HTML; goal < 1000 ms)"
    )


if __name__ == "__main__":
    main()
