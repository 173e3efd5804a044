"""Dataset health: how much of each class could be had, why the rest was lost, and how the champions did.

:func:`dataset_health` computes it from storage (the manifest, ``plan.json`` and every stage's ledger) and
from the registry (each family champion's per-class test accuracy, the ``per_class.csv`` of its run). Its
``status`` part is ``action-recognition status --json`` itself (:func:`action_recognition.ledger.status`): one
function, the same numbers. The pipeline's summary task writes it to ``health/<dataset>.json``
(:func:`write_health`, when the numbers changed) at the end of each run, and ``action-recognition health
--write`` does the same by hand; the Airflow UI page (``plugins/ar_provider/health_app.py``) reads that one
object per request, never every ledger shard.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import tempfile
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from action_recognition.layout import health_key, ledger_prefix
from action_recognition.ledger import PENDING, LedgerRecord, read_stage, status
from action_recognition.manifest import read_manifest, read_plan_info
from action_recognition.names import FAMILIES, model_name
from action_recognition.storage import Storage

log = logging.getLogger(__name__)

SAMPLES_PER_STATE = 5


@dataclass
class HealthReport:
    """What the health page shows; ``summary()`` is its JSON (``health.json``)."""

    dataset: str
    generated_at: str
    status: dict[str, Any]  # action-recognition status --json
    stages: dict[
        str, dict[str, dict[str, int]]
    ]  # download | clip | pose -> class -> state -> clips that reached it
    classes: list[
        dict[str, Any]
    ]  # label, planned, target, usable, lost (per final state), test accuracy per family
    top_ups: list[
        dict[str, Any]
    ]  # the plan, then each top-up: the manifest version and clips added per class
    failures: dict[str, list[dict[str, str]]]  # state -> sampled rows: clip, class, stage, reason
    champions: dict[str, dict[str, Any]] = field(default_factory=dict)  # family -> model, version, test top-1
    pose_tag: str = ""
    #: family -> the newest retrain report (:func:`action_recognition.retrain_report.latest_reports`)
    retrains: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: family -> the review of its latest dataset (:mod:`action_recognition.review`); absent: not reviewed
    reviews: dict[str, dict[str, Any]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def _pose_stage(storage: Storage, dataset: str) -> tuple[str, dict[str, LedgerRecord]]:
    """The pose ledger with the most records (a dataset is normally posed by one model)."""
    prefix = ledger_prefix(dataset, "pose")
    tags = sorted(
        {key[len(prefix) :].split("/", 1)[0] for key in storage.list(prefix) if key.endswith(".csv")}
    )
    best: tuple[str, dict[str, LedgerRecord]] = ("", {})
    for tag in tags:
        records = read_stage(storage, dataset, f"pose/{tag}")
        if len(records) > len(best[1]):
            best = (tag, records)
    return best


def champion_accuracy(dataset: str, tracking_uri: str | None = None) -> dict[str, dict[str, Any]]:
    """family -> the champion's model, version, test top-1 and per-class test accuracy (its run's
    per_class.csv); families without a champion are left out, and an unreachable registry gives nothing (the
    page says so)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    out: dict[str, dict[str, Any]] = {}
    try:
        client = MlflowClient(tracking_uri)
    except MlflowException as exc:  # e.g. a tracking URI of a store this MLflow refuses
        log.warning("the registry at %s cannot be read: %s", tracking_uri, str(exc)[:200])
        return out
    for family in FAMILIES:
        name = model_name(dataset, family)
        try:
            version = client.get_model_version_by_alias(name, "champion")
            with tempfile.TemporaryDirectory(prefix="ar-health-") as tmp:
                path = Path(client.download_artifacts(str(version.run_id), "per_class.csv", tmp))
                rows = list(csv.DictReader(io.StringIO(path.read_text())))
        except (MlflowException, OSError) as exc:
            log.info("no per-class accuracy for %s@champion: %s", name, str(exc)[:200])
            continue
        metrics = json.loads(version.tags.get("ar.metrics", "{}") or "{}")
        accuracy = {r["class"]: float(r["accuracy"]) for r in rows if r.get("accuracy")}
        out[family] = {
            "model": f"models:/{name}/{version.version}",
            "test_top1": metrics.get("test_top1"),
            "untrained": version.tags.get("ar.untrained") == "true",
            "per_class_acc": accuracy,
        }
    return out


def dataset_health(
    storage: Storage,
    dataset: str,
    *,
    champions: dict[str, dict[str, Any]] | None = None,
    retrains: dict[str, dict[str, Any]] | None = None,
    reviews: dict[str, dict[str, Any]] | None = None,
    samples: int = SAMPLES_PER_STATE,
) -> HealthReport:
    """The health of ``dataset`` (see the module docstring); ``champions`` from :func:`champion_accuracy`."""
    report = status(storage, dataset)
    rows = read_manifest(storage, dataset)
    plan = read_plan_info(storage, dataset)
    label_of = {r["clip_id"]: r["label"] for r in rows}
    pose_tag, poses = _pose_stage(storage, dataset)
    ledgers = {
        "download": read_stage(storage, dataset, "download"),
        "clip": read_stage(storage, dataset, "clip"),
        "pose": poses,
    }
    stages: dict[str, dict[str, dict[str, int]]] = {}
    failures: dict[str, list[dict[str, str]]] = defaultdict(list)
    reached = dict.fromkeys(label_of, True)  # a clip reaches a stage when the stage before it succeeded
    for stage, records in ledgers.items():
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for cid, label in label_of.items():
            if not reached[cid]:
                continue
            rec = records.get(cid)
            reached[cid] = rec is not None and rec.state == "ok"
            counts[label][rec.state if rec else PENDING] += 1
            if rec is not None and rec.state != "ok" and len(failures[rec.state]) < samples:
                failures[rec.state].append(
                    {"clip_id": cid, "class": label, "stage": stage, "reason": rec.reason[:300]}
                )
        stages[stage] = {label: dict(c) for label, c in sorted(counts.items())}
    champions = champions or {}
    classes = []
    for label, finals in report.per_class.items():
        posed = stages["pose"].get(label, {}).get("ok", 0) if poses else None
        classes.append(
            {
                "class": label,
                "planned": sum(finals.values()),
                "target": (plan.targets.get(label) if plan else None),
                "usable": finals.get("ok", 0) if posed is None else min(finals.get("ok", 0), posed),
                "states": finals,
                "test_accuracy": {f: c["per_class_acc"].get(label) for f, c in champions.items()},
            }
        )
    history = []
    if plan is not None:
        added = sum(n for up in plan.top_ups for n in (up.get("added") or {}).values())
        history.append(
            {
                "version": 0,
                "what": "plan",
                "rows": plan.rows - added,
                "manifest_sha256": (
                    plan.top_ups[0]["previous_manifest_sha256"] if plan.top_ups else plan.manifest_sha256
                ),
            }
        )
        for i, up in enumerate(plan.top_ups, start=1):
            history.append(
                {
                    "version": i,
                    "what": "top-up",
                    "added": up.get("added", {}),
                    "previous_manifest_sha256": up.get("previous_manifest_sha256", ""),
                }
            )
        history[-1]["manifest_sha256"] = plan.manifest_sha256
    return HealthReport(
        dataset,
        datetime.now(UTC).isoformat(timespec="seconds"),
        report.summary(),
        stages,
        classes,
        history,
        dict(failures),
        {f: {k: v for k, v in c.items() if k != "per_class_acc"} for f, c in champions.items()},
        pose_tag,
        retrains or {},
        reviews or {},
    )


#: What says when and by whom a health summary was written, not what it says.
STAMP = ("generated_at", "dag_id", "run_id")


def write_health(storage: Storage, report: HealthReport, *, dag_id: str = "", run_id: str = "") -> str:
    """Publish ``health/<dataset>.json`` when its numbers changed (content-keyed: a re-run that changed
    nothing writes nothing, and the file keeps saying when and by which run they last changed); its URI."""
    key = health_key(report.dataset)
    new = {**report.summary(), "dag_id": dag_id, "run_id": run_id}
    old = read_health(storage, report.dataset)
    if old is None or {k: v for k, v in old.items() if k not in STAMP} != {
        k: v for k, v in new.items() if k not in STAMP
    }:
        storage.put_bytes(key, json.dumps(new, sort_keys=True, indent=1).encode())
    return storage.key_uri(key)


def publish_health(
    storage: Storage, dataset: str, *, dag_id: str = "", run_id: str = "", tracking_uri: str | None = None
) -> str:
    """Compute (:func:`full_health`) and write the dataset's health; its URI."""
    return write_health(storage, full_health(storage, dataset, tracking_uri), dag_id=dag_id, run_id=run_id)


def full_health(storage: Storage, dataset: str, tracking_uri: str | None = None) -> HealthReport:
    """The dataset's health with the champions and the newest retrain reports from the registry and the
    reviews of its latest dataset files: what the health page shows."""
    return dataset_health(
        storage,
        dataset,
        champions=champion_accuracy(dataset, tracking_uri),
        retrains=retrain_reports(dataset, tracking_uri),
        reviews=latest_reviews(storage, dataset),
    )


def latest_reviews(storage: Storage, dataset: str) -> dict[str, dict[str, Any]]:
    """Family -> the review of its latest dataset (a family whose latest file was not reviewed is absent)."""
    from action_recognition.pipeline import latest_dataset
    from action_recognition.review import family_of_kind, review_of

    out = {}
    for kind in ("keypoints", "frames"):
        latest = latest_dataset(storage, dataset, kind)
        found = review_of(storage, dataset, latest["dataset_uri"]) if latest else None
        if found:
            out[family_of_kind(kind)] = found.summary()
    return out


def retrain_reports(dataset: str, tracking_uri: str | None = None) -> dict[str, dict[str, Any]]:
    """The newest retrain report of each family; nothing when the registry cannot be read (the page says
    so)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from action_recognition.retrain_report import latest_reports

    try:
        return latest_reports(MlflowClient(tracking_uri), dataset)
    except (MlflowException, OSError) as exc:
        log.info("no retrain reports for %s: %s", dataset, str(exc)[:200])
        return {}


def live_health(storage: Storage, dataset: str, stored: dict[str, Any] | None) -> dict[str, Any]:
    """The health computed now from the ledgers (a run in progress), with the champions and their per-class
    accuracy carried over from the ``stored`` summary (the registry is read when a run writes it, not per
    request)."""
    live = dataset_health(storage, dataset).summary()
    if stored:
        accuracy = {c["class"]: c.get("test_accuracy", {}) for c in stored.get("classes", [])}
        for c in live["classes"]:
            c["test_accuracy"] = accuracy.get(c["class"], {})
        live["champions"] = stored.get("champions", {})
        live["retrains"] = stored.get("retrains", {})
        live["reviews"] = stored.get("reviews", {})
    return {**live, "live": True}


def read_health(storage: Storage, dataset: str) -> dict[str, Any] | None:
    """``health/<dataset>.json`` as written, or None."""
    key = health_key(dataset)
    if not storage.exists(key):
        return None
    data: dict[str, Any] = json.loads(storage.get_bytes(key))
    return data


def datasets_with_health(storage: Storage) -> list[str]:
    return sorted(k[len("health/") : -len(".json")] for k in storage.list("health/") if k.endswith(".json"))
