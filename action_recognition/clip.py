"""The ``clip`` step: each raw segment re-encoded to the exact annotated window, behind a quality gate.

Output: ``clips/<profile>/<clip_id>.mp4`` (H.264 yuv420p, short side ``clip.short_side``, ``clip.fps``, no audio,
faststart), where the profile (``s256-f25-crf23``) names the encoding, so another profile never overwrites it.
The gate runs before publishing: ffprobe of the input (a video stream, a duration, a sane size), then the encode,
then ffprobe plus a full decode of the output; the duration must be the window's within the tolerance, or shorter
only where the video itself ends (recorded as ``short``). Anything else is ``bad_media`` with ffmpeg's stderr tail.
"""

from __future__ import annotations

import errno
import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from action_recognition.config import ClipConfig
from action_recognition.download import raw_key
from action_recognition.errors import WorkspaceFullError
from action_recognition.kinetics import read_manifest
from action_recognition.ledger import LedgerRecord, read_stage, shard_key, shard_rows, write_shard
from action_recognition.media import MediaError, count_decoded_frames, encode_clip, probe
from action_recognition.storage import Storage
from action_recognition.workdir import job_dir, sweep_job_dirs, work_base

log = logging.getLogger(__name__)


def clip_key(profile: str, clip_id: str) -> str:
    return f"clips/{profile}/{clip_id}.mp4"


@dataclass
class ClipResult:
    """What one shard's clipping did."""

    dataset: str
    shard: tuple[int, int]
    profile: str
    counts: dict[str, int]
    clipped: int
    skipped: int
    waiting: int
    seconds: float
    ledger_uri: str
    clips_prefix: str

    def summary(self) -> dict[str, object]:
        return {
            "dataset": self.dataset, "shard": f"{self.shard[0]}/{self.shard[1]}", "profile": self.profile,
            "states": self.counts, "clipped": self.clipped, "skipped": self.skipped,
            "not_downloaded": self.waiting, "seconds": round(self.seconds, 3), "ledger_uri": self.ledger_uri,
            "clips_prefix": self.clips_prefix, "rows": sum(self.counts.values()),
        }  # fmt: skip


def make_clip(src: Path, dst: Path, *, offset_s: float, window_s: float, config: ClipConfig) -> tuple[float, bool]:
    """Gate and encode one raw file; returns (duration, short). Raises MediaError saying what is wrong."""
    size = src.stat().st_size
    if size == 0:
        raise MediaError("raw file is empty (0 bytes)")
    if size > config.max_input_mb * 1024 * 1024:
        raise MediaError(f"raw file is {size / 1e6:.0f} MB, above clip.max_input_mb={config.max_input_mb}")
    info = probe(src, timeout_s=min(config.timeout_s, 60))
    if info.width * info.height > config.max_input_pixels:
        raise MediaError(f"{info.width}x{info.height} is above clip.max_input_pixels={config.max_input_pixels}")
    if info.width <= 0 or info.height <= 0:
        raise MediaError("video stream has no frame size")
    available = info.duration_s - offset_s
    if available <= 0:
        raise MediaError(f"raw video lasts {info.duration_s:.2f} s, the window starts at {offset_s:.2f} s")
    expected = min(window_s, available)
    tol = config.duration_tolerance_s
    for seek in ("input", "output"):
        encode_clip(
            src, dst, start_s=offset_s, duration_s=window_s, short_side=config.short_side, fps=config.fps,
            crf=config.crf, preset=config.preset, threads=config.threads, timeout_s=config.timeout_s, seek=seek,
        )  # fmt: skip
        try:
            out = probe(dst, timeout_s=60)
            frames = count_decoded_frames(dst, timeout_s=config.timeout_s)
        except MediaError:
            frames = 0
        if frames / config.fps >= expected - tol:
            break
        log.debug("%s: input seeking gave %d frames; decoding from the start instead", src.name, frames)
    if frames == 0:
        raise MediaError("the clip decodes to zero frames")
    duration = frames / config.fps
    if duration < expected - tol or duration > window_s + tol:
        raise MediaError(
            f"clip lasts {duration:.2f} s ({frames} frames); expected {expected:.2f} s "
            f"(window {window_s:.2f} s, {available:.2f} s available): truncated or corrupt input"
        )
    short = duration < window_s - tol
    log.debug("clip %s: %.2f s, %dx%d, short=%s", dst.name, duration, out.width, out.height, short)
    return duration, short


def clip_shard(
    dataset: str,
    storage: Storage,
    config: ClipConfig,
    shard: tuple[int, int] = (0, 1),
    *,
    work_dir: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> ClipResult:
    """Clip every downloaded raw segment of one shard; record each in the clip ledger."""
    rows = shard_rows(read_manifest(storage, dataset), shard)
    downloads = read_stage(storage, dataset, "download")
    previous = read_stage(storage, dataset, "clip")
    profile = config.profile
    records: dict[str, LedgerRecord] = {}
    todo = []
    waiting = 0
    for row in rows:
        cid = row["clip_id"]
        down = downloads.get(cid)
        if down is None or down.state != "ok":
            waiting += 1
            continue
        prev = previous.get(cid)
        if (
            prev is not None
            and prev.method == profile
            and (prev.state == "bad_media" or (prev.state == "ok" and storage.exists(clip_key(profile, cid))))
        ):
            records[cid] = prev
        else:
            todo.append((row, down))
    skipped = len(records)
    if progress:
        progress(skipped)
    base = work_base(work_dir)
    sweep_job_dirs(base)

    def one(item: tuple[dict[str, str], LedgerRecord]) -> LedgerRecord:
        row, down = item
        cid = row["clip_id"]
        rec = LedgerRecord(cid, row["label"], row["split"], "ok", method=profile)
        began = time.monotonic()
        job = job_dir(base, "clip", cid)
        try:
            src = storage.get_file(raw_key(cid), job / "raw.mp4")
            start, end = float(row["time_start"]), float(row["time_end"])
            dst = job / "clip.mp4"
            rec.duration_s, rec.short = make_clip(
                src, dst, offset_s=start - down.raw_start_s, window_s=end - start, config=config
            )
            storage.put_file(clip_key(profile, cid), dst)
            rec.bytes = dst.stat().st_size
        except MediaError as exc:
            rec.state, rec.reason = "bad_media", str(exc)[:600]
            log.info("%s: bad_media: %s", cid, rec.reason)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:  # the machine's fault, not the clip's: stop, publish nothing partial
                raise WorkspaceFullError(f"no space left in the work folder {base} while clipping {cid}") from exc
            raise
        finally:
            shutil.rmtree(job, ignore_errors=True)
            rec.seconds = time.monotonic() - began
        if progress:
            progress(1)
        return rec

    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="clip") as pool:
        for rec in pool.map(one, todo):
            records[rec.clip_id] = rec
    ordered = [records[r["clip_id"]] for r in rows if r["clip_id"] in records]
    write_shard(storage, dataset, "clip", shard, ordered)
    return ClipResult(
        dataset=dataset,
        shard=shard,
        profile=profile,
        counts=dict(sorted(Counter(r.state for r in ordered).items())),
        clipped=len(todo),
        skipped=skipped,
        waiting=waiting,
        seconds=time.monotonic() - began,
        ledger_uri=storage.key_uri(shard_key(dataset, "clip", shard)),
        clips_prefix=storage.key_uri(f"clips/{profile}/x")[:-2],
    )
