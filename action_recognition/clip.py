"""The ``clip`` step: each raw segment re-encoded to the exact annotated window, behind a quality gate.

Output: ``clips/<profile>/<clip_id>.mp4`` (H.264 yuv420p, short side ``clip.short_side``, ``clip.fps``, no
audio, faststart), where the profile (``s256-f25-crf23``) names the encoding, so another profile never
overwrites it. The gate runs before publishing: ffprobe of the input (a video stream, a duration, a sane
size), then the encode, then ffprobe plus a full decode of the output; the duration must be the window's
within the tolerance, or shorter only where the video itself ends (recorded as ``short``). Anything else is
``bad_media`` with ffmpeg's stderr tail.
"""

from __future__ import annotations

import errno
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from action_recognition.config import ClipConfig
from action_recognition.errors import WorkspaceFullError
from action_recognition.layout import clip_key, clips_prefix, raw_key
from action_recognition.ledger import Decision, LedgerRecord, read_stage, run_shard
from action_recognition.media import MediaError, count_decoded_frames, encode_clip, probe
from action_recognition.storage import Storage
from action_recognition.workdir import job_dir, sweep_job_dirs, work_base

log = logging.getLogger(__name__)


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
            "dataset": self.dataset,
            "shard": f"{self.shard[0]}/{self.shard[1]}",
            "profile": self.profile,
            "states": self.counts,
            "clipped": self.clipped,
            "skipped": self.skipped,
            "not_downloaded": self.waiting,
            "seconds": round(self.seconds, 3),
            "ledger_uri": self.ledger_uri,
            "clips_prefix": self.clips_prefix,
            "rows": sum(self.counts.values()),
        }


def make_clip(
    src: Path, dst: Path, *, offset_s: float, window_s: float, config: ClipConfig
) -> tuple[float, bool]:
    """Gate and encode one raw file; returns (duration, short). Raises MediaError saying what is wrong."""
    size = src.stat().st_size
    if size == 0:
        raise MediaError("raw file is empty (0 bytes)")
    if size > config.max_input_mb * 1024 * 1024:
        raise MediaError(f"raw file is {size / 1e6:.0f} MB, above clip.max_input_mb={config.max_input_mb}")
    info = probe(src, timeout_s=min(config.timeout_s, 60))
    if info.width * info.height > config.max_input_pixels:
        raise MediaError(
            f"{info.width}x{info.height} is above clip.max_input_pixels={config.max_input_pixels}"
        )
    if info.width <= 0 or info.height <= 0:
        raise MediaError("video stream has no frame size")
    available = info.duration_s - offset_s
    if available <= 0:
        raise MediaError(f"raw video lasts {info.duration_s:.2f} s, the window starts at {offset_s:.2f} s")
    expected = min(window_s, available)
    tol = config.duration_tolerance_s
    for seek in ("input", "output"):
        encode_clip(
            src,
            dst,
            start_s=offset_s,
            duration_s=window_s,
            short_side=config.short_side,
            fps=config.fps,
            crf=config.crf,
            preset=config.preset,
            threads=config.threads,
            timeout_s=config.timeout_s,
            seek=seek,
        )
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
    downloads = read_stage(storage, dataset, "download")
    profile = config.profile
    base = work_base(work_dir)
    sweep_job_dirs(base)

    def triage(row: dict[str, str], prev: LedgerRecord | None) -> Decision:
        cid = row["clip_id"]
        down = downloads.get(cid)
        if down is None or down.state != "ok":
            return "wait"
        if (
            prev is not None
            and prev.method == profile
            and (prev.state == "bad_media" or (prev.state == "ok" and storage.exists(clip_key(profile, cid))))
        ):
            return prev
        return "process"

    def one(row: dict[str, str]) -> LedgerRecord:
        cid = row["clip_id"]
        down = downloads[cid]
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
            if (
                exc.errno == errno.ENOSPC
            ):  # the machine's fault, not the clip's: stop, publish nothing partial
                raise WorkspaceFullError(
                    f"no space left in the work folder {base} while clipping {cid}"
                ) from exc
            raise
        finally:
            shutil.rmtree(job, ignore_errors=True)
            rec.seconds = time.monotonic() - began
        return rec

    run = run_shard(storage, dataset, "clip", shard, triage, one, workers=config.workers, progress=progress)
    return ClipResult(
        dataset=dataset,
        shard=shard,
        profile=profile,
        counts=run.counts,
        clipped=len(run.fresh),
        skipped=run.skipped,
        waiting=run.waiting,
        seconds=run.seconds,
        ledger_uri=storage.key_uri(run.ledger_key),
        clips_prefix=storage.prefix_uri(clips_prefix(profile)),
    )
