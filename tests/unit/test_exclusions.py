"""A person's exclusions: a ledger state with who, when and why, that wins over every other state, survives a
re-plan, is counted, leaves the clip out of a build and is replaced by the top-up; refused calls change
nothing. Planned from the real Kinetics-600 val CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from action_recognition.cli import app
from action_recognition.config import PlanConfig
from action_recognition.exclusions import ExclusionError, exclude, exclusions
from action_recognition.kinetics import plan_dataset
from action_recognition.ledger import PERMANENT, LedgerRecord, final_states, status, write_shard
from action_recognition.manifest import read_manifest
from action_recognition.storage import LocalStorage
from action_recognition.topup import top_up
from tests.support.paths import KINETICS

K600 = str(KINETICS / "kinetics-600_val.csv")


def _plan(store: LocalStorage, dataset: str, classes: list[str], per_class: int = 3) -> list[dict[str, str]]:
    cfg = PlanConfig(
        annotations=[K600], classes=classes, class_contains=None, per_class=per_class, dataset=dataset
    )
    plan_dataset(cfg, store)
    return read_manifest(store, dataset)


@pytest.fixture
def store(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


def test_an_exclusion_is_a_ledger_state_that_the_top_up_replaces(store: LocalStorage) -> None:
    rows = _plan(store, "dance", ["tap dancing", "salsa dancing"])
    ok = [LedgerRecord(r["clip_id"], r["label"], r["split"], "ok") for r in rows]
    write_shard(store, "dance", "download", (0, 1), ok)
    write_shard(store, "dance", "clip", (0, 1), ok)
    victim = next(r for r in rows if r["split"] != "test")
    result = exclude(store, "dance", [victim["clip_id"]], " wrong dance: salsa, not tap ", by="ana")
    assert result.excluded == [victim["clip_id"]] and not result.notes
    record = exclusions(store, "dance")[victim["clip_id"]]
    assert (record.state, record.reason, record.by) == ("excluded", "wrong dance: salsa, not tap", "ana")
    assert record.at.endswith("+00:00")
    states = final_states(store, "dance")
    assert states[victim["clip_id"]] == "excluded" and "excluded" in PERMANENT
    assert status(store, "dance").states == {"ok": len(rows) - 1, "excluded": 1}
    # The top-up treats it as lost for good: the class's next candidate comes in, same split.
    added = top_up(store, "dance", states, PERMANENT)
    assert added.added == {victim["label"]: 1}, added.summary()
    grown = read_manifest(store, "dance")
    assert final_states(store, "dance")[victim["clip_id"]] == "excluded", "still excluded in the new version"
    assert len(grown) == len(rows) + 1
    # Again: nothing new written, said so.
    again = exclude(store, "dance", [victim["clip_id"]], "again", by="ana")
    assert (again.excluded, again.already) == ([], [victim["clip_id"]])
    assert exclusions(store, "dance")[victim["clip_id"]].reason == "wrong dance: salsa, not tap"


def test_an_exclusion_survives_a_re_plan(store: LocalStorage) -> None:
    rows = _plan(store, "dance", ["tap dancing"], per_class=3)
    exclude(store, "dance", [rows[0]["clip_id"]], "cut", by="ana")
    _plan(store, "dance", ["tap dancing"], per_class=5)  # a new manifest version
    assert final_states(store, "dance")[rows[0]["clip_id"]] == "excluded"


def test_refused_exclusions_change_nothing(store: LocalStorage) -> None:
    rows = _plan(store, "dance", ["tap dancing"])
    other = _plan(store, "other", ["salsa dancing"])
    cid = rows[0]["clip_id"]
    with pytest.raises(ExclusionError, match="needs a --reason"):
        exclude(store, "dance", [cid], "   ")
    with pytest.raises(ExclusionError, match=r"not clips of dataset 'dance'.*nope"):
        exclude(store, "dance", [cid, "nope"], "why")
    with pytest.raises(ExclusionError, match=rf"{other[0]['clip_id']} \(a clip of 'other'\)"):
        exclude(store, "dance", [other[0]["clip_id"]], "why")
    with pytest.raises(ExclusionError, match="has no manifest"):
        exclude(store, "nothere", [cid], "why")
    assert exclusions(store, "dance") == {} and not store.list("ledger/dance/review/")
    assert ExclusionError.retryable is False


def test_a_test_clip_can_be_excluded_and_the_cli_says_so(store: LocalStorage) -> None:
    rows = _plan(store, "dance", ["tap dancing", "salsa dancing"], per_class=10)
    test_clip = next(r["clip_id"] for r in rows if r["split"] == "test")
    out = CliRunner().invoke(
        app,
        [
            "exclude",
            test_clip,
            "--dataset",
            "dance",
            "--reason",
            "black frames",
            "--storage",
            str(store.root),
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output.strip().splitlines()[-1])
    assert summary["excluded"] == [test_clip] and "test clip" in summary["notes"][0]
    refused = CliRunner().invoke(
        app, ["exclude", test_clip, "--dataset", "dance", "--storage", str(store.root), "--json"]
    )
    assert refused.exit_code == 2 and '"retryable": false' in refused.output, refused.output
