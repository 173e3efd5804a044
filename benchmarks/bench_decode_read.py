"""How the pose step's decoding threads read ffmpeg's frames, and what that costs the thread beside them.

The pose step decodes in threads while its inference thread runs Python (Ultralytics' pre- and
post-processing); a reader that holds the GIL often slows inference down. Two readers of the same 10 s of raw
320x241 BGR frames (58 MB, written by ``cat`` so that decoding itself costs nothing), each in two threads
beside a pure-Python loop:

- baseline: ``subprocess.run(capture_output=True)``, the usual way (a poll loop over 64 KiB pipe reads, then a
  join);
- ``media.read_frames``: ``readinto`` one preallocated buffer through a 1 MiB pipe.

Printed: clips read per second and the Python loop's speed beside them (1.0 = undisturbed). Run:
``python -m benchmarks.bench_decode_read [--json]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from action_recognition.media import read_frames

FRAME = 241 * 320 * 3
FRAMES = 250


def _loop_speed(seconds: float) -> int:
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        n += 1
    return n


def beside(read: Callable[[], object], threads: int, seconds: float) -> tuple[float, int]:
    """(reads per second, Python loop iterations) with ``threads`` readers running."""
    stop, done = threading.Event(), [0]

    def reader() -> None:
        while not stop.is_set():
            read()
            done[0] += 1

    workers = [threading.Thread(target=reader) for _ in range(threads)]
    for w in workers:
        w.start()
    began = time.perf_counter()
    loops = _loop_speed(seconds)
    stop.set()
    for w in workers:
        w.join()
    return done[0] / (time.perf_counter() - began), loops


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "frames.bin"
        raw.write_bytes(np.random.default_rng(0).integers(0, 255, FRAME * FRAMES, dtype=np.uint8).tobytes())
        argv = ["cat", str(raw)]
        readers = {
            "capture_output": lambda: subprocess.run(argv, capture_output=True, check=True).stdout,
            "read_frames": lambda: read_frames(
                argv, frame_bytes=FRAME, expected=FRAMES, timeout_s=60, what="cat"
            ),
        }
        alone = _loop_speed(args.seconds)
        figures = {}
        for name, read in readers.items():
            rate, loops = beside(read, 2, args.seconds)
            figures[name] = {"clips_per_s": round(rate, 2), "python_loop_speed": round(loops / alone, 3)}
            print(
                f"{name:<15} {rate:6.2f} clips/s read by 2 threads; a Python loop beside them runs at "
                f"{loops / alone:.2f}x",
                flush=True,
            )
    ratio = figures["read_frames"]["clips_per_s"] / max(figures["capture_output"]["clips_per_s"], 1e-9)
    print(f"read_frames reads {ratio:.1f}x the clips of capture_output")
    if args.json:
        print(json.dumps({**figures, "read_frames_vs_capture_output": round(ratio, 2)}))


if __name__ == "__main__":
    main()
