"""Weights are data: fetched once into storage, read by every step through a local, hash-checked cache.

``pull`` copies a file (an https URL such as the Ultralytics release asset or a torchvision weights URL, or a
local file) into storage under ``weights/NAME`` and records its sha256 next to it (``weights/NAME.sha256``);
given a hash, it refuses a file with another one, and it refuses a download shorter than the server announced.
``resolve`` turns a ``pose.weights`` / ``train.backbone_weights`` value into a local file: a plain path as it
is; a storage URI (``s3://bucket/prefix/weights/NAME``, or ``<local storage root>/weights/NAME``) through the
cache ``<cache>/weights/<sha256>/NAME``, downloaded once per machine (a file lock: two workers' first use at
once downloads once) and checked against the recorded hash every time. No step downloads weights from the
internet at run time.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from action_recognition.errors import ActionRecognitionError, ConfigError
from action_recognition.layout import WEIGHTS, weights_key
from action_recognition.storage import Storage, open_storage

log = logging.getLogger(__name__)

PREFIX = WEIGHTS
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20

#: What the stack and the README pull by default: the pose model and the RGB backbone, from their publishers.
DEFAULTS = {
    "yolo11n-pose.pt": "https://github.com/ultralytics/assets/releases/download/v8.3.0/yolo11n-pose.pt",
    "resnet18-f37072fd.pth": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
}


class WeightsError(ActionRecognitionError):
    """A weights file that cannot be had or is not the one expected (wrong hash, truncated)."""


class WeightsMismatch(WeightsError):
    """The file's content is not the expected one: fetching it again gives the same bytes."""

    retryable = False


@dataclass(frozen=True)
class WeightsRef:
    uri: str
    sha256: str
    bytes: int
    fetched: bool  # False: storage already held this file (nothing downloaded)

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def _check_name(name: str) -> str:
    if not NAME.match(name) or ".." in name:
        raise ConfigError(
            f"weights name {name!r}: letters, digits, '_', '-', '.' only (e.g. yolo11n-pose.pt)"
        )
    return name


def _open_source(source: str, timeout: float) -> tuple[BinaryIO, int | None]:
    """The source's byte stream and announced length (None when unknown)."""
    scheme = urllib.parse.urlsplit(source).scheme
    if scheme in ("https", "http"):
        req = urllib.request.Request(source, headers={"User-Agent": "action-recognition weights pull"})
        try:
            resp = urllib.request.urlopen(req, timeout=timeout)
        except OSError as exc:
            raise WeightsError(f"cannot fetch weights from {source}: {exc}") from exc
        length = resp.headers.get("Content-Length")
        return resp, int(length) if length and length.isdigit() else None
    if scheme in ("", "file"):
        path = Path(urllib.parse.urlsplit(source).path if scheme else source).expanduser()
        if not path.is_file():
            raise ConfigError(f"weights source {source!r}: no such file")
        return path.open("rb"), path.stat().st_size
    raise ConfigError(f"weights source {source!r}: only https://, http:// or a local file")


def _copy_hashing(src: BinaryIO, dest: BinaryIO, expected_length: int | None, what: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    try:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            dest.write(chunk)
            size += len(chunk)
    except OSError as exc:  # a connection cut mid-body
        raise WeightsError(f"{what}: the download broke off after {size} bytes ({exc})") from exc
    finally:
        src.close()
    if expected_length is not None and size != expected_length:
        raise WeightsError(f"{what}: truncated download, {size} of {expected_length} bytes")
    if size == 0:
        raise WeightsError(f"{what}: empty file")
    return digest.hexdigest(), size


def pull(
    source: str, name: str, storage: Storage, *, sha256: str | None = None, timeout: float = 60.0
) -> WeightsRef:
    """Copy ``source`` into ``storage`` as ``weights/NAME`` once; its URI and sha256.

    Idempotent: when storage already holds ``NAME`` with a recorded hash (equal to ``sha256`` when one is
    given), nothing is fetched. Raises WeightsMismatch for a file with another hash, WeightsError for a
    truncated download.
    """
    _check_name(name)
    if sha256 is not None and not SHA256.match(sha256):
        raise ConfigError(f"--sha256 {sha256!r}: 64 lowercase hex digits")
    key = weights_key(name)
    recorded = recorded_sha256(storage, key)
    if recorded is not None and storage.exists(key):
        if sha256 is not None and recorded != sha256:
            raise WeightsMismatch(
                f"storage already holds {key} with sha256 {recorded}, not {sha256}: pull it under another "
                "name"
            )
        return WeightsRef(storage.key_uri(key), recorded, storage.size(key) or 0, fetched=False)
    stream, length = _open_source(source, timeout)
    with tempfile.TemporaryDirectory(prefix="ar-weights-") as tmp:
        part = Path(tmp) / name
        with part.open("wb") as out:
            digest, size = _copy_hashing(stream, out, length, f"weights from {source}")
        if sha256 is not None and digest != sha256:
            raise WeightsMismatch(f"weights from {source} have sha256 {digest}, expected {sha256}")
        storage.put_file(key, part)
    storage.put_bytes(key + ".sha256", f"{digest}  {name}\n".encode())  # written last: the file is complete
    log.info("weights: %s -> %s (%d bytes, sha256 %s)", source, storage.key_uri(key), size, digest)
    return WeightsRef(storage.key_uri(key), digest, size, fetched=True)


def pull_defaults(storage: Storage, *, if_online: bool = False) -> dict[str, dict[str, Any]]:
    """:data:`DEFAULTS` into storage. With ``if_online``, a source that cannot be reached is reported, not
    raised (an offline deployment starts anyway; the README gives the command to run once it is online)."""
    out: dict[str, dict[str, Any]] = {}
    for name, url in DEFAULTS.items():
        try:
            out[name] = pull(url, name, storage).summary()
        except WeightsMismatch:
            raise
        except WeightsError as exc:
            if not if_online:
                raise
            root = storage.key_uri(PREFIX + name).rsplit("/" + PREFIX, 1)[0]
            later = f"action-recognition weights pull {url} --name {name} --storage {root}"
            out[name] = {"skipped": str(exc), "later": later}
            log.warning("weights %s not pulled (%s); once online: %s", name, exc, later)
    return out


def recorded_sha256(storage: Storage, key: str) -> str | None:
    """The hash ``pull`` recorded for ``key`` (None when there is none)."""
    if not storage.exists(key + ".sha256"):
        return None
    text = storage.get_bytes(key + ".sha256").decode().split()
    return text[0] if text and SHA256.match(text[0]) else None


def is_storage_uri(value: str) -> bool:
    """``s3://.../weights/NAME``, or a local storage's ``.../weights/NAME`` that ``pull`` recorded a hash
    for."""
    if value.startswith("s3://"):
        return True
    path = Path(value).expanduser()
    return path.parent.name == PREFIX.rstrip("/") and path.with_name(path.name + ".sha256").is_file()


def _split(uri: str) -> tuple[str, str]:
    """``s3://b/p/weights/NAME`` -> (``s3://b/p``, ``weights/NAME``)."""
    root, sep, name = uri.rpartition("/" + PREFIX)
    if not sep or not root or "/" in name:
        raise ConfigError(
            f"weights {uri!r}: a storage URI names <storage root>/weights/<name> (see `weights pull`)"
        )
    return root, PREFIX + _check_name(name)


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "action-recognition"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def resolve(
    value: str,
    *,
    expected_sha256: str | None = None,
    cache: Path | None = None,
    opener: Callable[[str], Storage] = open_storage,
) -> tuple[Path, bool]:
    """A local file for a weights value, and whether this call downloaded it.

    A storage URI goes through the cache (one download per machine, under a file lock), a plain path is used
    as it is; either is checked against ``expected_sha256`` and, for storage, the hash ``pull`` recorded.
    """
    if not is_storage_uri(value):
        path = Path(value).expanduser()
        if expected_sha256 and path.is_file() and _file_sha256(path) != expected_sha256:
            raise WeightsMismatch(f"weights {path} do not have sha256 {expected_sha256}")
        return path, False
    root, key = _split(value)
    storage = opener(root)
    recorded = recorded_sha256(storage, key)
    if recorded is None:
        raise WeightsError(
            f"{value}: no recorded sha256 next to it; put weights there with `action-recognition "
            "weights pull`"
        )
    if expected_sha256 and recorded != expected_sha256:
        raise WeightsMismatch(f"{value} is recorded with sha256 {recorded}, expected {expected_sha256}")
    folder = (cache or default_cache()) / "weights" / recorded
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / key.removeprefix(PREFIX)
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the second worker waits here, then finds the file
        if target.is_file() and _file_sha256(target) == recorded:
            return target, False
        part = folder / f".{target.name}.{os.getpid()}.part"
        try:
            storage.get_file(key, part)
            digest = _file_sha256(part)
            if digest != recorded:
                raise WeightsMismatch(
                    f"{value}: the stored file has sha256 {digest}, its record says {recorded}"
                )
            os.replace(part, target)
        finally:
            part.unlink(missing_ok=True)
    log.info("weights: %s cached at %s", value, target)
    return target, True
