"""``python -m devtools smoke`` (``make smoke-online``): a networked machine's first real run, small.

The real Kinetics-700-2020 validation CSV, 3 classes x 3 clips, real YouTube (yt-dlp with its JavaScript
runtime), the real pose model and RGB backbone pulled into storage first (``weights pull``, as the stack's
init does), real training, through the same ``kinetics_pipeline`` DAG as everything else (``airflow dags
test``, local runner). It prints the seconds of each step, the ledger and the champions. Every source is a
parameter, so its offline test points the same code at the local video server and weight files made there.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from action_recognition.config import StorageConfig
from action_recognition.storage import open_storage
from action_recognition.weights import DEFAULTS, pull
from devtools.demo import dags_test, demo_summary, local_airflow

log = logging.getLogger(__name__)

K700_VAL = "https://s3.amazonaws.com/kinetics/700_2020/annotations/val.csv"
SMOKE_CLASSES = ("abseiling", "archery", "juggling balls")
YOUTUBE = "https://www.youtube.com/watch?v={youtube_id}"


@dataclass
class SmokeResult:
    workdir: str
    step_seconds: dict[str, float]
    summary: dict[str, Any]
    weights: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "workdir": self.workdir,
            "step_seconds": self.step_seconds,
            "weights": self.weights,
            **self.summary,
        }

    def table(self) -> str:
        lines = ["step seconds (mapped tasks summed over their shards):"]
        lines += [f"  {step:<24} {sec:8.1f}" for step, sec in self.step_seconds.items()]
        lines.append(f"ledger: {self.summary['rows']} rows, states {self.summary['states']}")
        for info in self.summary.get("models", {}).values():
            top1 = info["metrics"].get("test_top1", float("nan"))
            flag = " (UNTRAINED)" if info["untrained"] else ""
            lines.append(
                f"champion {info['champion']} version {info['version']}{flag}: test top-1 {top1:.3f}"
            )
        return "\n".join(lines)


def _cli_json(argv: list[str], env: dict[str, str]) -> Any:
    """The JSON an Airflow CLI command prints with ``-o json`` (its last line: warnings may come before
    it)."""
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=120).stdout
    return json.loads([line for line in out.splitlines() if line.startswith(("[", "{"))][-1])


def step_seconds(env: dict[str, str]) -> dict[str, float]:
    """Seconds per task of the last kinetics_pipeline run, from Airflow's own records (mapped tasks
    summed)."""
    airflow = [sys.executable, "-m", "airflow"]
    run_id = _cli_json([*airflow, "dags", "list-runs", "kinetics_pipeline", "-o", "json"], env)[0]["run_id"]
    tis = _cli_json([*airflow, "tasks", "states-for-dag-run", "kinetics_pipeline", run_id, "-o", "json"], env)
    seconds: dict[str, float] = defaultdict(float)
    order: list[tuple[str, str]] = []
    for ti in tis:
        if ti["start_date"] and ti["end_date"]:
            start, end = datetime.fromisoformat(ti["start_date"]), datetime.fromisoformat(ti["end_date"])
            seconds[ti["task_id"]] += (end - start).total_seconds()
            order.append((ti["start_date"], ti["task_id"]))
    ranked = list(dict.fromkeys(task for _, task in sorted(order)))
    return {task: round(seconds[task], 1) for task in ranked}


def run_smoke(
    workdir: Path,
    *,
    annotations: str = K700_VAL,
    classes: tuple[str, ...] = SMOKE_CLASSES,
    per_class: int = 3,
    url_template: str = YOUTUBE,
    pose_source: str = DEFAULTS["yolo11n-pose.pt"],
    backbone_source: str = DEFAULTS["resnet18-f37072fd.pth"],
    epochs: int = 30,
    storage_uri: str | None = None,
    tracking_uri: str | None = None,
    dataset: str = "smoke",
    clips_per_shard: int = 25,
    extra_env: dict[str, str] | None = None,
    timeout_s: float = 3600,
) -> SmokeResult:
    """The run; ``storage_uri`` (default: ``workdir/storage``) and ``tracking_uri`` (default: a SQLite store
    in ``workdir``) point it at a deployment's own MinIO and MLflow (their keys from the environment)."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    storage_uri = storage_uri or str(workdir / "storage")
    store = open_storage(StorageConfig(uri=storage_uri))
    pose = pull(pose_source, pose_source.rsplit("/", 1)[-1], store)
    backbone = pull(backbone_source, backbone_source.rsplit("/", 1)[-1], store)
    tracking = {"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {}
    env = local_airflow(workdir, AR__TRAIN__BACKBONE_WEIGHTS=backbone.uri, **tracking, **(extra_env or {}))
    conf = {
        "annotations": [annotations],
        "classes": list(classes),
        "class_contains": None,
        "per_class": per_class,
        "clips_per_shard": clips_per_shard,
        "url_template": url_template,
        "pose_weights": pose.uri,
        "pose_untrained": False,
        "rgb_allow_untrained": False,
        "epochs": epochs,
        "storage_uri": storage_uri,
        "dataset": dataset,
        "runner": "local",
        "gpu_enabled": False,
    }
    dags_test(workdir, env, conf, timeout_s)
    summary = demo_summary(store, env["MLFLOW_TRACKING_URI"], dataset)
    weights = {"pose": pose.uri, "backbone": backbone.uri}
    return SmokeResult(str(workdir), step_seconds(env), summary, weights)
