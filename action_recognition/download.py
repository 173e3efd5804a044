"""The ``download`` step: just the annotated segment of each video, with yt-dlp's Python API.

One process handles one shard of the manifest with a bounded thread pool. For each clip:

1. the YouTube id is validated again and the URL is built from ``download.url_template`` (never taken from
   input);
2. yt-dlp fetches ``[start - margin, end + margin]`` (``download_ranges``, keyframes forced at the cuts) into
   a job folder of its own, with a fixed output template, no config files, no hooks and no post-processors;
3. when the segment download fails for a reason a whole download could fix (an ffmpeg section error), the
   whole video is fetched and the window cut locally; the ledger records which way each clip came;
4. the result is checked to stay inside the job folder, probed, and published atomically to
   ``raw/<clip_id>.mp4``.

Failures are classified from the exception yt-dlp raises: permanent ones (unavailable, private, removed,
geo-blocked, sign-in required, no media) are recorded and never retried; transient ones (429, 5xx, resets,
timeouts) are retried with exponential backoff and jitter; a run of rate-limit or bot-check answers opens a
circuit breaker that stops the shard cleanly, recording the clips not yet tried as ``rate_limited`` so the
next run takes them.
"""

from __future__ import annotations

import errno
import logging
import random
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from action_recognition.annotations import YOUTUBE_ID
from action_recognition.config import DownloadConfig
from action_recognition.errors import WorkspaceFullError
from action_recognition.layout import raw_key
from action_recognition.ledger import PERMANENT, Decision, LedgerRecord, run_shard
from action_recognition.manifest import manifest_row_problem
from action_recognition.media import MediaError, cut_copy, probe
from action_recognition.storage import Storage
from action_recognition.workdir import job_dir, sweep_job_dirs, work_base

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    """How a download failure is handled."""

    state: str
    reason: str
    transient: bool = False
    rate_limit: bool = False
    fallback: bool = False  # a whole-video download may succeed where the segment failed


_PERMANENT_PHRASES: tuple[tuple[str, str], ...] = (
    ("private video", "private"),
    ("video is private", "private"),
    ("has been removed", "removed"),
    ("account associated with this video has been terminated", "removed"),
    ("copyright claim", "removed"),
    ("no longer available", "removed"),
    ("not available in your country", "geo_blocked"),
    ("not made this video available in your country", "geo_blocked"),
    ("geo restrict", "geo_blocked"),
    ("confirm your age", "unavailable"),
    ("age-restricted", "unavailable"),
    ("members-only", "unavailable"),
    ("join this channel", "unavailable"),
    ("video unavailable", "unavailable"),
    ("is not available", "unavailable"),
    ("requested format is not available", "unavailable"),
    ("no video formats found", "unavailable"),
    ("unsupported url", "unavailable"),
)
_BOT_PHRASES = ("not a bot", "confirm you\u2019re not a bot", "too many requests", "rate-limit", "rate limit")
_FFMPEG_PHRASES = ("ffmpeg", "postprocessing", "conversion failed", "did not get any data blocks")


def classify(exc: BaseException) -> Failure:
    """Classify a yt-dlp failure by the exception it raised (and, for YouTube's own errors, its message)."""
    from yt_dlp.networking.exceptions import HTTPError, TransportError
    from yt_dlp.utils import DownloadError, GeoRestrictedError, PostProcessingError, UnsupportedError

    cause: BaseException | None = exc
    if isinstance(exc, DownloadError) and exc.exc_info and exc.exc_info[1] is not None:
        cause = exc.exc_info[1]
    message = str(exc).lower().replace("error: ", "", 1)
    short = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    if isinstance(cause, HTTPError):
        status = cause.status
        if status == 429:
            return Failure(
                "rate_limited", f"HTTP 429 Too Many Requests: {short}", transient=True, rate_limit=True
            )
        if status >= 500 or status == 408:
            return Failure("retries_exhausted", f"HTTP {status}: {short}", transient=True)
        if status in (404, 410):
            return Failure("unavailable", f"HTTP {status}: {short}")
        if status == 403:
            return Failure(
                "retries_exhausted", f"HTTP 403 (expired link or throttled): {short}", transient=True
            )
        return Failure("unavailable", f"HTTP {status}: {short}")
    if isinstance(cause, GeoRestrictedError):
        return Failure("geo_blocked", short)
    if isinstance(cause, UnsupportedError):
        return Failure("unavailable", f"no media at the URL: {short}")
    if any(p in message for p in _BOT_PHRASES):
        return Failure("rate_limited", f"rate limit or bot check: {short}", transient=True, rate_limit=True)
    for phrase, state in _PERMANENT_PHRASES:
        if phrase in message:
            return Failure(state, short)
    if isinstance(cause, TransportError | TimeoutError | ConnectionError):
        return Failure("retries_exhausted", f"network: {short}", transient=True)
    if isinstance(cause, PostProcessingError) or any(p in message for p in _FFMPEG_PHRASES):
        return Failure(
            "retries_exhausted", f"segment download failed: {short}", transient=True, fallback=True
        )
    return Failure("retries_exhausted", f"{type(cause).__name__}: {short}", transient=True)


class _QuietLogger:
    """yt-dlp's messages go to our logger at debug level instead of stderr."""

    def debug(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    info = debug

    def warning(self, msg: str) -> None:
        log.debug("yt-dlp warning: %s", msg)

    def error(self, msg: str) -> None:
        log.debug("yt-dlp error: %s", msg)


class CircuitBreaker:
    """Opens after ``threshold`` consecutive rate-limit answers; any success closes the count again."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self._run = 0
        self._open = False
        self._lock = threading.Lock()

    @property
    def open(self) -> bool:
        return self._open

    def record(self, rate_limited: bool) -> None:
        with self._lock:
            self._run = self._run + 1 if rate_limited else 0
            if self._run >= self.threshold and not self._open:
                log.warning("circuit breaker open after %d consecutive rate-limit answers", self._run)
                self._open = True


def deno_path() -> str | None:
    """The deno binary this environment installed (the ``deno`` wheel of the worker extra), else one on
    PATH."""
    try:
        from deno import find_deno_bin

        return str(find_deno_bin())
    except (ImportError, FileNotFoundError):
        return shutil.which("deno")


def js_runtimes() -> dict[str, dict[str, str]]:
    """yt-dlp's ``js_runtimes``: deno, handed over by path so that no runner depends on PATH.

    YouTube's player challenges are solved in JavaScript (yt-dlp >= 2025.11); without a runtime and the EJS
    scripts (``yt-dlp-ejs``, bundled as a package, so nothing is fetched at run time) only storyboards come
    back.
    """
    path = deno_path()
    return {"deno": {"path": path} if path else {}}


def js_support() -> dict[str, Any]:
    """What yt-dlp, configured as the download step configures it, has for YouTube's JavaScript challenges:
    the runtime (name, path, version, supported) and the EJS scripts' version. Runs ``deno --version``; no
    network."""
    import yt_dlp
    from yt_dlp.dependencies import yt_dlp_ejs

    options = {"js_runtimes": js_runtimes(), "remote_components": [], "quiet": True, "logger": _QuietLogger()}
    with yt_dlp.YoutubeDL(options) as ydl:
        # The runtimes yt-dlp itself resolved from these options (what its YouTube extractor will use).
        infos = {name: rt.info for name, rt in ydl._js_runtimes.items() if rt is not None}
    usable = [i for i in infos.values() if i is not None and i.supported]
    runtime = usable[0] if usable else None
    return {
        "yt_dlp": yt_dlp.version.__version__,
        "runtime": runtime.name if runtime else None,
        "runtime_path": runtime.path if runtime else None,
        "runtime_version": runtime.version if runtime else None,
        "ejs": getattr(yt_dlp_ejs, "version", None) if yt_dlp_ejs else None,
        "ok": runtime is not None and yt_dlp_ejs is not None,
    }


def build_ydl_options(
    config: DownloadConfig, job: Path, section: tuple[float, float] | None
) -> dict[str, Any]:
    """yt-dlp options: fixed output under ``job``, no config files, hooks or post-processors.

    The Python API reads no configuration files (only the yt-dlp command line does), and we pass no
    ``exec``/``postprocessors``/``progress_hooks``, so nothing but the download itself runs.
    """
    from yt_dlp.utils import download_range_func

    height = config.max_height
    options: dict[str, Any] = {
        "format": (
            f"bv*[height<={height}][ext=mp4]+ba[ext=m4a]/b[height<={height}][ext=mp4]/"
            f"bv*[height<={height}]+ba/b[height<={height}]/wv*+wa/w"
        ),
        "outtmpl": {"default": str(job / "media.%(ext)s")},
        "merge_output_format": "mp4",
        "noplaylist": True,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "logger": _QuietLogger(),
        "retries": 0,  # we retry, with backoff and a breaker
        "fragment_retries": 0,
        "extractor_retries": 0,
        "socket_timeout": config.socket_timeout_s,
        "overwrites": True,
        "restrictfilenames": True,
        "max_filesize": config.max_filesize_mb * 1024 * 1024,
        "allowed_extractors": list(config.extractors),
        "postprocessors": [],
        "cachedir": False,
        "js_runtimes": js_runtimes(),
        # The EJS scripts come from the installed yt-dlp-ejs, never from npm or GitHub.
        "remote_components": [],
        "color": {"stderr": "no_color", "stdout": "no_color"},
    }
    if section is not None:
        options["download_ranges"] = download_range_func(None, [section])
        options["force_keyframes_at_cuts"] = True
    if config.cookies_file is not None:
        options["cookiefile"] = str(config.cookies_file)
    if config.proxy:
        options["proxy"] = config.proxy
    return options


def _only_file_in(job: Path) -> Path:
    """The single media file yt-dlp left in ``job``; refuse anything outside it or ambiguous."""
    root = job.resolve()
    files = [p for p in job.iterdir() if p.is_file() and not p.name.endswith((".part", ".ytdl"))]
    media = [p for p in files if p.suffix in (".mp4", ".mkv", ".webm", ".mov")]
    if len(media) != 1:
        raise MediaError(f"expected one media file in the job folder, found {sorted(p.name for p in files)}")
    path = media[0].resolve()
    if path.parent != root:
        raise MediaError(f"refusing {path}: outside the job folder {root}")
    return path


Fetcher = Callable[[str, Path, tuple[float, float] | None, DownloadConfig], Path]


def ytdlp_fetch(url: str, job: Path, section: tuple[float, float] | None, config: DownloadConfig) -> Path:
    """Fetch ``url`` (just ``section`` when given) into ``job``; the downloaded file."""
    import yt_dlp

    with yt_dlp.YoutubeDL(build_ydl_options(config, job, section)) as ydl:
        ydl.download([url])
    return _only_file_in(job)


@dataclass
class DownloadResult:
    """What one shard's download did; ``summary()`` is the CLI's JSON line."""

    dataset: str
    shard: tuple[int, int]
    counts: dict[str, int]
    downloaded: int
    skipped: int
    bytes: int
    seconds: float
    breaker_open: bool
    ledger_uri: str
    methods: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
            "shard": f"{self.shard[0]}/{self.shard[1]}",
            "states": self.counts,
            "downloaded": self.downloaded,
            "skipped": self.skipped,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "breaker_open": self.breaker_open,
            "ledger_uri": self.ledger_uri,
            "methods": self.methods,
            "rows": sum(self.counts.values()),
        }


class _ShardDownloader:
    def __init__(
        self, config: DownloadConfig, storage: Storage, fetch: Fetcher, sleep: Callable[[float], None]
    ) -> None:
        self.config = config
        self.storage = storage
        self.fetch = fetch
        self.sleep = sleep
        self.breaker = CircuitBreaker(config.breaker_threshold)
        self.rng = random.Random()

    def _backoff(self, attempt: int) -> float:
        base = min(self.config.backoff_max_s, self.config.backoff_base_s * 2 ** (attempt - 1))
        return base * self.rng.uniform(0.5, 1.5)

    def one(self, row: dict[str, str]) -> LedgerRecord:
        cid, label, split = row["clip_id"], row["label"], row["split"]
        record = LedgerRecord(cid, label, split, "ok")
        if not YOUTUBE_ID.fullmatch(row["youtube_id"]) or not cid.startswith(row["youtube_id"]):
            record.state, record.reason = "bad_input", f"invalid youtube_id {ascii(row['youtube_id'])[:40]}"
            return record
        try:
            start, end = float(row["time_start"]), float(row["time_end"])
        except ValueError:
            record.state, record.reason = "bad_input", "time_start/time_end are not numbers"
            return record
        if self.breaker.open:
            record.state, record.reason = "rate_limited", "not attempted: circuit breaker open"
            return record
        url = self.config.url_template.format(youtube_id=row["youtube_id"])
        raw_start = max(0.0, start - self.config.margin_s)
        section = (raw_start, end + self.config.margin_s)
        methods = ["segment", "whole"] if self.config.method == "auto" else [self.config.method]
        began = time.monotonic()
        failure: Failure | None = None
        attempt = 0
        method_index = 0
        while True:
            method = methods[method_index]
            attempt += 1
            failure = self._attempt(url, cid, method, section, record)
            if failure is None:
                self.breaker.record(False)
                record.method, record.raw_start_s = method, raw_start
                break
            self.breaker.record(failure.rate_limit)
            log.info("%s: %s attempt %d failed: %s", cid, method, attempt, failure.reason)
            if failure.fallback and method_index + 1 < len(methods):
                method_index += 1  # a whole download may fix what the segment download could not
                continue
            if not failure.transient or attempt >= self.config.max_attempts or self.breaker.open:
                break
            self.sleep(self._backoff(attempt))
        record.attempts = attempt
        if failure is not None:
            record.state, record.reason = failure.state, failure.reason
            if failure.transient and attempt < self.config.max_attempts:
                record.reason = f"{failure.reason} (stopped early: circuit breaker open)"
        record.seconds = time.monotonic() - began
        return record

    def _attempt(
        self, url: str, cid: str, method: str, section: tuple[float, float], record: LedgerRecord
    ) -> Failure | None:
        from yt_dlp.utils import DownloadError, YoutubeDLError

        base = work_base(self.config.work_dir)
        job = job_dir(base, "dl", cid)
        try:
            fetched = self.fetch(url, job, section if method == "segment" else None, self.config)
            record.bytes += fetched.stat().st_size
            if method == "whole":
                cut = job / "cut.mp4"
                cut_copy(fetched, cut, start_s=section[0], duration_s=section[1] - section[0], timeout_s=600)
                fetched = cut
            info = probe(fetched)
            if info.duration_s <= 0:
                return Failure("bad_media", "downloaded file has no duration")
            self.storage.put_file(raw_key(cid), fetched)
            return None
        except (DownloadError, YoutubeDLError) as exc:
            if "No space left on device" in str(exc):
                raise WorkspaceFullError(
                    f"no space left in the work folder {base} downloading {cid}"
                ) from exc
            return classify(exc)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise WorkspaceFullError(
                    f"no space left in the work folder {base} downloading {cid}"
                ) from exc
            raise
        except MediaError as exc:
            return Failure("bad_media", str(exc)[:500])
        finally:
            shutil.rmtree(job, ignore_errors=True)


def download_shard(
    dataset: str,
    storage: Storage,
    config: DownloadConfig,
    shard: tuple[int, int] = (0, 1),
    *,
    fetch: Fetcher = ytdlp_fetch,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[int], None] | None = None,
) -> DownloadResult:
    """Download the clips of one shard of a planned dataset into ``raw/`` and record each in the ledger.

    A clip already in ``raw/`` is skipped; a clip whose last state is permanent is not retried.
    The shard's ledger is written atomically once, at the end (also when the breaker opens).
    """
    sweep_job_dirs(work_base(config.work_dir))
    worker = _ShardDownloader(config, storage, fetch, sleep)

    def triage(row: dict[str, str], prev: LedgerRecord | None) -> Decision:
        cid = row["clip_id"]
        problem = manifest_row_problem(row)
        if problem is not None:  # checked before the id goes near a key, a URL or yt-dlp
            return LedgerRecord(cid, row.get("label", ""), row.get("split", ""), "bad_input", reason=problem)
        if prev is not None and (
            prev.state in PERMANENT or (prev.state == "ok" and storage.exists(raw_key(cid)))
        ):
            return prev
        if prev is None and storage.exists(raw_key(cid)):
            return LedgerRecord(cid, row["label"], row["split"], "ok", reason="found in storage")
        return "process"

    run = run_shard(
        storage, dataset, "download", shard, triage, worker.one, workers=config.workers, progress=progress
    )
    fresh = run.fresh
    return DownloadResult(
        dataset=dataset,
        shard=shard,
        counts=run.counts,
        downloaded=sum(1 for r in fresh if r.state == "ok"),
        skipped=run.skipped,
        bytes=sum(r.bytes for r in fresh),
        seconds=run.seconds,
        breaker_open=worker.breaker.open,
        ledger_uri=storage.key_uri(run.ledger_key),
        methods=dict(Counter(r.method for r in fresh if r.state == "ok")),
    )
