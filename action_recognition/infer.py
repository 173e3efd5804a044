"""Batch inference (the ``kinetics_infer`` DAG): the videos under a storage prefix -> one CSV of labels and
probabilities per video.

- :func:`plan_inference` resolves the model alias once (``models:/demo-video@champion`` ->
  ``models:/demo-video/3``), lists the videos and writes them to ``inference/<dataset>/<key>/inputs.csv``.
  ``key`` names the model version and the inputs (keys and sizes): the same videos with the same model version
  are the same inference, and a re-run redoes nothing; a new champion or a new video is a new key.
- :func:`infer_shard` classifies one shard's videos with the video model (loaded once per shard), one ledger
  record each in ``ledger/<dataset>/infer/<key>/`` (``ok``; ``bad_media`` for a file that is not a readable
  video; the usual run_shard loop: a re-run keeps what is done), the answers in the shard's CSV, and
  optionally a skeleton overlay with the label per video.
- :func:`collect_predictions` joins the shards into ``predictions.csv`` and ``summary.json`` (model URI and
  version, counts per state); every input ends in exactly one state or the collection fails naming the missing
  videos.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from action_recognition.errors import ActionRecognitionError
from action_recognition.layout import inference_prefix, inference_stage
from action_recognition.ledger import LedgerRecord, read_stage, run_shard
from action_recognition.pipeline import shard_plan
from action_recognition.services import fetch_model, mlflow_client, model_spec
from action_recognition.storage import Storage

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")
COLUMNS = [
    "video",
    "state",
    "reason",
    "label",
    "probability",
    "top_labels",
    "top_probabilities",
    "given_label",
    "model",
    "overlay",
]


class InferenceError(ActionRecognitionError):
    """The inference cannot run as asked (no videos, no such model, an incomplete collection)."""

    retryable = False


@dataclass
class InferencePlan:
    dataset: str
    key: str
    model_uri: str
    model_name: str
    model_version: str
    videos: int
    shards: list[list[str]]  # one argument list per `infer` task
    download_shards: list[list[str]]  # YouTube ids: one argument list per download/clip task (else empty)

    def summary(self) -> dict[str, object]:
        return asdict(self)


def resolve_model(model: str, tracking_uri: str | None = None) -> tuple[str, str, str]:
    """``models:/NAME@ALIAS`` or ``models:/NAME/N`` -> (``models:/NAME/N``, NAME, N), resolved now, once."""
    from mlflow.exceptions import MlflowException

    if not model.startswith("models:/"):
        raise InferenceError(
            f"model {model!r}: give a registered model, models:/NAME@ALIAS or models:/NAME/N"
        )
    name, sep, alias = model[len("models:/") :].partition("@")
    client = mlflow_client(tracking_uri)
    try:
        if sep:
            version = str(client.get_model_version_by_alias(name, alias).version)
        else:
            name, _, version = name.partition("/")
            version = str(client.get_model_version(name, version).version)
    except MlflowException as exc:
        raise InferenceError(f"model {model}: {exc.message}") from exc
    info = model_spec(f"models:/{name}/{version}", tracking_uri)
    if (info.metadata or {}).get("family") != "video":
        raise InferenceError(
            f"{model} is not a video model: batch inference takes models:/<dataset>-video@ALIAS"
        )
    return f"models:/{name}/{version}", name, version


INPUT_COLUMNS = ["clip_id", "key", "bytes", "source", "given_label", "problem"]


def _prefix_inputs(storage: Storage, prefix: str) -> list[dict[str, str]]:
    if ".." in prefix.split("/"):
        raise InferenceError(f"input prefix {prefix!r}: no '..' in a storage prefix")
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    keys = sorted(k for k in storage.list(prefix) if k.lower().endswith(VIDEO_SUFFIXES))
    if not keys:
        raise InferenceError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) under {storage.prefix_uri(prefix)}")
    return [
        {
            "clip_id": k.removeprefix(prefix),
            "key": k,
            "bytes": str(storage.size(k) or 0),
            "source": "",
            "given_label": "",
            "problem": "",
        }
        for k in keys
    ]


def _youtube_inputs(
    source: str, profile: str, cache_dir: Path
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(inputs, manifest rows) of a CSV of YouTube ids (``youtube_id,time_start,time_end`` and optionally
    ``label``): valid rows go through the download and clip steps; the others are inputs with their
    problem."""
    from action_recognition.annotations import clip_id_for, fetch_annotations
    from action_recognition.layout import clip_key
    from action_recognition.manifest import manifest_row_problem

    text = fetch_annotations(source, cache_dir).read_bytes().decode("utf-8-sig", errors="replace")
    reader = csv.DictReader(io.StringIO(text))
    missing = {"youtube_id", "time_start", "time_end"} - set(reader.fieldnames or ())
    if missing:
        raise InferenceError(
            f"{source}: no {', '.join(sorted(missing))} column (header: {reader.fieldnames})"
        )
    inputs: list[dict[str, str]] = []
    manifest: list[dict[str, str]] = []
    seen: dict[str, int] = {}
    for line, raw in enumerate(reader, start=2):
        yid = (raw.get("youtube_id") or "").strip()
        start, end = (raw.get("time_start") or "").strip(), (raw.get("time_end") or "").strip()
        label = (raw.get("label") or "").strip()
        row = {
            "clip_id": "",
            "youtube_id": yid,
            "time_start": start,
            "time_end": end,
            "label": label,
            "split": "test",
        }
        if start.isdigit() and end.isdigit():
            row["clip_id"] = clip_id_for(yid, int(start), int(end))
        problem = manifest_row_problem(row) or (
            f"the same clip as line {seen[row['clip_id']]}" if row["clip_id"] in seen else None
        )
        if problem:
            inputs.append(
                {
                    "clip_id": f"line-{line}",
                    "key": "",
                    "bytes": "0",
                    "source": "",
                    "given_label": label,
                    "problem": f"line {line}: {problem}",
                }
            )
            continue
        seen[row["clip_id"]] = line
        manifest.append(row)
        inputs.append(
            {
                "clip_id": row["clip_id"],
                "key": clip_key(profile, row["clip_id"]),
                "bytes": "0",
                "source": "download",
                "given_label": label,
                "problem": "",
            }
        )
    if not inputs:
        raise InferenceError(f"{source}: no rows")
    return inputs, manifest


def plan_inference(
    storage: Storage,
    dataset: str,
    model: str,
    *,
    prefix: str | None = None,
    youtube_csv: str | None = None,
    clip_profile: str = "",
    cache_dir: Path | None = None,
    videos_per_shard: int,
    max_shards: int = 64,
    tracking_uri: str | None = None,
) -> InferencePlan:
    """The model resolved and the inputs listed into ``inputs.csv``: the videos under ``prefix``, or the clips
    of a CSV of YouTube ids (``youtube_csv``: written as the manifest of ``infer-<digest>``, which the
    download and clip steps then fetch; ``download_shards`` are their arguments). See the module docstring."""
    from action_recognition.config import default_cache_dir
    from action_recognition.layout import manifest_key
    from action_recognition.manifest import MANIFEST_COLUMNS, csv_bytes

    if (prefix is None) == (youtube_csv is None):
        raise InferenceError(
            "give the videos as a storage prefix or as a CSV of YouTube ids (one of the two)"
        )
    uri, name, version = resolve_model(model, tracking_uri)
    manifest: list[dict[str, str]] = []
    if prefix is not None:
        rows = _prefix_inputs(storage, prefix)
    else:
        rows, manifest = _youtube_inputs(str(youtube_csv), clip_profile, cache_dir or default_cache_dir())
    digest = hashlib.sha256(json.dumps([uri, rows], sort_keys=True).encode()).hexdigest()[:12]
    key = f"{name}-v{version}-{digest}"
    source = f"infer-{digest}"
    download_shards: list[list[str]] = []
    if manifest:
        storage.put_bytes_if_changed(
            manifest_key(source),
            csv_bytes(MANIFEST_COLUMNS, ([r[c] for c in MANIFEST_COLUMNS] for r in manifest)),
        )
        download_shards = [
            ["--dataset", source, "--shard", s]
            for s in shard_plan(len(manifest), videos_per_shard, max_shards)
        ]
    rows = [{**r, "source": source if r["source"] else ""} for r in rows]
    storage.put_bytes_if_changed(inference_prefix(dataset, key) + "inputs.csv", _csv(rows, INPUT_COLUMNS))
    shards = [
        ["--key", key, "--model", uri, "--shard", s]
        for s in shard_plan(len(rows), videos_per_shard, max_shards)
    ]
    log.info("inference %s: %d inputs with %s, %d shard(s)", key, len(rows), uri, len(shards))
    return InferencePlan(dataset, key, uri, name, version, len(rows), shards, download_shards)


@dataclass
class InferShard:
    dataset: str
    key: str
    shard: tuple[int, int]
    counts: dict[str, int]
    seconds: float

    def summary(self) -> dict[str, object]:
        return asdict(self)


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def _read_csv(storage: Storage, key: str) -> list[dict[str, str]]:
    if not storage.exists(key):
        return []
    return list(csv.DictReader(io.StringIO(storage.get_bytes(key).decode())))


def infer_shard(
    storage: Storage,
    dataset: str,
    key: str,
    shard: tuple[int, int],
    *,
    model_uri: str,
    tracking_uri: str | None = None,
    overlays: bool = False,
    progress: Callable[[int], None] | None = None,
) -> InferShard:
    """Classify one shard's videos (see module docstring) with the video model ``model_uri`` of the MLflow
    server at ``tracking_uri``."""
    import mlflow.pyfunc

    with tempfile.TemporaryDirectory(prefix="ar-infer-model-") as tmp:
        folder = fetch_model(model_uri, tracking_uri, Path(tmp))
        model = mlflow.pyfunc.load_model(str(folder)).unwrap_python_model()
        return _infer_shard(storage, dataset, key, shard, model_uri, model, overlays, progress)


def _infer_shard(
    storage: Storage,
    dataset: str,
    key: str,
    shard: tuple[int, int],
    model_uri: str,
    model: Any,
    overlays: bool,
    progress: Callable[[int], None] | None,
) -> InferShard:
    base = inference_prefix(dataset, key)
    inputs = _read_csv(storage, base + "inputs.csv")
    if not inputs:
        raise InferenceError(f"{storage.key_uri(base + 'inputs.csv')} is missing: run infer-plan first")
    answers_key = f"{base}answers/shard-{shard[0]:04d}-of-{shard[1]:04d}.csv"
    previous = {r["video"]: r for r in _read_csv(storage, answers_key)}
    answers: dict[str, dict[str, Any]] = {}
    began = time.monotonic()

    upstream = _upstream(storage, {r["source"] for r in inputs if r["source"]})

    def blank(row: dict[str, str], state: str = "ok", reason: str = "") -> dict[str, Any]:
        return _answer_row(row, model_uri, state, reason)

    def triage(row: dict[str, str], prev: LedgerRecord | None) -> Any:
        cid = row["clip_id"]
        if row["problem"]:  # a row of the YouTube CSV that never went near the network
            answers[cid] = blank(row, "bad_input", row["problem"])
            return LedgerRecord(cid, row["given_label"], "", "bad_input", row["problem"])
        if row["source"]:  # fetched by the download and clip steps: their state when it is not ok
            before = upstream.get((row["source"], cid))
            if before is None:
                return "wait"  # not downloaded and clipped yet: collect names it
            if before.state != "ok":
                answers[cid] = blank(row, before.state, before.reason)
                return LedgerRecord(cid, row["given_label"], "", before.state, before.reason, before.attempts)
        if prev is not None and cid in previous and prev.state in ("ok", "bad_media"):
            answers[cid] = previous[cid]
            return prev
        return "process"

    def one(row: dict[str, str]) -> LedgerRecord:
        answer, record = _classify_one(storage, model, base, row, blank(row), overlays)
        answers[record.clip_id] = answer
        return record

    result = run_shard(
        storage, dataset, inference_stage(key), shard, triage, one, progress=progress, inputs=inputs
    )
    ordered = [answers[r.clip_id] for r in result.records]
    storage.put_bytes_if_changed(answers_key, _csv(ordered, COLUMNS))
    counts = dict(Counter(r.state for r in result.records))
    return InferShard(dataset, key, shard, counts, round(time.monotonic() - began, 2))


def _classify_one(
    storage: Storage, model: Any, base: str, row: dict[str, str], answer: dict[str, Any], overlays: bool
) -> tuple[dict[str, Any], LedgerRecord]:
    """One input video classified by the video model: its answer row and its ledger record (``bad_media`` when
    the model could not read it)."""
    from mlflow.exceptions import MlflowException

    from action_recognition.serving import answers as table
    from action_recognition.video_model import classify_file

    video, t0 = row["clip_id"], time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ar-infer-") as tmp:
        path = storage.get_file(row["key"], Path(tmp) / f"input{Path(row['key']).suffix}")
        try:
            logits, people = classify_file(model, path, Path(tmp))
        except MlflowException as exc:
            answer.update(state="bad_media", reason=exc.message[:300])
            seconds = round(time.monotonic() - t0, 3)
            size = path.stat().st_size
            return answer, LedgerRecord(
                video, row["given_label"], "", "bad_media", exc.message[:300], 1, size, seconds
            )
        top = table(logits, model.spec["classes"]).iloc[0]
        answer.update(
            label=top["label"],
            probability=f"{top['probability']:.6f}",
            top_labels=json.dumps(top["top_labels"]),
            top_probabilities=json.dumps([round(p, 6) for p in top["top_probabilities"]]),
        )
        if overlays:
            caption = f"{top['label']} ({top['probability']:.0%})"
            answer["overlay"] = _overlay(storage, base, video, Path(tmp), people, caption)
    size = int(row["bytes"] or 0) or (storage.size(row["key"]) or 0)
    seconds = round(time.monotonic() - t0, 3)
    return answer, LedgerRecord(video, row["given_label"], "", "ok", "", 1, size, seconds)


def _answer_row(row: dict[str, str], model_uri: str, state: str, reason: str) -> dict[str, Any]:
    """A row of the predictions CSV before (or instead of) the model's answer."""
    return {
        "video": row["clip_id"],
        "given_label": row["given_label"],
        "model": model_uri,
        "state": state,
        "reason": reason,
        "label": "",
        "probability": "",
        "top_labels": "",
        "top_probabilities": "",
        "overlay": "",
    }


def _upstream(storage: Storage, sources: set[str]) -> dict[tuple[str, str], LedgerRecord]:
    """(source dataset, clip id) -> the record that decides a fetched clip: the download's when it failed,
    else the clip step's."""
    out = {}
    for source in sources:
        downloads, clips = read_stage(storage, source, "download"), read_stage(storage, source, "clip")
        for cid, down in downloads.items():
            final = down if down.state != "ok" else clips.get(cid)
            if final is not None:
                out[(source, cid)] = final
    return out


def _overlay(storage: Storage, base: str, video: str, work: Path, people: Any, label: str) -> str:
    import numpy as np

    from action_recognition.pose.render import render_overlay

    out = work / "overlay.mp4"
    render_overlay(
        work / "clip.mp4",
        people if people is not None else np.zeros((1, 0, 17, 3), np.float32),
        out,
        label=label,
    )
    key = f"{base}overlays/{Path(video).with_suffix('.mp4').as_posix()}"
    storage.put_file(key, out)
    return key


@dataclass
class InferenceSummary:
    dataset: str
    key: str
    model_uri: str
    videos: int
    counts: dict[str, int]
    predictions_uri: str

    def summary(self) -> dict[str, object]:
        return asdict(self)


def collect_predictions(storage: Storage, dataset: str, key: str) -> InferenceSummary:
    """Every shard's answers in one ``predictions.csv`` (input order) and ``summary.json``."""
    base = inference_prefix(dataset, key)
    inputs = _read_csv(storage, base + "inputs.csv")
    if not inputs:
        raise InferenceError(f"{storage.key_uri(base + 'inputs.csv')} is missing: run infer-plan first")
    answers: dict[str, dict[str, str]] = {}
    for k in sorted(storage.list(base + "answers/")):
        answers.update({r["video"]: r for r in _read_csv(storage, k)})
    records = read_stage(storage, dataset, inference_stage(key))
    missing = [r["clip_id"] for r in inputs if r["clip_id"] not in records or r["clip_id"] not in answers]
    if missing:
        raise InferenceError(
            f"{len(missing)} of {len(inputs)} videos have no answer yet (first: {missing[:5]}); "
            "run their infer shards"
        )
    rows = [answers[r["clip_id"]] for r in inputs]
    storage.put_bytes_if_changed(base + "predictions.csv", _csv(rows, COLUMNS))
    counts = dict(Counter(r["state"] for r in rows))
    model_uri = rows[0]["model"]
    out = InferenceSummary(
        dataset, key, model_uri, len(rows), counts, storage.key_uri(base + "predictions.csv")
    )
    storage.put_bytes_if_changed(
        base + "summary.json", json.dumps(out.summary(), indent=1, sort_keys=True).encode()
    )
    return out
