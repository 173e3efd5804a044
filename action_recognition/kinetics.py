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

import codecs
import csv
import hashlib
import io
import json
import logging
import math
import re
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from difflib import get_close_matches
from importlib import resources
from pathlib import Path
from typing import Any

from action_recognition.config import PlanConfig
from action_recognition.errors import AnnotationError, PlanError
from action_recognition.storage import Storage

log = logging.getLogger(__name__)

YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]{11}", re.ASCII)
REQUIRED_COLUMNS = ("label", "youtube_id", "time_start", "time_end")
SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validate": "val", "validation": "val",
    "test": "test", "testing": "test",
}  # fmt: skip
MANIFEST_COLUMNS = ("clip_id", "youtube_id", "time_start", "time_end", "label", "split")
REJECTED_COLUMNS = ("source", "line", "reason", "youtube_id", "label", "time_start", "time_end")
MAX_LABEL_CHARS = 200
MAX_ANNOTATION_BYTES = 1 << 30


def clip_id_for(youtube_id: str, time_start: int, time_end: int) -> str:
    """The Kinetics clip id: ``<youtube_id>_<start:06d>_<end:06d>``."""
    return f"{youtube_id}_{time_start:06d}_{time_end:06d}"


def dataset_prefix(dataset: str) -> str:
    """Storage prefix of a dataset's plan files."""
    return f"datasets/{dataset}"


@dataclass(frozen=True)
class ClipRow:
    """One valid annotation row."""

    clip_id: str
    youtube_id: str
    time_start: int
    time_end: int
    label: str
    split: str
    source: str
    line: int


@dataclass(frozen=True)
class Rejection:
    """One rejected row: where it was and why. Raw field values are kept for the user to inspect."""

    source: str
    line: int
    reason: str
    youtube_id: str = ""
    label: str = ""
    time_start: str = ""
    time_end: str = ""


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


# ---------------------------------------------------------------------------------------------- sources


def detect_version(source: str) -> int | None:
    """Kinetics version from a file name or URL (``kinetics-600_val.csv``, ``.../700_2020/...``), or None."""
    name = urllib.parse.urlparse(source).path if "://" in source else source
    found = set(re.findall(r"(?<!\d)(400|600|700)(?!\d)", name))
    return int(found.pop()) if len(found) == 1 else None


def label_map(version: int) -> list[str]:
    """The official class names of a Kinetics version, as shipped with the package."""
    text = resources.files("action_recognition").joinpath(f"data/label_map_k{version}.txt").read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def fetch_annotations(source: str, cache_dir: Path, timeout_s: float = 60.0) -> Path:
    """A local path for an annotation source: the path itself, or an http(s) URL downloaded once and cached.

    Raises:
        AnnotationError: missing file, unsupported scheme, or a download that failed.
    """
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme in ("http", "https"):
        digest = hashlib.sha256(source.encode()).hexdigest()[:16]
        name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(parsed.path).name or "annotations.csv")[:80]
        cached = Path(cache_dir) / f"{digest}-{name}"
        if cached.is_file():
            log.info("using cached %s for %s", cached, source)
            return cached
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.partial")
        log.info("downloading %s", source)
        try:
            # URL comes from config and only http(s) reaches here (checked above).
            with urllib.request.urlopen(source, timeout=timeout_s) as resp, tmp.open("wb") as out:
                total = 0
                while block := resp.read(1 << 20):
                    total += len(block)
                    if total > MAX_ANNOTATION_BYTES:
                        raise AnnotationError(f"{source}: larger than {MAX_ANNOTATION_BYTES} bytes; refusing")
                    out.write(block)
            tmp.replace(cached)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise AnnotationError(f"cannot download annotations from {source}: {exc}") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return cached
    if parsed.scheme not in ("", "file"):
        raise AnnotationError(f"annotation source {source!r}: unsupported scheme {parsed.scheme!r} (path or http(s))")
    path = Path(parsed.path if parsed.scheme == "file" else source).expanduser()
    if not path.is_file():
        raise AnnotationError(f"annotation file {path} does not exist")
    return path


def _split_from_name(source: str) -> str | None:
    stem = Path(urllib.parse.urlparse(source).path).stem.lower()
    for word in re.split(r"[^a-z]+", stem):
        if word in _SPLIT_ALIASES:
            return _SPLIT_ALIASES[word]
    return None


def _show(value: str, limit: int = 40) -> str:
    """A raw field for a reason text: non-ASCII escaped (look-alikes become visible), long values cut."""
    shown = ascii(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _parse_time(name: str, raw: str) -> tuple[int | None, str | None]:
    try:
        value = float(raw.strip())
    except ValueError:
        return None, f"{name} {_show(raw)} is not a number"
    if not math.isfinite(value):
        return None, f"{name} {_show(raw)} is not a finite number"
    if value < 0:
        return None, f"{name} {_show(raw)} is negative"
    if not value.is_integer():
        return None, f"{name} {_show(raw)} is not a whole number of seconds (Kinetics clip ids need one)"
    if value >= 1e6:
        return None, f"{name} {_show(raw)} is beyond 999999 s"
    return int(value), None


def parse_annotations(
    text_bytes: bytes,
    *,
    source: str,
    known_labels: set[str] | None,
    version: int | None,
    max_clip_seconds: float,
) -> tuple[list[ClipRow], list[Rejection]]:
    """Validate every row of one annotation file. Never raises on bad content: bad rows are rejected.

    Args:
        text_bytes: The file's bytes (UTF-8 with or without BOM, or UTF-16 with a BOM; LF or CRLF).
        source: Name used in rejection records.
        known_labels: Valid class names, or None to accept any well-formed label.
        version: Kinetics version, only for messages.
        max_clip_seconds: Longest accepted window.
    """
    if text_bytes.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # spreadsheet "Unicode text" exports
        try:
            text_bytes = text_bytes.decode("utf-16").encode("utf-8")
        except UnicodeDecodeError:
            return [], [Rejection(source, 1, "a UTF-16 byte-order mark, but not valid UTF-16: save the file as UTF-8")]
    if b"\x00" in text_bytes[:4096]:
        return [], [
            Rejection(source, 1, "NUL bytes: not UTF-8 text (UTF-16 without a byte-order mark?); save as UTF-8")
        ]
    text = text_bytes.decode("utf-8-sig", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""), strict=False)
    rows: list[ClipRow] = []
    rejected: list[Rejection] = []
    header: list[str] | None = None
    header_problem: str | None = None
    default_split = _split_from_name(source) or "train"
    try:
        for record in reader:
            line = reader.line_num
            if not record or all(not f.strip() for f in record):
                if record:
                    rejected.append(Rejection(source, line, "empty row"))
                continue
            if header is None:
                header = [h.strip().lower() for h in record]
                missing = [c for c in REQUIRED_COLUMNS if c not in header]
                if missing:
                    header_problem = (
                        f"header lacks column(s) {', '.join(missing)}; found {', '.join(map(_show, header))}"
                    )
                continue
            raw = dict(zip(header, record, strict=False))
            keep = {k: raw.get(k, "")[:200] for k in ("youtube_id", "label", "time_start", "time_end")}
            if header_problem:
                rejected.append(Rejection(source, line, header_problem, **keep))
                continue
            if len(record) != len(header):
                rejected.append(Rejection(
                    source, line,
                    f"expected {len(header)} fields, found {len(record)} (unquoted comma or missing field?)",
                    **keep,
                ))  # fmt: skip
                continue
            row, reason = _validate_row(raw, source, line, known_labels, version, max_clip_seconds, default_split)
            if row is None:
                rejected.append(Rejection(source, line, reason or "invalid row", **keep))
            else:
                rows.append(row)
    except csv.Error as exc:
        rejected.append(Rejection(source, reader.line_num, f"unreadable CSV from here on: {exc}"))
    return rows, rejected


def _validate_row(
    raw: dict[str, str],
    source: str,
    line: int,
    known_labels: set[str] | None,
    version: int | None,
    max_clip_seconds: float,
    default_split: str,
) -> tuple[ClipRow | None, str | None]:
    if any("\udc80" <= ch <= "\udcff" for value in raw.values() for ch in value):
        return None, "not valid UTF-8"
    youtube_id = raw["youtube_id"].strip()
    if not YOUTUBE_ID.fullmatch(youtube_id):
        return None, f"youtube_id {_show(youtube_id)} is not 11 characters of A-Z a-z 0-9 _ -"
    start, why = _parse_time("time_start", raw["time_start"])
    if why:
        return None, why
    end, why = _parse_time("time_end", raw["time_end"])
    if why:
        return None, why
    assert start is not None and end is not None
    if end <= start:
        return None, f"time_end {end} is not after time_start {start}"
    if end - start > max_clip_seconds:
        return None, f"window of {end - start} s is longer than max_clip_seconds={max_clip_seconds:g}"
    label = raw["label"].strip()
    if not label:
        return None, "label is empty"
    if len(label) > MAX_LABEL_CHARS or any(not ch.isprintable() for ch in label):
        return None, f"label {_show(label)} is too long or has control characters"
    if known_labels is not None and label not in known_labels:
        kinetics = f"Kinetics-{version}" if version else "Kinetics"
        return None, f"label {_show(label, 60)} is not a {kinetics} class"
    split_raw = raw.get("split", "").strip().lower()
    split = _SPLIT_ALIASES.get(split_raw) if split_raw else default_split
    if split is None:
        return None, f"split {_show(split_raw)} is not one of train/val/test (or training/validate/testing)"
    return ClipRow(clip_id_for(youtube_id, start, end), youtube_id, start, end, label, split, source, line), None


# -------------------------------------------------------------------------------------------- selection


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
            reason = f"same clip as {where} but labelled {_show(row.label, 60)} there {_show(seen.label, 60)}"
        rejected.append(Rejection(
            row.source, row.line, reason, row.youtube_id, row.label, str(row.time_start), str(row.time_end)
        ))  # fmt: skip
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
                + "; ".join(f"{c!r} (did you mean {', '.join(map(repr, h)) or 'nothing close'}?)"
                            for c, h in hints.items())
            )  # fmt: skip
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


def assign_splits(selected: dict[str, list[ClipRow]], config: PlanConfig) -> dict[str, list[tuple[ClipRow, str]]]:
    """Final split per row. Official splits are kept; held-out splits that the sources lack are carved
    from train per class (stratified), when ``carve_missing_splits``. A YouTube video never straddles
    two splits: its rows follow the split of its first-assigned row.
    """
    present = {row.split for rows in selected.values() for row in rows}
    out: dict[str, list[tuple[ClipRow, str]]] = {}
    if not config.carve_missing_splits:
        return {label: [(r, r.split) for r in rows] for label, rows in selected.items()}
    pool_all = "train" not in present  # e.g. only a validation CSV: every row is material to split
    carve = [(s, ratio) for s, ratio in (("test", config.test_ratio), ("val", config.val_ratio))
             if ratio > 0 and (pool_all or s not in present)]  # fmt: skip
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


# ------------------------------------------------------------------------------------------------- plan


def _csv_bytes(columns: Sequence[str], records: Iterable[Sequence[object]]) -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(records)
    return buf.getvalue().encode("utf-8")


def plan_dataset(config: PlanConfig, storage: Storage) -> PlanResult:
    """Plan a dataset from Kinetics annotations and publish its plan files (see the module docstring).

    Raises:
        AnnotationError: a source cannot be read at all.
        PlanError: no source, versions mixed without ``allow_mixed_versions``, unknown or empty classes.
    """
    if not config.annotations:
        raise PlanError("no annotation source given (plan.annotations / --annotations)")
    sources = []
    for src in config.annotations:
        version = config.kinetics_version or detect_version(src)
        sources.append((src, version, fetch_annotations(src, config.cache_dir, config.download_timeout_s)))
    versions = sorted({v for _, v, _ in sources}, key=lambda v: v or 0)
    if len(versions) > 1 and not config.allow_mixed_versions:
        named = ", ".join(f"{s} (K{v or '?'})" for s, v, _ in sources)
        raise PlanError(
            f"annotation sources of different Kinetics versions: {named}. Kinetics-400 validation clips are "
            "inside Kinetics-700 training, so mixing leaks test data; set allow_mixed_versions to do it anyway"
        )

    all_rows: list[ClipRow] = []
    rejected: list[Rejection] = []
    known: set[str] | None = set()
    source_hashes = {}
    for src, version, path in sources:
        data = path.read_bytes()
        source_hashes[src] = hashlib.sha256(data).hexdigest()
        labels = set(label_map(version)) if version else None
        if labels is None or known is None:
            known = None
        else:
            known |= labels
        rows, bad = parse_annotations(
            data, source=src, known_labels=labels, version=version, max_clip_seconds=config.max_clip_seconds
        )
        log.info("%s: %d valid rows, %d rejected (Kinetics-%s)", src, len(rows), len(bad), version or "?")
        all_rows.extend(rows)
        rejected.extend(bad)
    rows_read = len(all_rows) + len(rejected)
    unique, dupes = deduplicate(all_rows)
    rejected.extend(dupes)

    by_class: dict[str, list[ClipRow]] = defaultdict(list)
    for row in unique:
        by_class[row.label].append(row)
    classes = select_classes(config, sorted(by_class), known)
    selected: dict[str, list[ClipRow]] = {}
    spare: dict[str, list[ClipRow]] = {}
    for label in classes:
        ordered = sorted(by_class[label], key=lambda r: _order_key(config.seed, r.clip_id))
        selected[label] = ordered[: config.per_class]
        spare[label] = ordered[config.per_class :]
    unselected = sum(len(v) for k, v in by_class.items() if k not in set(classes))
    final = assign_splits(selected, config)

    manifest_records = sorted(
        ((r.clip_id, r.youtube_id, r.time_start, r.time_end, r.label, split)
         for rows in final.values() for r, split in rows),
        key=lambda rec: (rec[4], SPLITS.index(rec[5]), rec[0]),
    )  # fmt: skip
    candidate_records = [
        (r.clip_id, r.youtube_id, r.time_start, r.time_end, r.label, r.split, rank)
        for label in classes for rank, r in enumerate(spare[label])
    ]  # fmt: skip
    rejected_records = [tuple(str(v) for v in asdict(r).values()) for r in rejected]

    manifest = _csv_bytes(MANIFEST_COLUMNS, manifest_records)
    manifest_sha = hashlib.sha256(manifest).hexdigest()
    prefix = dataset_prefix(config.dataset)
    config_dump = config.model_dump(mode="json", exclude={"cache_dir", "download_timeout_s"})
    fingerprint = hashlib.sha256(
        json.dumps({"config": config_dump, "sources": source_hashes}, sort_keys=True).encode()
    ).hexdigest()
    existing = _read_plan_info(storage, config.dataset)
    if existing is not None and existing.get("fingerprint") == fingerprint:
        # Same inputs and config as the plan in storage (which later top-ups may have extended): keep it.
        log.info("plan of %s is up to date (fingerprint %s); nothing written", config.dataset, fingerprint[:12])
        return PlanResult(
            dataset=config.dataset,
            manifest_uri=storage.key_uri(f"{prefix}/manifest.csv"),
            manifest_sha256=existing["manifest_sha256"],
            rows=existing["rows"],
            classes=sorted(existing["per_class"]),
            per_class=existing["per_class"],
            splits=existing["splits"],
            rejected=existing["rejected"],
            candidates=existing["candidates"],
            rows_read=existing["rows_read"],
            unselected=existing["unselected"],
            versions=list(versions),
            written=[],
            planned=sum(existing.get("targets", existing["per_class"]).values()),
        )
    per_class = dict(sorted(Counter(rec[4] for rec in manifest_records).items()))
    splits = {s: n for s in SPLITS if (n := sum(1 for rec in manifest_records if rec[5] == s))}
    plan_info = {
        "dataset": config.dataset,
        "manifest_sha256": manifest_sha,
        "rows": len(manifest_records),
        "per_class": per_class,
        "splits": splits,
        "candidates": len(candidate_records),
        "rejected": len(rejected_records),
        "rows_read": rows_read,
        "unselected": unselected,
        "sources": [{"source": s, "kinetics_version": v, "sha256": source_hashes[s]} for s, v, _ in sources],
        "config": config_dump,
        "fingerprint": fingerprint,
        "targets": per_class,
        "top_ups": [],
    }
    files = {
        f"{prefix}/manifest.csv": manifest,
        f"{prefix}/candidates.csv": _csv_bytes((*MANIFEST_COLUMNS, "rank"), candidate_records),
        f"{prefix}/rejected.csv": _csv_bytes(REJECTED_COLUMNS, rejected_records),
        # plan.json last: its presence with this manifest hash marks a complete plan.
        f"{prefix}/plan.json": (json.dumps(plan_info, indent=2, sort_keys=True) + "\n").encode(),
    }
    written = [key for key, data in files.items() if storage.put_bytes_if_changed(key, data)]
    log.info(
        "planned %s: %d clips in %d classes, %d rejected, %d spare candidates; %d file(s) written",
        config.dataset, len(manifest_records), len(classes), len(rejected_records), len(candidate_records),
        len(written),
    )  # fmt: skip
    return PlanResult(
        dataset=config.dataset,
        manifest_uri=storage.key_uri(f"{prefix}/manifest.csv"),
        manifest_sha256=manifest_sha,
        rows=len(manifest_records),
        classes=classes,
        per_class=per_class,
        splits=splits,
        rejected=len(rejected_records),
        candidates=len(candidate_records),
        rows_read=rows_read,
        unselected=unselected,
        versions=list(versions),
        written=written,
        planned=len(manifest_records),
    )


def _read_plan_info(storage: Storage, dataset: str) -> dict[str, Any] | None:
    key = f"{dataset_prefix(dataset)}/plan.json"
    if not storage.exists(key):
        return None
    info: dict[str, Any] = json.loads(storage.get_bytes(key))
    return info


def manifest_row_problem(row: dict[str, str]) -> str | None:
    """Why a manifest row (which may have been edited by hand) is unsafe to act on, or None when it is fine."""
    youtube_id = row.get("youtube_id") or ""
    if not YOUTUBE_ID.fullmatch(youtube_id):
        return f"invalid youtube_id {_show(youtube_id)}"
    try:
        start, end = int(row.get("time_start") or ""), int(row.get("time_end") or "")
    except ValueError:
        return "time_start/time_end are not whole numbers"
    if not 0 <= start < end:
        return f"bad window {start}..{end}"
    if row.get("clip_id") != clip_id_for(youtube_id, start, end):
        return f"clip_id {_show(row.get('clip_id') or '')} does not match its id and window"
    if row.get("split") not in SPLITS:
        return f"split {_show(row.get('split') or '')} is not one of train/val/test"
    return None


def read_manifest(storage: Storage, dataset: str) -> list[dict[str, str]]:
    """The manifest rows of a planned dataset (as strings, in manifest order)."""
    data = storage.get_bytes(f"{dataset_prefix(dataset)}/manifest.csv").decode("utf-8")
    return list(csv.DictReader(io.StringIO(data, newline="")))


@dataclass
class TopUpResult:
    """What a top-up round did."""

    dataset: str
    added: dict[str, int]
    exhausted: list[str]
    manifest_sha256: str
    previous_manifest_sha256: str
    manifest_uri: str

    def summary(self) -> dict[str, object]:
        out = asdict(self)
        out["added_total"] = sum(self.added.values())
        out["manifest_version"] = self.manifest_sha256[:12]
        out["manifest_changed"] = self.manifest_sha256 != self.previous_manifest_sha256
        return out


def top_up(
    storage: Storage, dataset: str, final_states: dict[str, str], permanent: set[str] | frozenset[str]
) -> TopUpResult:
    """Replace each clip that failed for good with the class's next candidate (same seeded order, same split).

    ``final_states`` maps every manifest clip to its ledger state; rows in a ``permanent`` state count as lost.
    Failed rows stay in the manifest with their state; the new rows are appended, the manifest version changes,
    and ``plan.json`` records the round. When nothing can be added, nothing is written.
    """
    prefix = dataset_prefix(dataset)
    info = _read_plan_info(storage, dataset)
    if info is None:
        raise PlanError(f"dataset {dataset!r} has no plan in {storage.uri}; run plan first")
    manifest = read_manifest(storage, dataset)
    candidates = list(csv.DictReader(io.StringIO(storage.get_bytes(f"{prefix}/candidates.csv").decode(), newline="")))
    targets: dict[str, int] = info.get("targets", info["per_class"])
    lost_splits: dict[str, list[str]] = defaultdict(list)
    alive: Counter[str] = Counter()
    for row in manifest:
        if final_states.get(row["clip_id"]) in permanent:
            lost_splits[row["label"]].append(row["split"])
        else:
            alive[row["label"]] += 1
    spare: dict[str, list[dict[str, str]]] = defaultdict(list)
    for cand in candidates:
        spare[cand["label"]].append(cand)
    added: dict[str, int] = {}
    exhausted = []
    used: set[str] = set()
    new_rows = []
    for label, target in sorted(targets.items()):
        need = target - alive[label]
        if need <= 0:
            continue
        # Refill the splits that lost clips, oldest loss first; any split beyond that is train.
        splits = lost_splits[label][-need:] if lost_splits[label] else []
        splits = splits + ["train"] * (need - len(splits))
        take = spare[label][:need]
        if len(take) < need:
            exhausted.append(label)
        for cand, split in zip(take, splits, strict=False):
            used.add(cand["clip_id"])
            new_rows.append({**{k: cand[k] for k in MANIFEST_COLUMNS}, "split": split})
        if take:
            added[label] = len(take)
    previous = info["manifest_sha256"]
    if not new_rows:
        return TopUpResult(dataset, {}, exhausted, previous, previous, storage.key_uri(f"{prefix}/manifest.csv"))
    records = sorted(
        [tuple(r[c] for c in MANIFEST_COLUMNS) for r in [*manifest, *new_rows]],
        key=lambda rec: (rec[4], SPLITS.index(rec[5]), rec[0]),
    )
    manifest_bytes = _csv_bytes(MANIFEST_COLUMNS, records)
    sha = hashlib.sha256(manifest_bytes).hexdigest()
    remaining = [tuple(c[k] for k in (*MANIFEST_COLUMNS, "rank")) for c in candidates if c["clip_id"] not in used]
    info.update(
        manifest_sha256=sha,
        rows=len(records),
        candidates=len(remaining),
        per_class=dict(sorted(Counter(rec[4] for rec in records).items())),
        splits={s: n for s in SPLITS if (n := sum(1 for rec in records if rec[5] == s))},
    )
    info["top_ups"] = [*info.get("top_ups", []), {"previous_manifest_sha256": previous, "added": added}]
    storage.put_bytes(f"{prefix}/manifest.csv", manifest_bytes)
    storage.put_bytes(f"{prefix}/candidates.csv", _csv_bytes((*MANIFEST_COLUMNS, "rank"), remaining))
    storage.put_bytes(f"{prefix}/plan.json", (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())
    log.info("top-up of %s: added %s; manifest %s -> %s", dataset, added, previous[:12], sha[:12])
    return TopUpResult(dataset, added, exhausted, sha, previous, storage.key_uri(f"{prefix}/manifest.csv"))
