"""Job folders and temporary files that a killed process cannot leave behind for long.

Every temporary name carries the id of the process that made it. A process killed with SIGKILL cannot clean
up, so the next process that works in the same place removes what dead processes left (``sweep_*``): a retry
of a killed task ends with no leftover temporary file or folder.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

_JOB = re.compile(r"^(?:dl|clip|pose|train)-(\d+)-")
_PARTIAL = re.compile(r"\.partial-(\d+)-[0-9a-f]+$")


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def work_base(configured: Path | None) -> Path:
    base = Path(configured) if configured else Path(tempfile.gettempdir()) / "action-recognition"
    base.mkdir(parents=True, exist_ok=True)
    return base


def job_dir(base: Path, kind: str, name: str) -> Path:
    """A fresh folder for one job: ``<kind>-<pid>-<name>-<random>`` under ``base``."""
    return Path(tempfile.mkdtemp(prefix=f"{kind}-{os.getpid()}-{name}-", dir=base))


@contextmanager
def job_folder(base: Path, kind: str, name: str) -> Iterator[Path]:
    """A job folder that is removed when the job ends; one left by a killed process goes at the next sweep."""
    sweep_job_dirs(base)
    folder = job_dir(base, kind, name)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sweep_job_dirs(base: Path) -> int:
    """Remove the job folders of processes that no longer run; the number removed."""
    removed = 0
    for entry in base.iterdir() if base.is_dir() else []:
        found = _JOB.match(entry.name)
        if found and entry.is_dir() and not pid_alive(int(found.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    if removed:
        log.warning("removed %d job folder(s) left in %s by killed processes", removed, base)
    return removed


def partial_suffix() -> str:
    return f".partial-{os.getpid()}-{os.urandom(6).hex()}"


def sweep_partials(folder: Path, name: str) -> int:
    """Remove temporary copies of ``name`` in ``folder`` left by processes that no longer run."""
    removed = 0
    prefix = f".{name}.partial-"
    for entry in folder.glob(f".{glob_escape(name)}.partial-*") if folder.is_dir() else []:
        found = _PARTIAL.search(entry.name)
        if entry.name.startswith(prefix) and found and not pid_alive(int(found.group(1))):
            entry.unlink(missing_ok=True)
            removed += 1
    return removed


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)
