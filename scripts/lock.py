"""Write requirements/lock.txt with a sha256 for every pin, from the pins already in it (or a fresh `pip freeze`).

pip resolves each pin exactly as `make venv` would (same indexes, same platform: CPython 3.11, Linux x86_64) without
installing anything (`pip install --dry-run --report`), and the report carries the hash of the file it chose. The
lock is then installed with `--require-hashes`, so a file that changed upstream is refused instead of installed.

    python scripts/lock.py                 # re-hash the pins in requirements/lock.txt
    python scripts/lock.py --freeze        # take the pins from this venv's `pip freeze` first
    python scripts/lock.py --constraints --exclude '^(torch|nvidia-)'   # the pins as a pip constraints file

The Docker images build on bases that bring their own torch/CUDA (worker) or Airflow (airflow): they install with
the lock's pins as constraints (same versions), not its hashes, which are for this platform's wheels.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

LOCK = Path(__file__).resolve().parent.parent / "requirements" / "lock.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
HEADER = """\
# The one lock for the dev/CI venv (CPython 3.11, Linux x86_64), every pin with the sha256 of the file pip installs.
# Regenerate with `python scripts/lock.py [--freeze]`; `make venv` installs it with --require-hashes.
"""


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(text: str) -> list[tuple[str, str]]:
    pins = []
    for line in text.splitlines():
        match = PIN.match(line.strip())
        if match:
            pins.append((match.group(1), match.group(2)))
    return pins


def freeze(python: str) -> list[tuple[str, str]]:
    out = subprocess.run(
        [python, "-m", "pip", "freeze", "--all", "--exclude-editable"], check=True, capture_output=True, text=True
    ).stdout
    return [(n, v) for n, v in read_pins(out) if _canonical(n) != "action-recognition"]


def hashes(python: str, pins: list[tuple[str, str]]) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        reqs = Path(tmp) / "pins.txt"
        reqs.write_text("".join(f"{n}=={v}\n" for n, v in pins))
        report = Path(tmp) / "report.json"
        subprocess.run(
            [
                python,
                "-m",
                "pip",
                "install",
                "-q",
                "--dry-run",
                "--ignore-installed",
                "--no-deps",
                "--report",
                str(report),
                "-r",
                str(reqs),
            ],
            check=True,
        )
        chosen = json.loads(report.read_text())["install"]
    found = {}
    for item in chosen:
        digest = item["download_info"].get("archive_info", {}).get("hashes", {}).get("sha256")
        if not digest:
            raise SystemExit(f"pip gave no sha256 for {item['metadata']['name']}: {item['download_info']}")
        found[_canonical(item["metadata"]["name"])] = digest
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--freeze", action="store_true", help="take the pins from `pip freeze` of --python")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--lock", type=Path, default=LOCK, help="the lock file (default: requirements/lock.txt)")
    parser.add_argument("--constraints", action="store_true", help="print the pins without hashes and stop")
    parser.add_argument("--exclude", default=None, help="with --constraints: leave out names matching this regex")
    args = parser.parse_args()
    if args.constraints:
        skip = re.compile(args.exclude) if args.exclude else None
        for name, version in read_pins(args.lock.read_text()):
            if not (skip and skip.search(name)):
                print(f"{name}=={version}")
        return
    pins = freeze(args.python) if args.freeze else read_pins(args.lock.read_text())
    # The installer itself is locked too (pip, setuptools and wheel are what `pip freeze` leaves out by default).
    pins.sort(key=lambda p: _canonical(p[0]))
    digests = hashes(args.python, pins)
    missing = [n for n, _ in pins if _canonical(n) not in digests]
    if missing:
        raise SystemExit(f"no hash for: {', '.join(missing)}")
    body = "".join(f"{n}=={v} \\\n    --hash=sha256:{digests[_canonical(n)]}\n" for n, v in pins)
    args.lock.write_text(HEADER + body)
    print(f"{args.lock}: {len(pins)} pins, each with a sha256")


if __name__ == "__main__":
    main()
