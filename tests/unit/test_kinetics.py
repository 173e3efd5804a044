"""The planner on the real Kinetics CSVs, on malformed files, and its idempotence."""

from __future__ import annotations

import csv
import functools
import http.server
import io
import json
import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from action_recognition.annotations import clip_id_for, detect_version, fetch_annotations, parse_annotations
from action_recognition.config import PlanConfig
from action_recognition.errors import AnnotationError, PlanError
from action_recognition.kinetics import plan_dataset
from action_recognition.layout import manifest_key, plan_key
from action_recognition.manifest import read_manifest
from action_recognition.storage import LocalStorage, open_storage
from action_recognition.topup import top_up
from tests.support.paths import KINETICS, free_port
from tests.support.reliability import Reliability

K400 = str(KINETICS / "kinetics-400_val.csv")
K600 = str(KINETICS / "kinetics-600_val.csv")
DANCE15 = {
    "belly dancing",
    "breakdancing",
    "country line dancing",
    "dancing ballet",
    "dancing charleston",
    "dancing gangnam style",
    "dancing macarena",
    "jumpstyle dancing",
    "mosh pit dancing",
    "robot dancing",
    "salsa dancing",
    "square dancing",
    "swing dancing",
    "tango dancing",
    "tap dancing",
}


def _cfg(**kw: object) -> PlanConfig:
    base: dict[str, object] = {"annotations": [K600], "per_class": 50, "dataset": "dance15"}
    base.update(kw)
    return PlanConfig.model_validate(base)


def _csv_rows(store: LocalStorage, key: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(store.get_bytes(key).decode())))


def test_dance15_from_k600_val(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    result = plan_dataset(_cfg(), store)
    assert result.rows == 750
    assert set(result.classes) == DANCE15
    assert set(result.per_class.values()) == {50}
    rows = read_manifest(store, "dance15")
    assert len(rows) == 750
    assert list(rows[0]) == ["clip_id", "youtube_id", "time_start", "time_end", "label", "split"]
    assert len({r["clip_id"] for r in rows}) == 750
    for r in rows:
        assert r["clip_id"] == clip_id_for(r["youtube_id"], int(r["time_start"]), int(r["time_end"]))
    # Only a validation CSV: val and test are carved per class, the same count in each class.
    per_class_split = Counter((r["label"], r["split"]) for r in rows)
    for label in DANCE15:
        assert per_class_split[(label, "test")] == 10
        assert per_class_split[(label, "val")] == 8
        assert per_class_split[(label, "train")] == 32
    # No video straddles two splits.
    splits_of: dict[str, set[str]] = {}
    for r in rows:
        splits_of.setdefault(r["youtube_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits_of.values())
    # Every input row is in exactly one place.
    assert result.rows + result.candidates + result.rejected + result.unselected == result.rows_read == 30000


def test_replanning_writes_nothing(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    first = plan_dataset(_cfg(), store)
    assert len(first.written) == 4
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    second = plan_dataset(_cfg(), store)
    assert second.written == []
    assert second.manifest_sha256 == first.manifest_sha256
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == mtimes


def test_plan_to_s3(s3_bucket: str) -> None:
    store = open_storage(f"{s3_bucket}/ar")
    result = plan_dataset(_cfg(per_class=5), store)
    assert result.manifest_uri == f"{s3_bucket}/ar/datasets/dance15/manifest.csv"
    assert len(read_manifest(store, "dance15")) == 75
    assert plan_dataset(_cfg(per_class=5), store).written == []


def test_seed_and_cap_and_candidates(tmp_path: Path) -> None:
    a = LocalStorage(tmp_path / "a")
    b = LocalStorage(tmp_path / "b")
    plan_dataset(_cfg(per_class=20, seed=1), a)
    plan_dataset(_cfg(per_class=20, seed=2), b)
    ids_a = {r["clip_id"] for r in read_manifest(a, "dance15")}
    ids_b = {r["clip_id"] for r in read_manifest(b, "dance15")}
    assert len(ids_a) == len(ids_b) == 300
    assert ids_a != ids_b
    cands = _csv_rows(a, "datasets/dance15/candidates.csv")
    assert len(cands) == 15 * 30
    assert not ids_a & {c["clip_id"] for c in cands}
    by_class = Counter(c["label"] for c in cands)
    assert set(by_class.values()) == {30}
    ranks = [int(c["rank"]) for c in cands if c["label"] == "tap dancing"]
    assert ranks == list(range(30))
    # The same seed twice gives the same manifest, whatever the folder.
    plan_dataset(_cfg(per_class=20, seed=1), b)
    assert {r["clip_id"] for r in read_manifest(b, "dance15")} == ids_a


def test_k400_has_13_dance_classes(tmp_path: Path) -> None:
    result = plan_dataset(_cfg(annotations=[K400], per_class=3), LocalStorage(tmp_path))
    assert len(result.classes) == 13
    assert set(result.classes) < DANCE15


def test_exact_classes_and_quirky_labels(tmp_path: Path) -> None:
    labels = ["massaging person's head", "passing American football (in game)"]
    result = plan_dataset(
        _cfg(annotations=[K400], classes=labels, class_contains=None, per_class=4, dataset="quirky"),
        LocalStorage(tmp_path),
    )
    assert result.classes == sorted(labels)
    assert result.rows == 8
    # Labels never become paths.
    assert sorted(p.name for p in (tmp_path / "datasets" / "quirky").iterdir()) == [
        "candidates.csv",
        "manifest.csv",
        "plan.json",
        "rejected.csv",
    ]


def test_unknown_class_suggests(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match=r"'tap dance' \(did you mean 'tap dancing'"):
        plan_dataset(_cfg(classes=["tap dance"], class_contains=None), LocalStorage(tmp_path))
    with pytest.raises(PlanError, match="no class name contains 'zzz'"):
        plan_dataset(_cfg(class_contains="zzz"), LocalStorage(tmp_path))


def test_mixing_versions_needs_consent(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="different Kinetics versions"):
        plan_dataset(_cfg(annotations=[K400, K600]), LocalStorage(tmp_path))
    result = plan_dataset(_cfg(annotations=[K400, K600], allow_mixed_versions=True), LocalStorage(tmp_path))
    assert result.versions == [400, 600]
    assert len(result.classes) == 15


def test_official_splits_are_kept(tmp_path: Path) -> None:
    train = tmp_path / "kinetics700_train.csv"
    val = tmp_path / "kinetics700_validate.csv"
    header = "label,youtube_id,time_start,time_end,split\n"
    train.write_text(header + "".join(f"tap dancing,tr{i:09d},0,10,train\n" for i in range(20)))
    val.write_text(header + "".join(f"tap dancing,va{i:09d},0,10,validate\n" for i in range(5)))
    result = plan_dataset(
        _cfg(annotations=[str(train), str(val)], per_class=100, dataset="k700"), LocalStorage(tmp_path / "s")
    )
    assert result.versions == [700]
    # val is official; only test is carved out of train (20 * 0.2 = 4).
    assert result.splits == {"train": 16, "val": 5, "test": 4}
    rows = read_manifest(LocalStorage(tmp_path / "s"), "k700")
    assert all(r["youtube_id"].startswith("va") for r in rows if r["split"] == "val")
    official = plan_dataset(
        _cfg(annotations=[str(train), str(val)], per_class=100, dataset="k700", carve_missing_splits=False),
        LocalStorage(tmp_path / "o"),
    )
    assert official.splits == {"train": 20, "val": 5}


MALFORMED = (
    "\ufefflabel,youtube_id,time_start,time_end,split\r\n"
    "tap dancing,abcdefghijk,1,11,val\r\n"  # 2 good
    "\r\n"  # blank line: not a row
    '"salsa dancing",-bcdefghijk,5,15,val\r\n'  # 4 good, quoted, id starting with '-'
    "tap dancing,short,1,11,val\r\n"  # 5 id too short
    "tap dancing,abcdefghij$,1,11,val\r\n"  # 6 metacharacter
    "tap dancing,../../etc/p,1,11,val\r\n"  # 7 traversal
    "tap dancing,$(rm -rf /),1,11,val\r\n"  # 8 shell
    "tap dancing,аbcdefghijk,1,11,val\r\n"  # 9 Cyrillic a
    "tap dancing,bbcdefghijk,-3,7,val\r\n"  # 10 negative
    "tap dancing,cbcdefghijk,nan,7,val\r\n"  # 11 NaN
    "tap dancing,dbcdefghijk,9,4,val\r\n"  # 12 inverted
    "tap dancing,ebcdefghijk,inf,4,val\r\n"  # 13 infinite
    "tap dancing,fbcdefghijk,1,11\r\n"  # 14 missing column
    "tap dancing,gbcdefghijk,1,11,val,extra\r\n"  # 15 extra column
    "tap, dancing,hbcdefghijk,1,11,val\r\n"  # 16 unquoted comma
    '"tap, dancing",ibcdefghijk,1,11,val\r\n'  # 17 quoted comma: well-formed, unknown label
    "not a class,jbcdefghijk,1,11,val\r\n"  # 18 unknown label
    "tap dancing,kbcdefghijk,1,11,someday\r\n"  # 19 unknown split
    "tap dancing,abcdefghijk,1,11,val\r\n"  # 20 duplicate of line 2
    "salsa dancing,abcdefghijk,1,11,val\r\n"  # 21 same clip, other label
    "tap dancing,lbcdefghijk,1.5,11,val\r\n"  # 22 fractional time
    "tap dancing,mbcdefghijk,0,500,val\r\n"  # 23 window too long
    ",,,,\r\n"  # 24 empty row
    "tap dancing,nbcdefghijk,0,10,val\r\n"  # 25 good
)


def test_malformed_csv_rejects_each_bad_row_with_a_reason(tmp_path: Path, reliability: Reliability) -> None:
    path = tmp_path / "kinetics-600_bad.csv"
    path.write_bytes(MALFORMED.encode("utf-8"))
    store = LocalStorage(tmp_path / "s")
    result = plan_dataset(_cfg(annotations=[str(path)], per_class=50, dataset="bad"), store)
    manifest_ids = {r["youtube_id"] for r in read_manifest(store, "bad")}
    assert manifest_ids == {"abcdefghijk", "-bcdefghijk", "nbcdefghijk"}
    rejected = {int(r["line"]): r["reason"] for r in _csv_rows(store, "datasets/bad/rejected.csv")}
    expected = {
        5: "not 11 characters",
        6: "not 11 characters",
        7: "not 11 characters",
        8: "not 11 characters",
        9: "not 11 characters",
        10: "negative",
        11: "not a finite number",
        12: "not after time_start",
        13: "not a finite number",
        14: "expected 5 fields, found 4",
        15: "expected 5 fields, found 6",
        16: "expected 5 fields, found 6",
        17: "not a Kinetics-600 class",
        18: "not a Kinetics-600 class",
        19: "split 'someday'",
        20: "duplicate of line 2",
        21: "same clip as line 2",
        22: "not a whole number",
        23: "longer than max_clip_seconds",
        24: "empty row",
    }
    for line, words in expected.items():
        reason = rejected.get(line)
        reliability.rejected(f"csv line {line}: {words}", reason if reason and words in reason else None)
    assert set(rejected) == set(expected)
    for line, words in expected.items():
        assert words in rejected[line], (line, rejected[line])
    assert "\\u0430" in rejected[9], "a look-alike must be shown escaped"
    assert result.rejected == len(expected)
    assert result.rows + result.rejected + result.unselected + result.candidates == result.rows_read


def test_header_without_required_columns(tmp_path: Path, reliability: Reliability) -> None:
    rows, rejected = parse_annotations(
        b"name,id\nfoo,abcdefghijk\nbar,bbcdefghijk\n",
        source="x.csv",
        known_labels=None,
        version=None,
        max_clip_seconds=20,
    )
    reliability.rejected(
        "csv: a header without the Kinetics columns", rejected[0].reason if rejected else None
    )
    assert rows == []
    assert [r.line for r in rejected] == [2, 3]
    assert all("header lacks column(s) label, youtube_id, time_start, time_end" in r.reason for r in rejected)


def test_invalid_utf8_row(tmp_path: Path, reliability: Reliability) -> None:
    data = b"label,youtube_id,time_start,time_end\nta\xffp,abcdefghijk,1,11\ntap dancing,bbcdefghijk,1,11\n"
    rows, rejected = parse_annotations(
        data, source="k.csv", known_labels={"tap dancing"}, version=600, max_clip_seconds=20
    )
    assert [r.youtube_id for r in rows] == ["bbcdefghijk"]
    reliability.rejected("csv: a row that is not UTF-8", rejected[0].reason)
    assert rejected[0].reason == "not valid UTF-8"
    assert rows[0].split == "train", "no split column and no split in the file name: train"


def test_detect_version() -> None:
    assert detect_version("data/kinetics-400_val.csv") == 400
    assert detect_version("https://example.org/kinetics/700_2020/annotations/train.csv") == 700
    assert detect_version("annotations.csv") is None


def test_missing_source_and_bad_scheme(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="does not exist"):
        fetch_annotations(str(tmp_path / "nope.csv"), tmp_path)
    with pytest.raises(AnnotationError, match="unsupported scheme 'ftp'"):
        fetch_annotations("ftp://host/x.csv", tmp_path)
    with pytest.raises(PlanError, match="no annotation source"):
        plan_dataset(_cfg(annotations=[]), LocalStorage(tmp_path))


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server over a folder that records every path requested."""
    served = tmp_path / "www"
    served.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *_args: object) -> None:
            requests.append(self.path)

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", free_port()), functools.partial(Handler, directory=str(served))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_annotations_from_url_are_cached(http_dir: tuple[str, list[str]], tmp_path: Path) -> None:
    base, requests = http_dir
    (tmp_path / "www" / "kinetics-600_val.csv").write_bytes(Path(K600).read_bytes())
    url = f"{base}/kinetics-600_val.csv"
    cfg = _cfg(annotations=[url], per_class=2, cache_dir=tmp_path / "cache")
    first = plan_dataset(cfg, LocalStorage(tmp_path / "s"))
    second = plan_dataset(cfg, LocalStorage(tmp_path / "s"))
    assert first.rows == second.rows == 30
    assert len([r for r in requests if "kinetics-600_val.csv" in r]) == 1
    info = json.loads((tmp_path / "s" / "datasets" / "dance15" / "plan.json").read_text())
    assert info["sources"][0]["kinetics_version"] == 600
    with pytest.raises(AnnotationError, match="cannot download"):
        fetch_annotations(f"{base}/missing.csv", tmp_path / "cache")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le-no-bom", "latin-1"])
def test_other_encodings(encoding: str, reliability: Reliability) -> None:
    """UTF-16 with a BOM (a spreadsheet's "Unicode text") is read; UTF-16 without one and Latin-1 are refused
    with a reason that says what to do, never parsed as garbage."""
    text = "label,youtube_id,time_start,time_end,split\ntap dancing,abcdefghijk,1,11,val\n"
    data = {
        "utf-16": text.encode("utf-16"),
        "utf-16-le-no-bom": text.encode("utf-16-le"),
        "latin-1": text.replace("tap dancing,abcdefghijk", "tap dancing,abcd\xe9fghijk").encode("latin-1"),
    }[encoding]
    if encoding == "utf-16":
        with reliability.handled("csv: UTF-16 with a byte-order mark", "decoded and read like UTF-8"):
            rows, rejected = parse_annotations(
                data, source="k.csv", known_labels={"tap dancing"}, version=600, max_clip_seconds=20
            )
            assert [r.youtube_id for r in rows] == ["abcdefghijk"] and rejected == []
        return
    rows, rejected = parse_annotations(
        data, source="k.csv", known_labels={"tap dancing"}, version=600, max_clip_seconds=20
    )
    reason = rejected[0].reason if rejected and not rows else None
    reliability.rejected(f"csv: {encoding}", reason)
    assert reason and ("UTF-8" in reason), reason


class _Killed(BaseException):
    """The process died here (not an error any code catches)."""


class _DiesAfterWrites(LocalStorage):
    """Storage whose process is killed after ``writes`` more writes."""

    def __init__(self, root: Path, writes: int) -> None:
        super().__init__(root)
        self.left = writes

    def put_bytes(self, key: str, data: bytes) -> None:
        if self.left == 0:
            raise _Killed(key)
        self.left -= 1
        super().put_bytes(key, data)


def _consistent(store: LocalStorage) -> dict[str, object]:
    """plan.json and the manifest every step reads agree (rows, classes); returns plan.json."""
    info = json.loads(store.get_bytes(plan_key("dance15")))
    rows = read_manifest(store, "dance15")
    assert len(rows) == info["rows"] and dict(Counter(r["label"] for r in rows)) == info["per_class"], info
    return info


@pytest.mark.parametrize("writes", range(6))
def test_a_top_up_killed_between_its_writes_leaves_a_consistent_plan(tmp_path: Path, writes: int) -> None:
    """Killed after any of its writes, a top-up leaves plan.json and the manifest steps read consistent, and
    the next top-up ends exactly where an unbroken one does."""
    whole = LocalStorage(tmp_path / "whole")
    plan_dataset(_cfg(classes=["tap dancing", "salsa dancing"], class_contains=None, per_class=3), whole)
    lost = {r["clip_id"]: "unavailable" for r in read_manifest(whole, "dance15")[:2]}
    broken = tmp_path / "broken"
    shutil.copytree(whole.root, broken)
    assert top_up(whole, "dance15", lost, {"unavailable"}).added, "the test needs a top-up that adds rows"

    with pytest.raises(_Killed):
        top_up(_DiesAfterWrites(broken, writes), "dance15", lost, {"unavailable"})
    _consistent(LocalStorage(broken))
    top_up(LocalStorage(broken), "dance15", lost, {"unavailable"})
    info = _consistent(LocalStorage(broken))
    assert "pending_top_up" not in info and len(info["top_ups"]) == 1  # type: ignore[arg-type]
    assert LocalStorage(broken).get_bytes(manifest_key("dance15")) == whole.get_bytes(manifest_key("dance15"))
    assert LocalStorage(broken).list("datasets/dance15/staged/") == [], (
        "staged files are removed once in place"
    )
