"""The ``top-up`` step: clips lost for good replaced by their class's next candidates, as a new manifest
version."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass

from action_recognition.annotations import SPLITS
from action_recognition.errors import PlanError
from action_recognition.layout import candidates_key, manifest_key, plan_key, staged_key
from action_recognition.manifest import MANIFEST_COLUMNS, PlanInfo, csv_bytes, read_manifest, read_plan_info
from action_recognition.storage import Storage

log = logging.getLogger(__name__)


def _finish_top_up(storage: Storage, dataset: str, info: PlanInfo) -> None:
    """Copy a committed top-up's staged manifest and candidates into place, then drop the mark (idempotent: a
    top-up killed anywhere after ``plan.json`` named its files is finished by the next call)."""
    pending, info.pending_top_up = info.pending_top_up, None
    if not pending:
        return
    storage.put_bytes(manifest_key(dataset), storage.get_bytes(pending["manifest"]))
    storage.put_bytes(candidates_key(dataset), storage.get_bytes(pending["candidates"]))
    storage.put_bytes(plan_key(dataset), info.to_json())
    for key in (pending["manifest"], pending["candidates"]):
        storage.delete(key)


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

    ``final_states`` maps every manifest clip to its ledger state; rows in a ``permanent`` state count as
    lost. Failed rows stay in the manifest with their state; the new rows are appended, the manifest version
    changes, and ``plan.json`` records the round. When nothing can be added, nothing is written.

    Killed at any point, it leaves ``plan.json`` and the manifest it names consistent: the new manifest and
    candidates are staged under content-keyed names, ``plan.json`` then names them (the commit), and only then
    are they copied into place; the next top-up finishes a committed one first.
    """
    info = read_plan_info(storage, dataset)
    if info is None:
        raise PlanError(f"dataset {dataset!r} has no plan in {storage.uri}; run plan first")
    _finish_top_up(storage, dataset, info)
    manifest = read_manifest(storage, dataset)
    candidates = list(
        csv.DictReader(io.StringIO(storage.get_bytes(candidates_key(dataset)).decode(), newline=""))
    )
    new_rows, added, exhausted, used = _replacements(
        manifest, candidates, info.targets, final_states, permanent
    )
    previous = info.manifest_sha256
    if not new_rows:
        return TopUpResult(dataset, {}, exhausted, previous, previous, storage.key_uri(manifest_key(dataset)))
    records = sorted(
        [tuple(r[c] for c in MANIFEST_COLUMNS) for r in [*manifest, *new_rows]],
        key=lambda rec: (rec[4], SPLITS.index(rec[5]), rec[0]),
    )
    manifest_bytes = csv_bytes(MANIFEST_COLUMNS, records)
    sha = hashlib.sha256(manifest_bytes).hexdigest()
    remaining = [
        tuple(c[k] for k in (*MANIFEST_COLUMNS, "rank")) for c in candidates if c["clip_id"] not in used
    ]
    info.manifest_sha256, info.rows, info.candidates = sha, len(records), len(remaining)
    info.per_class = dict(sorted(Counter(rec[4] for rec in records).items()))
    info.splits = {s: n for s in SPLITS if (n := sum(1 for rec in records if rec[5] == s))}
    info.top_ups.append({"previous_manifest_sha256": previous, "added": added})
    staged = {"manifest": staged_key(dataset, "manifest", sha)}
    candidates_bytes = csv_bytes((*MANIFEST_COLUMNS, "rank"), remaining)
    staged["candidates"] = staged_key(dataset, "candidates", hashlib.sha256(candidates_bytes).hexdigest())
    storage.put_bytes(staged["manifest"], manifest_bytes)
    storage.put_bytes(staged["candidates"], candidates_bytes)
    info.pending_top_up = staged
    storage.put_bytes(plan_key(dataset), info.to_json())  # the commit
    _finish_top_up(storage, dataset, info)
    log.info("top-up of %s: added %s; manifest %s -> %s", dataset, added, previous[:12], sha[:12])
    return TopUpResult(dataset, added, exhausted, sha, previous, storage.key_uri(manifest_key(dataset)))


def _replacements(
    manifest: list[dict[str, str]],
    candidates: list[dict[str, str]],
    targets: dict[str, int],
    final_states: dict[str, str],
    permanent: set[str] | frozenset[str],
) -> tuple[list[dict[str, str]], dict[str, int], list[str], set[str]]:
    """The candidates that bring each class back to its target: the new rows, how many a class got, the
    classes without enough candidates, and the candidates' ids used."""
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
    return new_rows, added, exhausted, used
