"""``action-recognition doctor``: can this machine (or this worker image) do the job, before any of it starts?

Each check is a small function returning a :class:`Check` (ok, warn or fail, with the detail a person needs).
The DAGs' ``preflight`` task runs the same checks on the runner that will do the work (inside the worker image
for ``runner=docker``), so a missing JavaScript runtime, unreachable weights, a storage key without write
access, a wrong MLflow password or an annotation URL that moved fails the run in seconds, every failure named,
instead of hours later in the middle of it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from action_recognition.config import Config
from action_recognition.errors import ActionRecognitionError

Status = Literal["ok", "warn", "fail"]
#: yt-dlp older than this is warned about: YouTube changes often, and an old yt-dlp stops finding formats.
YT_DLP_MAX_AGE_DAYS = 60
CHECKS = (
    "ffmpeg",
    "javascript",
    "yt-dlp",
    "pose-weights",
    "backbone-weights",
    "gpu",
    "storage",
    "mlflow",
    "annotations",
)


class DoctorError(ActionRecognitionError):
    """At least one check failed (the message names every one)."""

    retryable = False


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    def summary(self) -> dict[str, Any]:
        return {
            "checks": [asdict(c) for c in self.checks],
            "failed": [c.name for c in self.failed],
            "warnings": [c.name for c in self.checks if c.status == "warn"],
        }

    def table(self) -> str:
        width = max(len(c.name) for c in self.checks)
        mark = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
        return "\n".join(f"{mark[c.status]}  {c.name:<{width}}  {c.detail}" for c in self.checks)


def check_ffmpeg() -> Check:
    path = shutil.which("ffmpeg")
    if path is None:
        return Check("ffmpeg", "fail", "ffmpeg is not on PATH (Debian: apt-get install ffmpeg)")
    out = subprocess.run(
        [path, "-hide_banner", "-version"], capture_output=True, text=True, timeout=30, check=False
    )
    first = (out.stdout.splitlines() or ["?"])[0]
    return Check("ffmpeg", "ok" if out.returncode == 0 else "fail", first)


def check_javascript() -> Check:
    from action_recognition.download import js_support

    found = js_support()
    if not found["ok"]:
        missing = [
            n
            for n, v in (("a JavaScript runtime (deno)", found["runtime"]), ("yt-dlp-ejs", found["ejs"]))
            if not v
        ]
        return Check(
            "javascript",
            "fail",
            f"missing {' and '.join(missing)}: YouTube gives no formats without them "
            "(install the worker extra: yt-dlp[default,deno])",
        )
    runtime = f"{found['runtime']} {found['runtime_version']} at {found['runtime_path']}"
    detail = f"{runtime}, EJS scripts {found['ejs']}"
    return Check("javascript", "ok", detail)


def check_yt_dlp(today: dt.date | None = None) -> Check:
    import yt_dlp

    version = yt_dlp.version.__version__
    try:
        released = dt.date(*(int(p) for p in version.split(".")[:3]))
    except (TypeError, ValueError):
        return Check("yt-dlp", "warn", f"{version}: cannot tell its age")
    age = ((today or dt.date.today()) - released).days
    if age > YT_DLP_MAX_AGE_DAYS:
        return Check(
            "yt-dlp", "warn", f"{version} is {age} days old: YouTube changes often; `make update-yt-dlp`"
        )
    return Check("yt-dlp", "ok", f"{version} ({age} days old)")


def _weights_check(name: str, value: str, expected: str | None) -> Check:
    from action_recognition.storage import open_storage
    from action_recognition.weights import _split, is_storage_uri, recorded_sha256

    if is_storage_uri(value):
        root, key = _split(value)
        storage = open_storage(root)
        recorded = recorded_sha256(storage, key)
        if recorded is None or not storage.exists(key):
            return Check(
                name,
                "fail",
                f"{value}: not in storage (action-recognition weights pull URL --name "
                f"{key.removeprefix('weights/')} --storage {root})",
            )
        if expected and recorded != expected:
            return Check(name, "fail", f"{value}: sha256 {recorded}, expected {expected}")
        return Check(name, "ok", f"{value} (sha256 {recorded[:12]}...)")
    path = Path(value).expanduser()
    if not path.is_file():
        return Check(
            name,
            "fail",
            f"{value}: no such file here, and it is no storage URI; pull it into storage with "
            "`action-recognition weights pull`",
        )
    return Check(name, "ok", f"{path} (a local file{', hash pinned' if expected else ', no hash pinned'})")


def check_pose_weights(cfg: Config) -> Check:
    if cfg.pose.untrained:
        return Check("pose-weights", "warn", "untrained pose model (random weights): tests and demos only")
    return _weights_check("pose-weights", cfg.pose.weights, cfg.pose.weights_sha256)


def check_backbone_weights(cfg: Config) -> Check:
    if cfg.train.backbone_weights:
        try:
            check = _weights_check("backbone-weights", cfg.train.backbone_weights, None)
        except Exception as exc:  # storage unreachable or refusing: the finding, named
            check = Check(
                "backbone-weights", "fail", f"{cfg.train.backbone_weights}: {type(exc).__name__}: {exc}"
            )
        if check.status == "fail" and cfg.train.allow_untrained:  # the trainer falls back to random weights
            return Check(
                "backbone-weights", "warn", f"{check.detail}; RGB trains from random weights (allowed)"
            )
        return check
    if not cfg.train.pretrained:
        return Check(
            "backbone-weights", "warn", "train.pretrained=false: RGB models start from random weights"
        )
    return Check(
        "backbone-weights",
        "warn",
        "train.backbone_weights unset: torchvision downloads the RGB backbone at "
        "train time (needs the network there)",
    )


def check_gpu(wanted: bool) -> Check:
    if not wanted:
        return Check("gpu", "ok", "not requested")
    import torch

    if not torch.cuda.is_available():
        return Check("gpu", "fail", "a GPU was requested (gpu_enabled) but CUDA sees none")
    return Check("gpu", "ok", f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}")


def check_storage(cfg: Config) -> Check:
    from action_recognition.layout import probe_key
    from action_recognition.storage import open_storage

    key = probe_key(uuid.uuid4().hex)
    try:
        # what answers now: a step waits out an unreachable server (storage.unreachable_s), a check does not
        storage = open_storage(cfg.storage.model_copy(update={"unreachable_s": 0.0}))
        storage.put_bytes(key, b"probe")
        storage.delete(key)
    except Exception as exc:  # any failure is the finding: the message says what the store answered
        return Check("storage", "fail", f"{cfg.storage.uri}: cannot write and delete a probe object ({exc})")
    return Check("storage", "ok", f"{cfg.storage.uri} writable")


def check_mlflow(cfg: Config, timeout: float = 10.0) -> Check:
    uri = cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if not uri.startswith(("http://", "https://")):
        return Check("mlflow", "ok", f"local tracking store {uri or './mlruns'}")
    req = urllib.request.Request(uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1")
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        req.add_header("Authorization", f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}")
    elif user and password:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=timeout):
            return Check("mlflow", "ok", f"{uri} answers and authorises")
    except urllib.error.HTTPError as exc:
        what = "refuses the credentials" if exc.code in (401, 403) else f"answers HTTP {exc.code}"
        return Check("mlflow", "fail", f"{uri} {what} (MLFLOW_TRACKING_USERNAME/PASSWORD)")
    except OSError as exc:
        return Check("mlflow", "fail", f"{uri} unreachable: {exc}")


def check_pool(api_url: str, user: str, password: str, pool: str, timeout: float = 10.0) -> Check:
    """Whether Airflow has ``pool``: a task in a pool that does not exist is never scheduled and nothing says
    why.

    Airflow 3 tasks cannot read the metadata database, so this asks the REST API as a person's script would: a
    JWT from ``/auth/token``, then ``GET /api/v2/pools/{pool}``.
    """
    base = api_url.rstrip("/")
    name = f"pool {pool}"
    try:
        body = json.dumps({"username": user, "password": password}).encode()
        req = urllib.request.Request(
            base + "/auth/token", data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            token = json.load(resp)["access_token"]
        req = urllib.request.Request(
            f"{base}/api/v2/pools/{urllib.parse.quote(pool, safe='')}",
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            found = json.load(resp)
    except urllib.error.HTTPError as exc:
        if exc.code == 404 and "/api/v2/pools/" in (exc.url or ""):
            return Check(
                name,
                "fail",
                f"Airflow has no pool {pool!r}: its tasks would never be scheduled "
                f"(airflow pools set {pool} 4 'Concurrent YouTube downloads')",
            )
        what = "refuses the credentials" if exc.code in (401, 403) else f"answers HTTP {exc.code}"
        return Check(name, "fail", f"cannot check: the Airflow API at {base} {what}")
    except (OSError, KeyError, ValueError) as exc:
        return Check(name, "fail", f"cannot check: the Airflow API at {base} is unreachable ({exc})")
    return Check(name, "ok", f"{found.get('slots')} slots ({found.get('open_slots')} open)")


def _source_head(source: str, timeout: float) -> bytes:
    """The first bytes of an annotation source (a ranged GET for URLs)."""
    scheme = urllib.parse.urlsplit(source).scheme
    if scheme in ("http", "https"):
        req = urllib.request.Request(source, headers={"Range": "bytes=0-4095"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return bytes(resp.read(4096))
    path = Path(urllib.parse.urlsplit(source).path if scheme == "file" else source).expanduser()
    with path.open("rb") as fh:
        return fh.read(4096)


def check_annotations(cfg: Config, timeout: float = 15.0) -> list[Check]:
    from action_recognition.annotations import REQUIRED_COLUMNS

    if not cfg.plan.annotations:
        return [Check("annotations", "warn", "no annotation sources configured (plan.annotations)")]
    checks = []
    for source in cfg.plan.annotations:
        name = f"annotations {Path(urllib.parse.urlsplit(source).path).name}"
        try:
            head = _source_head(source, timeout).decode("utf-8", "replace").splitlines()
        except (OSError, ValueError) as exc:
            checks.append(Check(name, "fail", f"{source}: {exc}"))
            continue
        header = [c.strip() for c in (head[0] if head else "").split(",")]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            checks.append(
                Check(name, "fail", f"{source}: not a Kinetics CSV (header lacks {', '.join(missing)})")
            )
        else:
            checks.append(Check(name, "ok", f"{source} answers with a Kinetics header"))
    return checks


def run_checks(cfg: Config, *, gpu: bool = False, skip: tuple[str, ...] = ()) -> Report:
    """Every check not in ``skip``; each one's own failure is recorded, never raised."""
    unknown = set(skip) - set(CHECKS)
    if unknown:
        from action_recognition.errors import ConfigError

        raise ConfigError(f"doctor --skip {sorted(unknown)}: the checks are {', '.join(CHECKS)}")
    steps: dict[str, Callable[[], Check | list[Check]]] = {
        "ffmpeg": check_ffmpeg,
        "javascript": check_javascript,
        "yt-dlp": check_yt_dlp,
        "pose-weights": lambda: check_pose_weights(cfg),
        "backbone-weights": lambda: check_backbone_weights(cfg),
        "gpu": lambda: check_gpu(gpu),
        "storage": lambda: check_storage(cfg),
        "mlflow": lambda: check_mlflow(cfg),
        "annotations": lambda: check_annotations(cfg),
    }
    report = Report()
    for name, step in steps.items():
        if name in skip:
            continue
        try:
            result = step()
        except Exception as exc:  # a check that crashes is a failed check, named
            result = Check(name, "fail", f"{type(exc).__name__}: {exc}")
        report.checks.extend(result if isinstance(result, list) else [result])
    return report


def doctor(cfg: Config, *, gpu: bool = False, skip: tuple[str, ...] = ()) -> Report:
    """:func:`run_checks`, raising DoctorError naming every failed check (exit status 2 from the CLI)."""
    report = run_checks(cfg, gpu=gpu, skip=skip)
    if report.failed:
        raise DoctorError("preflight failed: " + "; ".join(f"{c.name}: {c.detail}" for c in report.failed))
    return report
