"""A planned dataset's manifest as the steps read it: its rows (the version ``plan.json`` names), the checks a
row must pass before its id goes near a key, a URL or yt-dlp, and ``plan.json`` itself."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from action_recognition.annotations import SPLITS, YOUTUBE_ID, clip_id_for, show
from action_recognition.layout import manifest_key, plan_key
from action_recognition.storage import Storage

MANIFEST_COLUMNS = ("clip_id", "youtube_id", "time_start", "time_end", "label", "split")


def csv_bytes(columns: Sequence[str], records: Iterable[Sequence[object]]) -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(records)
    return buf.getvalue().encode("utf-8")


@dataclass
class PlanInfo:
    """``plan.json``: what the plan (and every top-up since) made of a dataset. ``manifest_sha256`` is the
    version of the manifest it names; ``pending_top_up`` names a top-up's staged files between its commit and
    their copy."""

    dataset: str
    manifest_sha256: str
    rows: int
    per_class: dict[str, int]
    splits: dict[str, int] = field(default_factory=dict)
    candidates: int = 0
    rejected: int = 0
    rows_read: int = 0
    unselected: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    #: Clips per class the plan aimed for: top-ups refill towards these.
    targets: dict[str, int] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    top_ups: list[dict[str, Any]] = field(default_factory=list)
    pending_top_up: dict[str, str] | None = None

    @classmethod
    def from_json(cls, data: bytes) -> PlanInfo:
        raw = json.loads(data)
        known = {f.name for f in fields(cls)}
        info = cls(**{k: v for k, v in raw.items() if k in known})
        info.targets = info.targets or dict(
            info.per_class
        )  # plans older than targets aimed for what they got
        return info

    def to_json(self) -> bytes:
        out = asdict(self)
        if out["pending_top_up"] is None:
            del out["pending_top_up"]
        return (json.dumps(out, indent=2, sort_keys=True) + "\n").encode()


def read_plan_info(storage: Storage, dataset: str) -> PlanInfo | None:
    """The dataset's ``plan.json``; None when it was never planned in ``storage``."""
    key = plan_key(dataset)
    if not storage.exists(key):
        return None
    return PlanInfo.from_json(storage.get_bytes(key))


def manifest_row_problem(row: dict[str, str]) -> str | None:
    """Why a manifest row (which may have been edited by hand) is unsafe to act on, or None when it is
    fine."""
    youtube_id = row.get("youtube_id") or ""
    if not YOUTUBE_ID.fullmatch(youtube_id):
        return f"invalid youtube_id {show(youtube_id)}"
    try:
        start, end = int(row.get("time_start") or ""), int(row.get("time_end") or "")
    except ValueError:
        return "time_start/time_end are not whole numbers"
    if not 0 <= start < end:
        return f"bad window {start}..{end}"
    if row.get("clip_id") != clip_id_for(youtube_id, start, end):
        return f"clip_id {show(row.get('clip_id') or '')} does not match its id and window"
    if row.get("split") not in SPLITS:
        return f"split {show(row.get('split') or '')} is not one of train/val/test"
    return None


def read_manifest(storage: Storage, dataset: str) -> list[dict[str, str]]:
    """The manifest rows of a planned dataset (as strings, in manifest order): the one ``plan.json`` names,
    also when a top-up was killed after naming it and before copying it into place."""
    info = read_plan_info(storage, dataset)
    pending = (info.pending_top_up if info else None) or {}
    data = storage.get_bytes(pending.get("manifest") or manifest_key(dataset)).decode("utf-8")
    return list(csv.DictReader(io.StringIO(data, newline="")))
