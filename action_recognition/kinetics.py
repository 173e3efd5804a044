"""Kinetics annotation CSVs -> validated rows -> a dataset manifest (the ``plan`` step).

Reads the official annotation files of Kinetics-400, -600 and -700 (``label,youtube_id,time_start,time_end,
split[,is_cc]``), validates every row, selects classes, caps clips per class with a seed, assigns splits
and writes, under ``datasets/<name>/`` in storage:

- ``manifest.csv``: ``clip_id,youtube_id,time_start,time_end,label,split``, the clips to fetch;
- ``candidates.csv``: the unused rows of each selected class, in the same seeded order, for top-ups;
- ``rejected.csv``: every row that was not accepted, with its source, line and reason;
- ``plan.json``: counts, the config, the sources' sha256 and the manifest's sha256 (its version).

Every input row ends in exactly one place: manifest, candidates, rejected, or an unselected class
(counted in ``plan.json``). Re-planning with the same inputs and config writes nothing new.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from difflib import get_close_matches
from typing import Any

from action_recognition.annotations import (
    REJECTED_COLUMNS,
    SPLITS,
    ClipRow,
    Rejection,
    detect_version,
    fetch_annotations,
    label_map,
    parse_annotations,
    show,
)
from action_recognition.config import PlanConfig
from action_recognition.errors import PlanError
from action_recognition.layout import candidates_key, manifest_key, plan_key, rejected_key
from action_recognition.manifest import MANIFEST_COLUMNS, PlanInfo, csv_bytes, read_plan_info
from action_recognition.storage import Storage

log = logging.getLogger(__name__)


@dataclass
class PlanResult:
    """What ``plan`` did; ``summary()`` is the CLI's JSON line."""

    dataset: str
    manifest_uri: str
    manifest_sha256: str
    rows: int
    classes: list[str]
    per_class: dict[str, int]
    splits: dict[str, int]
    rejected: int
    candidates: int
    rows_read: int
    unselected: int
    versions: list[int | None]
    written: list[str] = field(default_factory=list)
    planned: int = 0  # clips the plan aimed for (before top-ups): what shard counts are based on

    def summary(self) -> dict[str, object]:
        out = asdict(self)
        out["classes"] = len(self.classes)
        out["class_names"] = self.classes
        out["manifest_version"] = self.manifest_sha256[:12]
        return out


def _order_key(seed: int, clip_id: str) -> bytes:
    """Seeded order independent of file order: adding rows elsewhere does not reshuffle a class."""
    return hashlib.sha256(f"{seed}:{clip_id}".encode()).digest()


def deduplicate(rows: Iterable[ClipRow]) -> tuple[list[ClipRow], list[Rejection]]:
    """Keep the first row per clip id; later copies are rejected as duplicates or conflicts."""
    first: dict[str, ClipRow] = {}
    rejected = []
    for row in rows:
        seen = first.get(row.clip_id)
        if seen is None:
            first[row.clip_id] = row
            continue
        where = f"line {seen.line} of {seen.source}"
        if seen.label == row.label:
            reason = f"duplicate of {where}"
        else:
            reason = f"same clip as {where} but labelled {show(row.label, 60)} there {show(seen.label, 60)}"
        rejected.append(
            Rejection(
                row.source,
                row.line,
                reason,
                row.youtube_id,
                row.label,
                str(row.time_start),
                str(row.time_end),
            )
        )
    return list(first.values()), rejected


def select_classes(config: PlanConfig, available: Sequence[str], known: set[str] | None) -> list[str]:
    """The classes to plan, sorted. Raises PlanError for unknown names or an empty selection."""
    if config.all_classes:
        chosen = sorted(available)
    elif config.classes:
        vocabulary = known if known is not None else set(available)
        unknown = [c for c in config.classes if c not in vocabulary]
        if unknown:
            hints = {c: get_close_matches(c, sorted(vocabulary), n=3) for c in unknown}
            raise PlanError(
                "unknown class(es): "
                + "; ".join(
                    f"{c!r} (did you mean {', '.join(map(repr, h)) or 'nothing close'}?)"
                    for c, h in hints.items()
                )
            )
        empty = [c for c in config.classes if c not in set(available)]
        if empty:
            raise PlanError(f"class(es) with no valid row in the annotations: {', '.join(map(repr, empty))}")
        chosen = sorted(set(config.classes))
    else:
        word = (config.class_contains or "").strip().lower()
        chosen = sorted(c for c in available if word in c.lower())
        if not chosen:
            raise PlanError(f"no class name contains {word!r} among {len(available)} classes")
    if not chosen:
        raise PlanError("no class selected: the annotations hold no valid row")
    return chosen


def assign_splits(
    selected: dict[str, list[ClipRow]], config: PlanConfig
) -> dict[str, list[tuple[ClipRow, str]]]:
    """Final split per row. Official splits are kept; held-out splits that the sources lack are carved
    from train per class (stratified), when ``carve_missing_splits``. A YouTube video never straddles
    two splits: its rows follow the split of its first-assigned row.
    """
    present = {row.split for rows in selected.values() for row in rows}
    out: dict[str, list[tuple[ClipRow, str]]] = {}
    if not config.carve_missing_splits:
        return {label: [(r, r.split) for r in rows] for label, rows in selected.items()}
    pool_all = "train" not in present  # e.g. only a validation CSV: every row is material to split
    carve = [
        (s, ratio)
        for s, ratio in (("test", config.test_ratio), ("val", config.val_ratio))
        if ratio > 0 and (pool_all or s not in present)
    ]
    video_split: dict[str, str] = {}
    for label in sorted(selected):
        rows = selected[label]  # already in seeded order
        pool = [r for r in rows if pool_all or r.split == "train"]
        fixed = [(r, r.split) for r in rows if not (pool_all or r.split == "train")]
        assigned: list[tuple[ClipRow, str]] = []
        quotas = []
        for split, ratio in carve:
            quota = round(len(pool) * ratio)
            if quota == 0 and len(pool) >= len(carve) + 2:
                quota = 1
            quotas.append((split, quota))
        index = 0
        for split, quota in quotas:
            for row in pool[index : index + quota]:
                assigned.append((row, video_split.setdefault(row.youtube_id, split)))
            index += quota
        for row in pool[index:]:
            assigned.append((row, video_split.setdefault(row.youtube_id, "train")))
        for row, split in fixed:
            video_split.setdefault(row.youtube_id, split)
        out[label] = fixed + assigned
    return out


@dataclass
class _Read:
    """Every row of every source, read and checked: the valid ones (deduplicated) and the rejected ones."""

    sources: list[tuple[str, int | None, str]]  # (source, Kinetics version, sha256)
    rows: list[ClipRow]
    rejected: list[Rejection]
    known: set[str] | None  # the label maps' classes; None when a source's version is unknown
    rows_read: int

    @property
    def versions(self) -> list[int | None]:
        return sorted({v for _, v, _ in self.sources}, key=lambda v: v or 0)


def _read_sources(config: PlanConfig) -> _Read:
    if not config.annotations:
        raise PlanError("no annotation source given (plan.annotations / --annotations)")
    fetched = []
    for src in config.annotations:
        version = config.kinetics_version or detect_version(src)
        fetched.append((src, version, fetch_annotations(src, config.cache_dir, config.download_timeout_s)))
    if len({v for _, v, _ in fetched}) > 1 and not config.allow_mixed_versions:
        named = ", ".join(f"{s} (K{v or '?'})" for s, v, _ in fetched)
        raise PlanError(
            f"annotation sources of different Kinetics versions: {named}. Kinetics-400 validation clips are "
            "inside Kinetics-700 training, so mixing leaks test data; set allow_mixed_versions to do it "
            "anyway"
        )
    read = _Read(sources=[], rows=[], rejected=[], known=set(), rows_read=0)
    for src, version, path in fetched:
        data = path.read_bytes()
        read.sources.append((src, version, hashlib.sha256(data).hexdigest()))
        labels = set(label_map(version)) if version else None
        read.known = None if labels is None or read.known is None else read.known | labels
        rows, bad = parse_annotations(
            data, source=src, known_labels=labels, version=version, max_clip_seconds=config.max_clip_seconds
        )
        log.info("%s: %d valid rows, %d rejected (Kinetics-%s)", src, len(rows), len(bad), version or "?")
        read.rows.extend(rows)
        read.rejected.extend(bad)
    read.rows_read = len(read.rows) + len(read.rejected)
    read.rows, dupes = deduplicate(read.rows)
    read.rejected.extend(dupes)
    return read


def _choose(
    config: PlanConfig, read: _Read
) -> tuple[list[str], list[tuple[Any, ...]], list[tuple[Any, ...]], int]:
    """The classes, the manifest records (capped per class, split), the spare candidates in the same seeded
    order, and how many valid rows belong to classes not selected."""
    by_class: dict[str, list[ClipRow]] = defaultdict(list)
    for row in read.rows:
        by_class[row.label].append(row)
    classes = select_classes(config, sorted(by_class), read.known)
    selected: dict[str, list[ClipRow]] = {}
    spare: dict[str, list[ClipRow]] = {}
    for label in classes:
        ordered = sorted(by_class[label], key=lambda r: _order_key(config.seed, r.clip_id))
        selected[label] = ordered[: config.per_class]
        spare[label] = ordered[config.per_class :]
    unselected = sum(len(v) for k, v in by_class.items() if k not in set(classes))
    manifest_records = sorted(
        (
            (r.clip_id, r.youtube_id, r.time_start, r.time_end, r.label, split)
            for rows in assign_splits(selected, config).values()
            for r, split in rows
        ),
        key=lambda rec: (rec[4], SPLITS.index(rec[5]), rec[0]),
    )
    candidate_records = [
        (r.clip_id, r.youtube_id, r.time_start, r.time_end, r.label, r.split, rank)
        for label in classes
        for rank, r in enumerate(spare[label])
    ]
    return classes, manifest_records, candidate_records, unselected


def _result(storage: Storage, info: PlanInfo, versions: list[int | None], written: list[str]) -> PlanResult:
    return PlanResult(
        dataset=info.dataset,
        manifest_uri=storage.key_uri(manifest_key(info.dataset)),
        manifest_sha256=info.manifest_sha256,
        rows=info.rows,
        classes=sorted(info.per_class),
        per_class=info.per_class,
        splits=info.splits,
        rejected=info.rejected,
        candidates=info.candidates,
        rows_read=info.rows_read,
        unselected=info.unselected,
        versions=list(versions),
        written=written,
        planned=sum(info.targets.values()),
    )


def plan_dataset(config: PlanConfig, storage: Storage) -> PlanResult:
    """Plan a dataset from Kinetics annotations and publish its plan files (see the module docstring).

    Raises:
        AnnotationError: a source cannot be read at all.
        PlanError: no source, versions mixed without ``allow_mixed_versions``, unknown or empty classes.
    """
    read = _read_sources(config)
    classes, manifest_records, candidate_records, unselected = _choose(config, read)
    rejected_records = [tuple(str(v) for v in asdict(r).values()) for r in read.rejected]
    manifest = csv_bytes(MANIFEST_COLUMNS, manifest_records)
    dataset = config.dataset
    config_dump = config.model_dump(mode="json", exclude={"cache_dir", "download_timeout_s"})
    source_hashes = {s: h for s, _, h in read.sources}
    fingerprint = hashlib.sha256(
        json.dumps({"config": config_dump, "sources": source_hashes}, sort_keys=True).encode()
    ).hexdigest()
    existing = read_plan_info(storage, dataset)
    if existing is not None and existing.fingerprint == fingerprint:
        # Same inputs and config as the plan in storage (which later top-ups may have extended): keep it.
        log.info("plan of %s is up to date (fingerprint %s); nothing written", dataset, fingerprint[:12])
        return _result(storage, existing, read.versions, [])
    per_class = dict(sorted(Counter(rec[4] for rec in manifest_records).items()))
    plan_info = PlanInfo(
        dataset=dataset,
        manifest_sha256=hashlib.sha256(manifest).hexdigest(),
        rows=len(manifest_records),
        per_class=per_class,
        splits={s: n for s in SPLITS if (n := sum(1 for rec in manifest_records if rec[5] == s))},
        candidates=len(candidate_records),
        rejected=len(rejected_records),
        rows_read=read.rows_read,
        unselected=unselected,
        config=config_dump,
        fingerprint=fingerprint,
        targets=dict(per_class),
        sources=[{"source": s, "kinetics_version": v, "sha256": h} for s, v, h in read.sources],
    )
    files = {
        manifest_key(dataset): manifest,
        candidates_key(dataset): csv_bytes((*MANIFEST_COLUMNS, "rank"), candidate_records),
        rejected_key(dataset): csv_bytes(REJECTED_COLUMNS, rejected_records),
        # plan.json last: its presence with this manifest hash marks a complete plan.
        plan_key(dataset): plan_info.to_json(),
    }
    written = [key for key, data in files.items() if storage.put_bytes_if_changed(key, data)]
    log.info(
        "planned %s: %d clips in %d classes, %d rejected, %d spare candidates; %d file(s) written",
        dataset,
        len(manifest_records),
        len(classes),
        len(rejected_records),
        len(candidate_records),
        len(written),
    )
    return _result(storage, plan_info, read.versions, written)
