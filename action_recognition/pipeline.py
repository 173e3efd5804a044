"""Small functions the DAGs call between steps: shard plans, the latest dataset, the run summary.

They need only the light part of the package (storage, ledger), so the Airflow workers run them in-process.
"""

from __future__ import annotations

import json
import math
from typing import Any

from action_recognition.layout import latest_pointer_key, manifest_key
from action_recognition.ledger import status
from action_recognition.manifest import read_plan_info
from action_recognition.storage import Storage


def shard_plan(rows: int, clips_per_shard: int, max_shards: int) -> list[str]:
    """``["0/N", ..., "N-1/N"]``: enough shards for ``clips_per_shard`` each, never more than
    ``max_shards``."""
    count = max(1, min(max_shards, math.ceil(max(rows, 1) / max(clips_per_shard, 1))))
    return [f"{i}/{count}" for i in range(count)]


def write_latest(storage: Storage, dataset: str, kind: str, info: dict[str, Any]) -> bool:
    """Point ``latest-<kind>.json`` at a built dataset file (content-keyed: unchanged inputs write
    nothing)."""
    return storage.put_bytes_if_changed(
        latest_pointer_key(dataset, kind), json.dumps(info, sort_keys=True).encode()
    )


def latest_dataset(storage: Storage, dataset: str, kind: str = "keypoints") -> dict[str, Any] | None:
    """The latest built dataset of ``kind`` (what the retraining DAG trains on); None when none was built
    yet."""
    key = latest_pointer_key(dataset, kind)
    if not storage.exists(key):
        return None
    info: dict[str, Any] = json.loads(storage.get_bytes(key))
    return info


def pipeline_summary(storage: Storage, dataset: str, results: dict[str, Any]) -> dict[str, Any]:
    """Counts per ledger state, the metrics of each trained model, and whether each was promoted."""
    report = status(storage, dataset)
    models = {}
    for family in ("keypoint", "rgb"):
        trained = results.get(f"train_{family}") or {}
        promoted = results.get(f"promote_{family}") or {}
        registered = results.get(f"register_{family}") or {}
        if trained:
            models[family] = {
                "arch": trained.get("arch"),
                "run_id": trained.get("run_id"),
                "test_top1": trained.get("test_top1"),
                "test_top5": trained.get("test_top5"),
                "mean_class_acc": trained.get("mean_class_acc"),
                "untrained": trained.get("untrained"),
                "registered": registered.get("registry_uri"),
                "promoted": promoted.get("promoted"),
                "promotion_reason": promoted.get("reason"),
            }
    return {"dataset": dataset, "rows": report.rows, "states": report.states, "models": models}


def manifest_info(storage: Storage, dataset: str) -> dict[str, Any] | None:
    """The manifest URI, its sha256 and the availability counts of a planned dataset (for the model card and
    the MLflow dataset input); None when ``dataset`` was not planned in ``storage``."""
    plan = read_plan_info(storage, dataset)
    if plan is None:
        return None
    return {
        "uri": storage.key_uri(manifest_key(dataset)),
        "sha256": plan.manifest_sha256,
        "availability": status(storage, dataset).states,
    }


def manifest_for(
    storage: Storage, dataset: str | None, manifest_uri: str | None = None
) -> dict[str, Any] | None:
    """What a training records of its data's manifest: :func:`manifest_info` of ``dataset`` when it was
    planned in ``storage``, with ``manifest_uri`` (when given) naming the manifest instead."""
    manifest = manifest_info(storage, dataset) if dataset else None
    if manifest_uri:
        manifest = {**(manifest or {}), "uri": manifest_uri}
    return manifest
