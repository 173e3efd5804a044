"""URI-addressed object storage: local folders and ``s3://bucket/prefix`` (boto3), both first-class.

Keys are relative, ``/``-separated paths such as ``datasets/dance15/manifest.csv``. Every write is atomic:
a local file is written to a hidden temporary name in the same folder and renamed into place; an S3 object
appears only when its single PUT or its multipart upload completes. So a reader sees either the previous
object or the whole new one, never a partial one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from action_recognition.config import StorageConfig
from action_recognition.errors import StorageError, WorkspaceFullError
from action_recognition.workdir import partial_suffix, sweep_partials

log = logging.getLogger(__name__)
T = TypeVar("T")

_PARTIAL_MARK = ".partial-"
_KEY_PART = re.compile(r"[A-Za-z0-9._=+@-]+")


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key, else raise StorageError saying why.

    Safe: non-empty ``/``-separated parts of ``[A-Za-z0-9._=+@-]``, none of them ``.`` or ``..`` or a
    hidden temporary name. Labels and other free text never become keys, so this is strict on purpose.
    """
    if not key or key.startswith("/") or key.endswith("/"):
        raise StorageError(f"invalid storage key {key!r}: must be a relative path without a trailing '/'")
    for part in key.split("/"):
        if part in ("", ".", "..") or not _KEY_PART.fullmatch(part) or _PARTIAL_MARK in part:
            raise StorageError(f"invalid storage key {key!r}: bad part {part!r}")
    return key


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class Storage(ABC):
    """The operations the steps need. Implementations: :class:`LocalStorage`, :class:`S3Storage`."""

    uri: str

    def key_uri(self, key: str) -> str:
        """The full URI of ``key`` (what goes into XCom, MLflow and logs)."""
        return f"{self.uri.rstrip('/')}/{check_key(key)}"

    def prefix_uri(self, prefix: str) -> str:
        """The full URI of a key prefix such as ``clips/<profile>/`` (ends with ``/``)."""
        return self.key_uri(prefix.rstrip("/")) + "/"

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is published under ``key``."""

    @abstractmethod
    def size(self, key: str) -> int | None:
        """Size in bytes of ``key``, or None when it does not exist."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The content of ``key``; StorageError (naming the URI) when missing or unreadable."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Publish ``data`` under ``key`` atomically, replacing any previous object."""

    @abstractmethod
    def get_file(self, key: str, dest: Path) -> Path:
        """Copy ``key`` to the local file ``dest`` (atomically) and return ``dest``."""

    @abstractmethod
    def put_file(self, key: str, src: Path) -> None:
        """Publish the local file ``src`` under ``key`` atomically (multipart for large S3 uploads)."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys under ``prefix`` (recursive); temporary partial writes are never listed."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Delete ``key`` if present; True when something was deleted. Only for keys a step owns."""

    def put_bytes_if_changed(self, key: str, data: bytes) -> bool:
        """Publish ``data`` unless ``key`` already holds exactly these bytes; True when written.

        This is how re-running a step with the same inputs writes nothing new.
        """
        if self.size(key) == len(data) and self.get_bytes(key) == data:
            return False
        self.put_bytes(key, data)
        return True


class LocalStorage(Storage):
    """A local folder. Writes go to a hidden temporary file in the target folder, then ``os.replace``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def path(self, key: str) -> Path:
        """Local path of ``key`` (for tools that need a file, such as ffmpeg reading a published clip)."""
        return self.root / check_key(key)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int | None:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            return None

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"{self.key_uri(key)} does not exist") from None
        except OSError as exc:
            raise StorageError(f"cannot read {self.key_uri(key)}: {exc}") from exc

    @contextlib.contextmanager
    def _atomic_target(self, key: str) -> Iterator[Path]:
        final = self.path(key)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create folder for {self.key_uri(key)}: {exc}") from exc
        sweep_partials(final.parent, final.name)  # what a killed writer of this key left
        tmp = final.parent / f".{final.name}{partial_suffix()}"
        try:
            yield tmp
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            hint = " (disk full)" if exc.errno == errno.ENOSPC else ""
            raise StorageError(f"cannot write {self.key_uri(key)}{hint}: {exc}") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._atomic_target(key) as tmp, tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def put_file(self, key: str, src: Path) -> None:
        with self._atomic_target(key) as tmp, Path(src).open("rb") as fin, tmp.open("wb") as fout:
            while block := fin.read(1 << 20):
                fout.write(block)
            fout.flush()
            os.fsync(fout.fileno())

    def get_file(self, key: str, dest: Path) -> Path:
        data_path = self.path(key)
        if not data_path.is_file():
            raise StorageError(f"{self.key_uri(key)} does not exist")
        return _atomic_copy(data_path, Path(dest))

    def list(self, prefix: str = "") -> list[str]:
        base = self.root / prefix if prefix else self.root
        if prefix:
            check_key(prefix.rstrip("/"))
        start = base if base.is_dir() else base.parent
        keys = []
        for dirpath, _dirs, files in os.walk(start):
            for name in files:
                if _PARTIAL_MARK in name:
                    continue
                key = (Path(dirpath) / name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> bool:
        try:
            self.path(key).unlink()
            return True
        except FileNotFoundError:
            return False


def _atomic_copy(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    sweep_partials(dest.parent, dest.name)
    tmp = dest.parent / f".{dest.name}{partial_suffix()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fout, src.open("rb") as fin:
            while block := fin.read(1 << 20):
                fout.write(block)
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise WorkspaceFullError(f"no space left in {dest.parent} copying {src.name}") from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


@dataclass(frozen=True)
class S3Keys:
    """An S3 access key pair handed to :class:`S3Storage` (``repr`` shows no secret)."""

    access_key_id: str
    secret_access_key: str = field(repr=False)


class S3Storage(Storage):
    """``s3://bucket/prefix`` through boto3, for AWS S3, MinIO and S3-compatible test servers.

    Credentials are ``keys`` when given (an Airflow connection's, through :mod:`action_recognition.services`),
    else boto3's usual chain (the environment a step was started with); the endpoint from the config or
    ``AWS_ENDPOINT_URL``. Throttling and 5xx answers are retried by botocore's standard mode, up to
    ``max_attempts``. A server that cannot be reached (refused, reset, timed out: a MinIO restart) is retried
    here for ``unreachable_s`` seconds, 0.5 s doubling to 8 s apart: botocore's own backoff for those errors
    starts at 50 ms and gives up within about 2 s at the default attempts. Every call is idempotent, so a
    retry is safe.
    """

    def __init__(
        self,
        uri: str,
        config: StorageConfig | None = None,
        client: Any | None = None,
        keys: S3Keys | None = None,
    ) -> None:
        if not uri.startswith("s3://"):
            raise StorageError(f"not an S3 URI: {uri!r}")
        bucket, _, prefix = uri[5:].partition("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.config = config or StorageConfig(uri=uri)
        self._client = client
        self._keys = keys

    @property
    def client(self) -> Any:
        """The boto3 client, created on first use (nothing connects in ``__init__``)."""
        if self._client is None:
            import boto3
            from botocore.config import Config as BotoConfig

            cfg, keys = self.config, self._keys
            session = boto3.session.Session(
                aws_access_key_id=keys.access_key_id if keys else None,
                aws_secret_access_key=keys.secret_access_key if keys else None,
            )
            self._client = session.client(
                "s3",
                endpoint_url=cfg.endpoint_url
                or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL"),
                region_name=cfg.region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
                config=BotoConfig(
                    retries={"max_attempts": cfg.max_attempts, "mode": "standard"},
                    connect_timeout=cfg.connect_timeout_s,
                    read_timeout=cfg.read_timeout_s,
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    s3={"addressing_style": "path"},
                ),
            )
        return self._client

    def _call(self, fn: Callable[[], T]) -> T:
        """``fn()``, retried while the server cannot be reached, for ``config.unreachable_s`` seconds."""
        from botocore.exceptions import ConnectionError as Unreachable
        from botocore.exceptions import HTTPClientError  # connection closed, read timeout

        deadline, delay = time.monotonic() + self.config.unreachable_s, 0.5
        while True:
            try:
                return fn()
            except (Unreachable, HTTPClientError) as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                log.warning("%s unreachable (%s); retrying in %.1f s", self.uri, exc, min(delay, left))
                time.sleep(min(delay, left))
                delay = min(2 * delay, 8.0)

    def _object_key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, action: str, key: str, exc: Exception) -> StorageError:
        return StorageError(f"cannot {action} {self.key_uri(key)}: {exc}")

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def size(self, key: str) -> int | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head = self._call(lambda: self.client.head_object(Bucket=self.bucket, Key=self._object_key(key)))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._error("stat", key, exc) from exc
        except BotoCoreError as exc:
            raise self._error("stat", key, exc) from exc
        return int(head["ContentLength"])

    def get_bytes(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self._call(
                lambda: bytes(
                    self.client.get_object(Bucket=self.bucket, Key=self._object_key(key))["Body"].read()
                )
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise StorageError(f"{self.key_uri(key)} does not exist") from None
            raise self._error("read", key, exc) from exc
        except BotoCoreError as exc:
            raise self._error("read", key, exc) from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._call(
                lambda: self.client.put_object(Bucket=self.bucket, Key=self._object_key(key), Body=data)
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._error("write", key, exc) from exc

    def _transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        threshold = self.config.multipart_threshold_mb * 1024 * 1024
        return TransferConfig(multipart_threshold=threshold, multipart_chunksize=threshold, use_threads=True)

    def put_file(self, key: str, src: Path) -> None:
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._call(
                lambda: self.client.upload_file(
                    str(src), self.bucket, self._object_key(key), Config=self._transfer_config()
                )
            )
        except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
            raise self._error("upload to", key, exc) from exc

    def get_file(self, key: str, dest: Path) -> Path:
        from botocore.exceptions import BotoCoreError, ClientError

        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        sweep_partials(dest.parent, dest.name)
        tmp = dest.parent / f".{dest.name}{partial_suffix()}"
        try:
            self._call(
                lambda: self.client.download_file(
                    self.bucket, self._object_key(key), str(tmp), Config=self._transfer_config()
                )
            )
            os.replace(tmp, dest)
        except ClientError as exc:
            tmp.unlink(missing_ok=True)
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise StorageError(f"{self.key_uri(key)} does not exist") from None
            raise self._error("download", key, exc) from exc
        except (BotoCoreError, OSError) as exc:
            tmp.unlink(missing_ok=True)
            if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left" in str(exc):
                raise WorkspaceFullError(
                    f"no space left in {dest.parent} downloading {self.key_uri(key)}"
                ) from exc
            raise self._error("download", key, exc) from exc
        return dest

    def list(self, prefix: str = "") -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0

        def listing() -> list[str]:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
            return [obj["Key"][strip:] for page in pages for obj in page.get("Contents", [])]

        try:
            keys = self._call(listing)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"cannot list {self.uri}/{prefix}: {exc}") from exc
        return sorted(keys)

    def delete(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        if not self.exists(key):
            return False
        try:
            self._call(lambda: self.client.delete_object(Bucket=self.bucket, Key=self._object_key(key)))
        except (ClientError, BotoCoreError) as exc:
            raise self._error("delete", key, exc) from exc
        return True


def open_storage(target: str | StorageConfig, keys: S3Keys | None = None) -> Storage:
    """Open the store named by a URI or a :class:`StorageConfig`.

    ``s3://bucket/prefix`` gives :class:`S3Storage` (with ``keys`` when given); a path or ``file://`` URI
    gives :class:`LocalStorage`.
    """
    config = target if isinstance(target, StorageConfig) else StorageConfig(uri=target)
    uri = config.uri
    if uri.startswith("s3://"):
        return S3Storage(uri, config, keys=keys)
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return LocalStorage(uri)
