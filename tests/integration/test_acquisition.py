"""Real yt-dlp against a local Range-capable HTTP server, real ffmpeg, the ledger, the breaker and top-up."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from action_recognition.clip import clip_shard
from action_recognition.config import ClipConfig, DownloadConfig, PlanConfig
from action_recognition.download import download_shard, ytdlp_fetch
from action_recognition.kinetics import plan_dataset
from action_recognition.layout import clip_key, raw_key
from action_recognition.ledger import PERMANENT, final_states, read_stage, status
from action_recognition.manifest import read_manifest
from action_recognition.media import probe
from action_recognition.storage import LocalStorage, Storage, open_storage
from action_recognition.topup import top_up
from devtools.localserve import VideoServer
from tests.support.media import make_audio_only, make_video, truncate
from tests.support.paths import VIDEOS, free_port
from tests.support.reliability import Reliability

pytestmark = pytest.mark.integration

LONG, DEMO, NTU, SHORT, TRUNC_END, TRUNC_MOOV, AUDIO, HTML, GONE, BUSY = (
    "longvideo01",
    "-demovideo1",
    "ntu_sample1",
    "shortvid_01",
    "truncEnd_01",
    "truncMoov01",
    "audioOnly01",
    "htmlpage_01",
    "missing0001",
    "ratelimit01",
)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    long = make_video(d / "long.mp4", seconds=300)
    no_faststart = make_video(d / "plain.mp4", seconds=20, faststart=False)
    return {
        LONG: long,
        DEMO: VIDEOS / "demo.mp4",
        NTU: VIDEOS / "S001C001P001R001A001_rgb.avi",
        SHORT: make_video(d / "short.mp4", seconds=3),
        TRUNC_END: truncate(long, d / "trunc_end.mp4", 0.05),
        TRUNC_MOOV: truncate(no_faststart, d / "trunc_moov.mp4", 0.5),
        AUDIO: make_audio_only(d / "audio.m4a"),
    }


ROWS = [
    # label, id, start, end, expected final state
    ("tap dancing", LONG, 120, 130, "ok"),
    ("tap dancing", DEMO, 0, 10, "ok"),
    ("tap dancing", NTU, 0, 3, "ok"),
    ("salsa dancing", SHORT, 0, 10, "ok"),  # the video ends at 3 s: a short clip, recorded
    ("salsa dancing", TRUNC_END, 200, 210, "bad_media"),  # the window is past the truncation
    ("salsa dancing", TRUNC_MOOV, 0, 5, "bad_media"),  # no moov atom: unreadable
    ("salsa dancing", AUDIO, 0, 5, "bad_media"),  # no video stream
    ("belly dancing", HTML, 0, 10, "unavailable"),
    ("belly dancing", GONE, 0, 10, "unavailable"),
    ("belly dancing", BUSY, 0, 10, "rate_limited"),
]


def _plan(tmp_path: Path, store: Storage, rows: list[tuple[str, str, int, int, str]], **kw: object) -> None:
    csv_path = tmp_path / "kinetics-600_mini.csv"
    csv_path.write_text(
        "label,youtube_id,time_start,time_end,split\n"
        + "".join(f"{r[0]},{r[1]},{r[2]},{r[3]},train\n" for r in rows)
    )
    cfg = {
        "annotations": [str(csv_path)],
        "class_contains": "danc",
        "dataset": "mini",
        "carve_missing_splits": False,
    }
    cfg.update(kw)
    plan_dataset(PlanConfig.model_validate(cfg), store)


@pytest.fixture
def server(media: dict[str, Path]) -> Iterator[VideoServer]:
    routes: dict[str, object] = dict(media)
    routes.update({HTML: "html", BUSY: 429})
    with VideoServer(routes) as srv:  # type: ignore[arg-type]
        yield srv


def _dl_config(srv: VideoServer, **kw: object) -> DownloadConfig:
    return DownloadConfig.model_validate(
        {"url_template": srv.url_template, "backoff_base_s": 0.01, "max_attempts": 2, "workers": 3, **kw}
    )


def test_segments_clips_ledger_and_rerun(tmp_path: Path, server: VideoServer, media: dict[str, Path]) -> None:
    store = LocalStorage(tmp_path / "store")
    _plan(tmp_path, store, ROWS)
    result = download_shard("mini", store, _dl_config(server), (0, 1))
    clips = clip_shard("mini", store, ClipConfig(), (0, 1), work_dir=tmp_path / "work")
    states = final_states(store, "mini")
    for _label, vid, start, end, expected in ROWS:
        cid = f"{vid}_{start:06d}_{end:06d}"
        assert states[cid] == expected, (cid, read_stage(store, "mini", "download").get(cid))

    # Just the segment: a 10 s window of the 300 s video costs at most 10% of its bytes.
    fraction = server.bytes_sent[LONG] / media[LONG].stat().st_size
    assert fraction <= 0.10, f"fetched {fraction:.1%} of the long video"
    long_clip = store.path(clip_key(ClipConfig().profile, f"{LONG}_000120_000130"))
    info = probe(long_clip)
    assert abs(info.duration_s - 10.0) <= 0.1
    assert min(info.width, info.height) == 256
    assert info.fps == 25
    assert not info.has_audio
    assert info.video_codec == "h264"
    # The id that starts with '-' was fetched like any other.
    assert store.exists(raw_key(f"{DEMO}_000000_000010"))
    short = read_stage(store, "mini", "clip")[f"{SHORT}_000000_000010"]
    assert short.short and abs(short.duration_s - 3.0) <= 0.1
    downloads = read_stage(store, "mini", "download")
    assert downloads[f"{BUSY}_000000_000010"].attempts == 2
    assert downloads[f"{GONE}_000000_000010"].attempts == 1, "a 404 is permanent: never retried"
    assert "HTTP 404" in downloads[f"{GONE}_000000_000010"].reason
    clip_records = read_stage(store, "mini", "clip")
    for vid, start, end in ((TRUNC_END, 200, 210), (TRUNC_MOOV, 0, 5), (AUDIO, 0, 5)):
        cid = f"{vid}_{start:06d}_{end:06d}"
        rec = clip_records.get(cid) or downloads[cid]
        assert rec.state == "bad_media" and len(rec.reason) > 20, (cid, rec)
        assert not store.exists(clip_key(ClipConfig().profile, cid)), "bad media is never published"
    report = status(store, "mini")
    assert report.rows == len(ROWS) == sum(report.states.values())
    assert result.counts["ok"] + clips.counts.get("bad_media", 0) >= 4
    assert clips.counts["ok"] == 4

    # Re-running the shard downloads nothing already done and retries only the retryable.
    requests_before = dict(server.requests)
    ledger_before = sorted((p, p.read_bytes()) for p in (tmp_path / "store" / "ledger").rglob("*.csv"))
    again = download_shard("mini", store, _dl_config(server), (0, 1))
    assert again.downloaded == 0
    changed = {k for k in server.requests if server.requests[k] != requests_before.get(k)}
    assert changed == {BUSY}, f"only the rate-limited clip is tried again, not {changed}"
    clip_again = clip_shard("mini", store, ClipConfig(), (0, 1), work_dir=tmp_path / "work")
    assert clip_again.clipped == 0
    ledger_after = sorted((p, p.read_bytes()) for p in (tmp_path / "store" / "ledger").rglob("*.csv"))
    assert [p for p, _ in ledger_after] == [p for p, _ in ledger_before]
    assert not list((tmp_path / "work").iterdir()), "job folders left behind"


def test_shards_partition_the_manifest(tmp_path: Path, server: VideoServer) -> None:
    store = LocalStorage(tmp_path / "store")
    rows = [r for r in ROWS if r[4] == "ok"]
    _plan(tmp_path, store, rows)
    counts = [download_shard("mini", store, _dl_config(server), (i, 3)).counts.get("ok", 0) for i in range(3)]
    assert sum(counts) == len(rows)
    assert len(store.list("ledger/mini/download/")) == 3
    assert status(store, "mini").states == {"pending": len(rows)}  # downloaded, not clipped yet


def test_circuit_breaker_stops_the_shard_and_the_rest_stays_retryable(
    tmp_path: Path, media: dict[str, Path]
) -> None:
    ids = [f"busy{i:07d}" for i in range(8)]
    store = LocalStorage(tmp_path / "store")
    _plan(tmp_path, store, [("tap dancing", i, 0, 5, "") for i in ids])
    with VideoServer(dict.fromkeys(ids, 429)) as srv:  # type: ignore[arg-type]
        result = download_shard(
            "mini", store, _dl_config(srv, workers=1, max_attempts=3, breaker_threshold=4)
        )
        assert result.breaker_open
        assert sum(srv.requests.values()) <= 4 + 1, "the shard must stop soon after the breaker opens"
    records = read_stage(store, "mini", "download")
    assert {r.state for r in records.values()} == {"rate_limited"}
    assert sum(1 for r in records.values() if r.reason.startswith("not attempted")) >= 5
    # YouTube answers again: the next run fetches everything.
    with VideoServer(dict.fromkeys(ids, media[SHORT])) as srv:
        again = download_shard("mini", store, _dl_config(srv))
    assert again.counts == {"ok": 8}


def test_connection_refused_is_retried_then_recorded(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path / "store")
    _plan(tmp_path, store, [("tap dancing", "abcdefghijk", 0, 5, "")])
    cfg = DownloadConfig(
        url_template=f"http://127.0.0.1:{free_port()}/v/{{youtube_id}}.mp4",
        backoff_base_s=0.01,
        max_attempts=3,
    )
    result = download_shard("mini", store, cfg)
    rec = read_stage(store, "mini", "download")["abcdefghijk_000000_000005"]
    assert result.counts == {"retries_exhausted": 1}
    assert rec.attempts == 3
    assert "network" in rec.reason


def test_fallback_to_whole_video(tmp_path: Path, server: VideoServer, media: dict[str, Path]) -> None:
    """A segment download that fails in ffmpeg is retried as a whole download, cut locally, and recorded
    so."""
    from yt_dlp.utils import DownloadError, PostProcessingError

    store = LocalStorage(tmp_path / "store")
    _plan(tmp_path, store, [("tap dancing", LONG, 30, 40, "")])
    calls = []

    def flaky(url: str, job: Path, section: tuple[float, float] | None, config: DownloadConfig) -> Path:
        calls.append(section)
        if section is not None:
            err = PostProcessingError("ffmpeg exited with code 1")
            raise DownloadError("ERROR: ffmpeg exited with code 1", (type(err), err, None))
        return ytdlp_fetch(url, job, section, config)

    result = download_shard("mini", store, _dl_config(server), fetch=flaky)
    assert result.methods == {"whole": 1}
    assert calls == [(29.0, 41.0), None]
    clip_shard("mini", store, ClipConfig(), work_dir=tmp_path / "w")
    info = probe(store.path(clip_key(ClipConfig().profile, f"{LONG}_000030_000040")))
    assert abs(info.duration_s - 10.0) <= 0.1


def test_bad_ids_never_reach_ytdlp(tmp_path: Path, server: VideoServer, reliability: Reliability) -> None:
    """A manifest edited by hand with hostile ids: each is bad_input and the server sees no request."""
    store = LocalStorage(tmp_path / "store")
    _plan(tmp_path, store, [("tap dancing", DEMO, 0, 5, "")])
    hostile = ["$(touch /tmp/pwned)", "../../etc/pa", "a;rm -rf /x", "abc"]
    lines = ["clip_id,youtube_id,time_start,time_end,label,split"] + [
        f'"{h}_000000_000005","{h}",0,5,tap dancing,train' for h in hostile
    ]
    store.put_bytes("datasets/mini/manifest.csv", ("\n".join(lines) + "\n").encode())
    with reliability.probe("yt-dlp: ids with $(), ;, .. never reach yt-dlp or a shell"):
        result = download_shard("mini", store, _dl_config(server))
        states = {k: v.state for k, v in read_stage(store, "mini", "download").items()}
        for h in hostile:
            state = states.get(f"{h}_000000_000005")
            reliability.rejected(f"manifest id {h!r}", state if state == "bad_input" else None)
        reliability.rows("hand-edited manifest, hostile ids", len(hostile), result.counts)
        assert result.counts == {"bad_input": len(hostile)}
        assert sum(server.requests.values()) == 0
        assert not Path("/tmp/pwned").exists()


def test_top_up_replaces_lost_clips(tmp_path: Path, server: VideoServer, media: dict[str, Path]) -> None:
    good = [f"good{i:07d}" for i in range(4)]
    lost = [f"gone{i:07d}" for i in range(4)]
    server.routes.update(dict.fromkeys(good, media[SHORT]))
    store = LocalStorage(tmp_path / "store")
    _plan(tmp_path, store, [("tap dancing", v, 0, 2, "") for v in good + lost], per_class=4, seed=3)
    first = read_manifest(store, "mini")
    download_shard("mini", store, _dl_config(server))
    clip_shard("mini", store, ClipConfig(), work_dir=tmp_path / "w")
    states = final_states(store, "mini")
    n_lost = sum(1 for s in states.values() if s == "unavailable")
    assert n_lost == sum(1 for r in first if r["youtube_id"].startswith("gone"))
    result = top_up(store, "mini", states, PERMANENT)
    assert result.summary()["manifest_changed"] == (n_lost > 0)
    download_shard("mini", store, _dl_config(server))
    clip_shard("mini", store, ClipConfig(), work_dir=tmp_path / "w")
    rounds = 1
    while rounds < 5:
        result = top_up(store, "mini", final_states(store, "mini"), PERMANENT)
        if not result.added:
            break
        download_shard("mini", store, _dl_config(server))
        clip_shard("mini", store, ClipConfig(), work_dir=tmp_path / "w")
        rounds += 1
    final = final_states(store, "mini")
    assert sum(1 for s in final.values() if s == "ok") == 4, "the class reaches its target"
    assert len(final) == 8 - 0, "every row planned stays in the manifest with its state"
    info = json.loads(store.get_bytes("datasets/mini/plan.json"))
    assert info["top_ups"], "the manifest version change is recorded"
    assert top_up(store, "mini", final, PERMANENT).added == {}


def test_cli_download_clip_status_json(tmp_path: Path, server: VideoServer) -> None:
    store_dir = tmp_path / "store"
    _plan(
        tmp_path,
        open_storage(str(store_dir)),
        [("tap dancing", DEMO, 2, 7, ""), ("tap dancing", GONE, 0, 5, "")],
    )
    base = [sys.executable, "-m", "action_recognition"]
    common = ["--dataset", "mini", "--storage", str(store_dir), "--json"]
    out = subprocess.run(
        [*base, "download", *common, "--shard", "0/1", "--url-template", server.url_template],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    down = json.loads(out.stdout.strip().splitlines()[-1])
    assert down["states"] == {"ok": 1, "unavailable": 1}
    out = subprocess.run([*base, "clip", *common], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1])["states"] == {"ok": 1}
    out = subprocess.run([*base, "status", *common], capture_output=True, text=True, timeout=60, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["rows"] == 2 and report["states"] == {"ok": 1, "unavailable": 1}
    human = subprocess.run(
        [*base, "status", "--dataset", "mini", "--storage", str(store_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "rows 2 = sum of states 2" in human
    bad = subprocess.run(
        [*base, "download", *common, "--shard", "3/2"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "need 0 <= I < N" in bad.stderr
