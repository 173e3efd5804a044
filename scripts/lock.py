"""Write requirements/lock.txt with a sha256 for every pin, from the pins already in it (or a fresh `pip
freeze`).

pip resolves each pin exactly as `make venv` would (same indexes, same platform: CPython 3.11, Linux x86_64)
without installing anything (`pip install --dry-run --report`), and the report carries the hash of the file it
chose. The lock is then installed with `--require-hashes`, so a file that changed upstream is refused instead
of installed.

    python scripts/lock.py                 # re-hash the pins in requirements/lock.txt
    python scripts/lock.py --freeze        # take the pins from this venv's `pip freeze` first
    python scripts/lock.py --constraints --exclude '^(torch|nvidia-)'   # the pins as a pip constraints file
    python scripts/lock.py --bump 'yt-dlp[default,deno]'   # newest yt-dlp, yt-dlp-ejs and deno pins, re-hashed

The Docker images build on bases that bring their own torch/CUDA (worker) or Airflow (airflow): they install
with the lock's pins as constraints (same versions), not its hashes, which are for this platform's wheels.
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
        [python, "-m", "pip", "freeze", "--all", "--exclude-editable"],
        check=True,
        capture_output=True,
        text=True,
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


def newest(python: str, requirement: str) -> tuple[dict[str, str], list[str]]:
    """What pip would install today for ``requirement``: versions by canonical name, and the requirement's own
    ``Requires-Dist`` lines (for its extras)."""
    with tempfile.TemporaryDirectory() as tmp:
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
                "--report",
                str(report),
                requirement,
            ],
            check=True,
        )
        chosen = json.loads(report.read_text())["install"]
    versions = {_canonical(i["metadata"]["name"]): i["metadata"]["version"] for i in chosen}
    base = _canonical(re.split(r"[\[=<>!~ ]", requirement, maxsplit=1)[0])
    requires = next(
        i["metadata"].get("requires_dist", []) for i in chosen if _canonical(i["metadata"]["name"]) == base
    )
    return versions, requires


def moved_with(requirement: str, requires: list[str], pinned: dict[str, str]) -> set[str]:
    """The package and what its requested extras need that the lock cannot keep: an exact pin (``==``), or a
    lower bound the locked version no longer meets."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    wanted = Requirement(requirement)
    names = {_canonical(wanted.name)}
    for line in requires:
        dep = Requirement(line)
        if dep.marker is None or not any(dep.marker.evaluate({"extra": e}) for e in wanted.extras):
            continue
        name = _canonical(dep.name)
        exact = any(spec.operator == "==" for spec in dep.specifier)
        if exact or name not in pinned or Version(pinned[name]) not in dep.specifier:
            names.add(name)
    return names


def bump(pins: list[tuple[str, str]], versions: dict[str, str], names: set[str]) -> list[tuple[str, str]]:
    """``pins`` with each of ``names`` (canonical) at its version in ``versions``; a name not pinned yet is
    added."""
    out = [(n, versions[_canonical(n)] if _canonical(n) in names else v) for n, v in pins]
    have = {_canonical(n) for n, _ in pins}
    out += [(n, versions[n]) for n in sorted(names - have)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--freeze", action="store_true", help="take the pins from `pip freeze` of --python")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument(
        "--lock", type=Path, default=LOCK, help="the lock file (default: requirements/lock.txt)"
    )
    parser.add_argument("--constraints", action="store_true", help="print the pins without hashes and stop")
    parser.add_argument(
        "--exclude", default=None, help="with --constraints: leave out names matching this regex"
    )
    parser.add_argument(
        "--bump",
        action="append",
        default=[],
        metavar="REQUIREMENT",
        help="move this package and its extras' packages to their newest releases (repeatable)",
    )
    args = parser.parse_args()
    if args.constraints:
        skip = re.compile(args.exclude) if args.exclude else None
        for name, version in read_pins(args.lock.read_text()):
            if not (skip and skip.search(name)):
                print(f"{name}=={version}")
        return
    pins = freeze(args.python) if args.freeze else read_pins(args.lock.read_text())
    for requirement in args.bump:
        versions, requires = newest(args.python, requirement)
        before = {_canonical(n): v for n, v in pins}
        names = moved_with(requirement, requires, before)
        pins = bump(pins, versions, names)
        for name in sorted(names):
            print(f"{name}: {before.get(name, '-')} -> {versions[name]}")
    # The installer itself is locked too (pip, setuptools and wheel are what `pip freeze` leaves out by
    # default).
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
