"""The availability ledger: one recorded state per manifest row, per stage, written atomically per shard.

Files: ``ledger/<dataset>/<stage>/shard-<i>-of-<n>.csv`` with the columns of :class:`LedgerRecord`, one row
per clip of that shard. ``stage`` is ``download``, ``clip``, ``pose/<pose_tag>`` (one pose ledger per pose
model) or ``review`` (a person's exclusions, :mod:`action_recognition.exclusions`). A clip's final state is
``excluded`` when a person excluded it, else its clip-stage state when its download succeeded, else its
download state, else ``pending`` (not processed yet). ``rows in = sum of states`` always holds. Every
stage's loop is :func:`run_shard`: it reads the shard's rows and the stage's previous records, keeps what is
done, processes the rest and publishes the shard's records at once.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Literal

from action_recognition.errors import ConfigError
from action_recognition.layout import ledger_prefix, shard_key
from action_recognition.manifest import read_manifest
from action_recognition.storage import Storage

STATES = (
    "ok",
    "unavailable",
    "private",
    "removed",
    "geo_blocked",
    "rate_limited",
    "bad_input",
    "bad_media",
    "retries_exhausted",
    "no_person",
    "excluded",
)
#: Not retried on a re-run: the video will not come back by asking again (or a person excluded the clip).
PERMANENT = frozenset(
    {"unavailable", "private", "removed", "geo_blocked", "bad_input", "bad_media", "excluded"}
)
#: Retried on the next run.
RETRYABLE = frozenset({"rate_limited", "retries_exhausted"})
PENDING = "pending"
STAGES = ("download", "clip", "pose/<pose_tag>", "review")
#: The ledger stage of a person's review decisions (:mod:`action_recognition.exclusions`).
REVIEW_STAGE = "review"


@dataclass
class LedgerRecord:
    """What happened to one clip in one stage."""

    clip_id: str
    label: str
    split: str
    state: str
    reason: str = ""
    attempts: int = 0
    bytes: int = 0
    seconds: float = 0.0
    method: str = ""  # download: segment | whole; clip: the clip profile
    raw_start_s: float = 0.0  # download: where the raw file starts in the source video
    duration_s: float = 0.0  # clip: duration published
    short: bool = False  # clip: shorter than the window because the video itself ends there
    frames: int = 0  # pose: frames read
    persons_seen: float = 0.0  # pose: distinct tracked people
    main_fraction: float = 0.0  # pose: fraction of frames with the main person
    mean_conf: float = 0.0  # pose: mean keypoint confidence of the main person
    by: str = ""  # review: who excluded the clip
    at: str = ""  # review: when (UTC, ISO 8601)

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(
                f"unknown ledger state {self.state!r} for {self.clip_id}; states: {', '.join(STATES)}"
            )


_COLUMNS = [f.name for f in dataclasses.fields(LedgerRecord)]


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/8"`` -> ``(2, 8)``; shards count from 0. Raises ConfigError on anything else."""
    found = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not found:
        raise ConfigError(f"--shard {text!r}: expected I/N, for example 0/4")
    index, count = int(found.group(1)), int(found.group(2))
    if not 1 <= count <= 10_000 or not 0 <= index < count:
        raise ConfigError(f"--shard {text!r}: need 0 <= I < N and 1 <= N <= 10000")
    return index, count


def shard_of(clip_id: str, count: int) -> int:
    """Stable shard of a clip: by hash of its id, so top-ups do not move clips between shards."""
    return int.from_bytes(hashlib.sha256(clip_id.encode()).digest()[:8], "big") % count


def shard_rows(rows: list[dict[str, str]], shard: tuple[int, int]) -> list[dict[str, str]]:
    """The manifest rows of one shard, in manifest order."""
    index, count = shard
    return [r for r in rows if shard_of(r["clip_id"], count) == index]


def encode(records: list[LedgerRecord]) -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for rec in sorted(records, key=lambda r: r.clip_id):
        row = dataclasses.asdict(rec)
        row["seconds"] = f"{rec.seconds:.3f}"
        row["duration_s"] = f"{rec.duration_s:.3f}"
        row["raw_start_s"] = f"{rec.raw_start_s:.3f}"
        row["short"] = int(rec.short)
        row["persons_seen"] = f"{rec.persons_seen:g}"
        row["main_fraction"] = f"{rec.main_fraction:.4f}"
        row["mean_conf"] = f"{rec.mean_conf:.4f}"
        writer.writerow(row)
    return buf.getvalue().encode("utf-8")


def decode(data: bytes) -> list[LedgerRecord]:
    out = []
    for row in csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")):
        get = row.get  # ledgers written before a column existed read it as its default
        out.append(
            LedgerRecord(
                clip_id=row["clip_id"],
                label=row["label"],
                split=row["split"],
                state=row["state"],
                reason=get("reason") or "",
                attempts=int(get("attempts") or 0),
                bytes=int(get("bytes") or 0),
                seconds=float(get("seconds") or 0),
                method=get("method") or "",
                raw_start_s=float(get("raw_start_s") or 0),
                duration_s=float(get("duration_s") or 0),
                short=get("short") == "1",
                frames=int(get("frames") or 0),
                persons_seen=float(get("persons_seen") or 0),
                main_fraction=float(get("main_fraction") or 0),
                mean_conf=float(get("mean_conf") or 0),
                by=get("by") or "",
                at=get("at") or "",
            )
        )
    return out


def write_shard(
    storage: Storage, dataset: str, stage: str, shard: tuple[int, int], records: list[LedgerRecord]
) -> bool:
    """Publish a shard's records atomically; True when the content changed."""
    return storage.put_bytes_if_changed(shard_key(dataset, stage, shard), encode(records))


def read_stage(storage: Storage, dataset: str, stage: str) -> dict[str, LedgerRecord]:
    """Every record of a stage, merged over its shard files (files in name order; a later file wins)."""
    merged: dict[str, LedgerRecord] = {}
    for key in storage.list(ledger_prefix(dataset, stage)):
        if key.endswith(".csv"):
            for rec in decode(storage.get_bytes(key)):
                merged[rec.clip_id] = rec
    return merged


#: What a stage decides for a shard row, given the stage's previous record of it: keep a record (done, nothing
#: to do), process it, or wait (an earlier stage has not finished it: not recorded in this stage yet).
Decision = LedgerRecord | Literal["process", "wait"]


@dataclass
class ShardRun:
    """One stage over one shard: the published records (manifest order) and what this run did."""

    records: list[LedgerRecord]
    fresh: list[LedgerRecord]
    skipped: int
    waiting: int
    seconds: float
    ledger_key: str

    @property
    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(r.state for r in self.records).items()))


def run_shard(
    storage: Storage,
    dataset: str,
    stage: str,
    shard: tuple[int, int],
    triage: Callable[[dict[str, str], LedgerRecord | None], Decision],
    process: Callable[[dict[str, str]], LedgerRecord] | None = None,
    *,
    stream: Callable[[list[dict[str, str]]], Iterable[LedgerRecord]] | None = None,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
    inputs: list[dict[str, str]] | None = None,
) -> ShardRun:
    """The loop every stage shares: the shard's manifest rows (or of ``inputs``: rows with a ``clip_id``, e.g.
    the videos of a batch inference), each triaged against the stage's previous record, the ones to do
    processed (``workers`` threads; 1 runs them in this thread; or all of them by ``stream``, which yields
    their records in any order: a pipelined stage), and the shard's records published at once, atomically, at
    the end. ``progress`` hears the kept count first, then 1 per processed row."""
    rows = shard_rows(read_manifest(storage, dataset) if inputs is None else inputs, shard)
    previous = read_stage(storage, dataset, stage)
    records: dict[str, LedgerRecord] = {}
    todo: list[dict[str, str]] = []
    waiting = 0
    for row in rows:
        decision = triage(row, previous.get(row["clip_id"]))
        if decision == "wait":
            waiting += 1
        elif decision == "process":
            todo.append(row)
        else:
            records[row["clip_id"]] = decision
    skipped = len(records)
    if progress:
        progress(skipped)
    began = time.monotonic()
    pool = (
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix=stage.split("/")[0])
        if workers > 1
        else None
    )
    with pool or nullcontext():
        if stream is not None:
            done: Iterable[LedgerRecord] = stream(todo) if todo else ()
        else:
            if process is None:
                raise TypeError("run_shard needs process or stream")
            done = pool.map(process, todo) if pool else map(process, todo)
        for rec in done:
            records[rec.clip_id] = rec
            if progress:
                progress(1)
    ordered = [records[r["clip_id"]] for r in rows if r["clip_id"] in records]
    write_shard(storage, dataset, stage, shard, ordered)
    return ShardRun(
        records=ordered,
        fresh=[records[r["clip_id"]] for r in todo],
        skipped=skipped,
        waiting=waiting,
        seconds=time.monotonic() - began,
        ledger_key=shard_key(dataset, stage, shard),
    )


@dataclass
class StatusReport:
    """Counts per final state, overall and per class; ``rows == sum(states.values())``."""

    dataset: str
    rows: int
    states: dict[str, int]
    per_class: dict[str, dict[str, int]]
    bytes: int
    seconds: float
    methods: dict[str, int] = field(default_factory=dict)
    short_clips: int = 0

    def summary(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    def table(self) -> str:
        columns = [s for s in (*STATES, PENDING) if any(c.get(s) for c in self.per_class.values())]
        width = max([len("class"), *(len(c) for c in self.per_class)])
        lines = ["class".ljust(width) + "".join(f" {c:>17}" for c in columns)]
        for label, counts in self.per_class.items():
            lines.append(label.ljust(width) + "".join(f" {counts.get(c, 0):>17}" for c in columns))
        lines.append("total".ljust(width) + "".join(f" {self.states.get(c, 0):>17}" for c in columns))
        lines.append(
            f"rows {self.rows} = sum of states {sum(self.states.values())}; "
            f"fetched {self.bytes / 1e6:.1f} MB in {self.seconds:.0f} s; ways: {self.methods}"
        )
        return "\n".join(lines)


def final_states(storage: Storage, dataset: str) -> dict[str, str]:
    """clip_id -> final state for every manifest row (``pending`` where no stage has recorded it)."""
    downloads = read_stage(storage, dataset, "download")
    clips = read_stage(storage, dataset, "clip")
    review = read_stage(storage, dataset, REVIEW_STAGE)  # a person's exclusion wins over every other state
    out = {}
    for row in read_manifest(storage, dataset):
        cid = row["clip_id"]
        down = downloads.get(cid)
        if cid in review and review[cid].state == "excluded":
            out[cid] = "excluded"
        elif down is None:
            out[cid] = PENDING
        elif down.state != "ok":
            out[cid] = down.state
        else:
            out[cid] = clips[cid].state if cid in clips else PENDING
    return out


def status(storage: Storage, dataset: str) -> StatusReport:
    """The availability report of a dataset (``action-recognition status``)."""
    rows = read_manifest(storage, dataset)
    states = final_states(storage, dataset)
    downloads = read_stage(storage, dataset, "download")
    clips = read_stage(storage, dataset, "clip")
    per_class: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        per_class[row["label"]][states[row["clip_id"]]] += 1
    totals: Counter[str] = Counter(states.values())
    ids = {r["clip_id"] for r in rows}
    report = StatusReport(
        dataset=dataset,
        rows=len(rows),
        states={s: totals[s] for s in (*STATES, PENDING) if totals[s]},
        per_class={label: dict(c) for label, c in sorted(per_class.items())},
        bytes=sum(r.bytes for cid, r in downloads.items() if cid in ids),
        seconds=round(sum(r.seconds for cid, r in downloads.items() if cid in ids), 3),
        methods=dict(Counter(r.method for cid, r in downloads.items() if cid in ids and r.state == "ok")),
        short_clips=sum(1 for cid, r in clips.items() if cid in ids and r.short),
    )
    if report.rows != sum(report.states.values()):
        raise RuntimeError(
            f"ledger accounting broken for {dataset}: {report.rows} rows, states {report.states}"
        )
    return report
