"""Kinetics annotation CSVs -> validated rows: the sources (files, URLs, their Kinetics version and label map)
and every row checked, each rejection with its source, line and reason. Light: no storage, no plan."""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import logging
import math
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from action_recognition.errors import AnnotationError

log = logging.getLogger(__name__)

YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]{11}", re.ASCII)
REQUIRED_COLUMNS = ("label", "youtube_id", "time_start", "time_end")
SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validate": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
REJECTED_COLUMNS = ("source", "line", "reason", "youtube_id", "label", "time_start", "time_end")
MAX_LABEL_CHARS = 200
MAX_ANNOTATION_BYTES = 1 << 30


def clip_id_for(youtube_id: str, time_start: int, time_end: int) -> str:
    """The Kinetics clip id: ``<youtube_id>_<start:06d>_<end:06d>``."""
    return f"{youtube_id}_{time_start:06d}_{time_end:06d}"


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
        raise AnnotationError(
            f"annotation source {source!r}: unsupported scheme {parsed.scheme!r} (path or http(s))"
        )
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


def show(value: str, limit: int = 40) -> str:
    """A raw field for a reason text: non-ASCII escaped (look-alikes become visible), long values cut."""
    shown = ascii(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _parse_time(name: str, raw: str) -> tuple[int | None, str | None]:
    try:
        value = float(raw.strip())
    except ValueError:
        return None, f"{name} {show(raw)} is not a number"
    if not math.isfinite(value):
        return None, f"{name} {show(raw)} is not a finite number"
    if value < 0:
        return None, f"{name} {show(raw)} is negative"
    if not value.is_integer():
        return None, f"{name} {show(raw)} is not a whole number of seconds (Kinetics clip ids need one)"
    if value >= 1e6:
        return None, f"{name} {show(raw)} is beyond 999999 s"
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
    if text_bytes.startswith(
        (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
    ):  # spreadsheet "Unicode text" exports
        try:
            text_bytes = text_bytes.decode("utf-16").encode("utf-8")
        except UnicodeDecodeError:
            return [], [
                Rejection(source, 1, "a UTF-16 byte-order mark, but not valid UTF-16: save the file as UTF-8")
            ]
    if b"\x00" in text_bytes[:4096]:
        return [], [
            Rejection(
                source, 1, "NUL bytes: not UTF-8 text (UTF-16 without a byte-order mark?); save as UTF-8"
            )
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
                        f"header lacks column(s) {', '.join(missing)}; found {', '.join(map(show, header))}"
                    )
                continue
            raw = dict(zip(header, record, strict=False))
            keep = {k: raw.get(k, "")[:200] for k in ("youtube_id", "label", "time_start", "time_end")}
            if header_problem:
                rejected.append(Rejection(source, line, header_problem, **keep))
                continue
            if len(record) != len(header):
                rejected.append(
                    Rejection(
                        source,
                        line,
                        f"expected {len(header)} fields, found {len(record)} (unquoted comma or missing "
                        "field?)",
                        **keep,
                    )
                )
                continue
            row, reason = _validate_row(
                raw, source, line, known_labels, version, max_clip_seconds, default_split
            )
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
        return None, f"youtube_id {show(youtube_id)} is not 11 characters of A-Z a-z 0-9 _ -"
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
        return None, f"label {show(label)} is too long or has control characters"
    if known_labels is not None and label not in known_labels:
        kinetics = f"Kinetics-{version}" if version else "Kinetics"
        return None, f"label {show(label, 60)} is not a {kinetics} class"
    split_raw = raw.get("split", "").strip().lower()
    split = _SPLIT_ALIASES.get(split_raw) if split_raw else default_split
    if split is None:
        return None, f"split {show(split_raw)} is not one of train/val/test (or training/validate/testing)"
    return ClipRow(
        clip_id_for(youtube_id, start, end), youtube_id, start, end, label, split, source, line
    ), None
