"""Every storage operation against a local folder and a real S3-compatible server (moto on 127.0.0.1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from action_recognition.config import StorageConfig
from action_recognition.errors import StorageError
from action_recognition.storage import LocalStorage, S3Storage, check_key, open_storage, sha256_file

pytestmark = pytest.mark.integration


def test_bytes_round_trip_and_listing(storage_uri: str) -> None:
    store = open_storage(storage_uri)
    assert not store.exists("a/b.txt")
    assert store.size("a/b.txt") is None
    store.put_bytes("a/b.txt", b"hello")
    store.put_bytes("a/c/d.bin", b"\x00" * 10)
    store.put_bytes("z.txt", b"z")
    assert store.exists("a/b.txt")
    assert store.size("a/c/d.bin") == 10
    assert store.get_bytes("a/b.txt") == b"hello"
    assert store.list("a/") == ["a/b.txt", "a/c/d.bin"]
    assert store.list() == ["a/b.txt", "a/c/d.bin", "z.txt"]
    assert store.key_uri("a/b.txt") == f"{store.uri}/a/b.txt"
    store.put_bytes("a/b.txt", b"replaced")
    assert store.get_bytes("a/b.txt") == b"replaced"
    assert store.delete("a/b.txt") is True
    assert store.delete("a/b.txt") is False
    assert store.list("a/") == ["a/c/d.bin"]


def test_missing_key_error_names_the_uri(storage_uri: str) -> None:
    store = open_storage(storage_uri)
    with pytest.raises(StorageError, match=r"missing/key.txt does not exist"):
        store.get_bytes("missing/key.txt")
    with pytest.raises(StorageError, match="does not exist"):
        store.get_file("missing/key.txt", Path("/tmp/never-written"))


def test_file_round_trip(storage_uri: str, tmp_path: Path) -> None:
    store = open_storage(storage_uri)
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(300_000))
    store.put_file("files/src.bin", src)
    out = store.get_file("files/src.bin", tmp_path / "out" / "copy.bin")
    assert sha256_file(out) == sha256_file(src)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name != "copy.bin"], "temp file left behind"


def test_put_if_changed_writes_only_new_content(storage_uri: str) -> None:
    store = open_storage(storage_uri)
    assert store.put_bytes_if_changed("k/v.json", b"{}") is True
    assert store.put_bytes_if_changed("k/v.json", b"{}") is False
    assert store.put_bytes_if_changed("k/v.json", b"{1}") is True


@pytest.mark.parametrize(
    "key",
    ["", "/abs", "a/../b", "a//b", "a/./b", "trail/", "sp ace", "a/.x.partial-1", "semi;colon", "$(id)"],
)
def test_unsafe_keys_are_refused(storage_uri: str, key: str) -> None:
    store = open_storage(storage_uri)
    with pytest.raises(StorageError, match="invalid storage key"):
        store.put_bytes(key, b"x")


def test_local_write_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that dies half-way publishes nothing and leaves no temporary file."""
    store = LocalStorage(tmp_path / "store")
    store.put_bytes("x/keep.txt", b"old")

    def boom(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(StorageError, match=r"disk full"):
        store.put_bytes("x/keep.txt", b"new content")
    with pytest.raises(StorageError, match=r"disk full"):
        store.put_bytes("x/new.txt", b"new content")
    monkeypatch.undo()
    assert store.get_bytes("x/keep.txt") == b"old"
    assert sorted(p.name for p in (tmp_path / "store" / "x").iterdir()) == ["keep.txt"]


def test_partial_files_are_never_listed(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / ".clip.mp4.partial-abc").write_bytes(b"half")
    store.put_bytes("d/whole.mp4", b"all")
    assert store.list("d/") == ["d/whole.mp4"]


def test_s3_multipart_upload_is_whole(s3_bucket: str, tmp_path: Path) -> None:
    cfg = StorageConfig(uri=f"{s3_bucket}/mp", multipart_threshold_mb=5)
    store = open_storage(cfg)
    assert isinstance(store, S3Storage)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(12 * 1024 * 1024))
    store.put_file("big.bin", big)
    head = store.client.head_object(Bucket=store.bucket, Key="mp/big.bin")
    assert "-" in head["ETag"], "expected a multipart ETag"
    assert store.size("big.bin") == big.stat().st_size
    assert sha256_file(store.get_file("big.bin", tmp_path / "back.bin")) == sha256_file(big)


def test_s3_errors_name_the_bucket(s3_server: str) -> None:
    store = open_storage("s3://no-such-bucket/p")
    with pytest.raises(StorageError, match=r"s3://no-such-bucket/p/a\.txt"):
        store.put_bytes("a.txt", b"x")


def test_open_storage_kinds(tmp_path: Path) -> None:
    assert isinstance(open_storage(str(tmp_path)), LocalStorage)
    assert isinstance(open_storage(f"file://{tmp_path}"), LocalStorage)
    assert isinstance(open_storage("s3://bucket/prefix"), S3Storage)
    assert check_key("raw/-abc_000001_000011.mp4")
