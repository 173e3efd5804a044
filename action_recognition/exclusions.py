"""Excluding clips a person judged wrong (``action-recognition exclude``): a ledger state, not a deletion.

An exclusion is a record in ``ledger/<dataset>/review/`` with state ``excluded`` and who, when and why. It
wins over every other stage's state in :func:`action_recognition.ledger.final_states`, so it survives
re-plans and manifest versions (records are keyed by clip id, not by manifest), the health page and
``status`` count it, the dataset builds leave the clip out, and the top-up replaces it with the class's next
candidate like a clip lost for good. A call that is refused (an empty reason, an id that is not a clip of
the dataset) changes nothing.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime

from action_recognition.errors import ConfigError
from action_recognition.layout import DATASETS, manifest_key, shard_key
from action_recognition.ledger import REVIEW_STAGE, LedgerRecord, read_stage, write_shard
from action_recognition.manifest import read_manifest
from action_recognition.storage import Storage

EXCLUDED = "excluded"


class ExclusionError(ConfigError):
    """A refused exclusion (bad input: no retry fixes it)."""


@dataclass
class ExclusionResult:
    dataset: str
    excluded: list[str]
    already: list[str]
    notes: list[str] = field(default_factory=list)
    ledger_key: str = ""

    def summary(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
            "excluded": self.excluded,
            "already_excluded": self.already,
            "notes": self.notes,
            "ledger_key": self.ledger_key,
        }


def exclusions(storage: Storage, dataset: str) -> dict[str, LedgerRecord]:
    """clip id -> its exclusion record."""
    return {cid: r for cid, r in read_stage(storage, dataset, REVIEW_STAGE).items() if r.state == EXCLUDED}


def exclude(
    storage: Storage, dataset: str, clip_ids: list[str], reason: str, *, by: str | None = None
) -> ExclusionResult:
    """Record ``clip_ids`` of ``dataset`` as excluded, with ``reason`` and ``by`` (default: the user).

    Raises:
        ExclusionError: an empty reason, no ids, or an id that is not a clip of ``dataset`` (naming the
            dataset it belongs to when it is another's); nothing is written then.
    """
    reason = reason.strip()
    if not reason:
        raise ExclusionError("exclude needs a --reason: say why the clip is wrong (it is recorded with it)")
    if not clip_ids:
        raise ExclusionError("exclude needs at least one clip id")
    if not storage.exists(manifest_key(dataset)):
        raise ExclusionError(f"dataset {dataset!r} has no manifest in {storage.uri}; plan it first")
    rows = {r["clip_id"]: r for r in read_manifest(storage, dataset)}
    unknown = [cid for cid in dict.fromkeys(clip_ids) if cid not in rows]
    if unknown:
        raise ExclusionError(_unknown_message(storage, dataset, unknown))
    who = by or os.environ.get("AIRFLOW_CTX_DAG_RUN_ID") or getpass.getuser()
    when = datetime.now(UTC).isoformat(timespec="seconds")
    recorded = read_stage(storage, dataset, REVIEW_STAGE)
    new, already, notes = [], [], []
    for cid in dict.fromkeys(clip_ids):
        if cid in recorded and recorded[cid].state == EXCLUDED:
            already.append(cid)
            continue
        row = rows[cid]
        if row["split"] == "test":
            notes.append(
                f"{cid} is a test clip: excluding it changes the test set, so the next promotion compares "
                "the champion on the new one"
            )
        rec = LedgerRecord(cid, row["label"], row["split"], EXCLUDED, reason=reason, by=who, at=when)
        recorded[cid] = rec
        new.append(cid)
    if new:  # one file, written at once: a refused or repeated call writes nothing
        write_shard(storage, dataset, REVIEW_STAGE, (0, 1), list(recorded.values()))
    return ExclusionResult(dataset, new, already, notes, shard_key(dataset, REVIEW_STAGE, (0, 1)))


def _unknown_message(storage: Storage, dataset: str, unknown: list[str]) -> str:
    """Which ids are not clips of ``dataset``, and whose they are when another dataset has them."""
    owners: dict[str, str] = {}
    for key in storage.list(f"{DATASETS}/"):
        if not key.endswith("/manifest.csv"):
            continue
        other = key[len(DATASETS) + 1 : -len("/manifest.csv")]
        if other == dataset:
            continue
        ids = {r["clip_id"] for r in read_manifest(storage, other)}
        for cid in unknown:
            if cid in ids and cid not in owners:
                owners[cid] = other
    parts = [f"{cid} (a clip of {owners[cid]!r})" if cid in owners else cid for cid in unknown]
    return f"not clips of dataset {dataset!r}, nothing excluded: {', '.join(parts)}"
