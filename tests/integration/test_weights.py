"""Weights are data: `weights pull` from a real HTTP server into local and S3 storage, the steps reading them
back through the hash-checked cache. Offline: the files are made here (an untrained YOLO pose model saved to
.pt, an untrained torchvision ResNet18 state dict) and served by a local HTTP server, as a release asset would
be."""

from __future__ import annotations

import hashlib
import multiprocessing
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from action_recognition.config import PoseConfig, StorageConfig, TrainConfig
from action_recognition.errors import ConfigError
from action_recognition.storage import open_storage
from action_recognition.weights import WeightsError, WeightsMismatch, pull, resolve
from tests.support.http import Site
from tests.support.reliability import Reliability
from tests.support.weights import untrained_pose_pt

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    import torch
    from torchvision.models import resnet18

    folder = tmp_path_factory.mktemp("weights")
    untrained_pose_pt(folder)
    torch.save(resnet18(weights=None).state_dict(), folder / "resnet18-untrained.pth")
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def server(weight_files: dict[str, bytes]) -> Iterator[Site]:
    """The weight files by name; ``NAME-truncated`` announces the whole file and sends half of it."""

    def answer(path: str, _: object) -> tuple[int, bytes, int | None]:
        body = weight_files.get(path.lstrip("/").removesuffix("-truncated"))
        if body is None:
            return 404, b"", None
        return (200, body[: len(body) // 2], len(body)) if path.endswith("-truncated") else (200, body, None)

    with Site.serving(answer) as site:
        yield site


@pytest.fixture()
def bucket(s3_server: str) -> str:
    name = f"weights-{threading.get_ident() % 100000}"
    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}/ar"


def test_pull_records_the_hash_and_fetches_once(
    server: Site, bucket: str, tmp_path: Path, weight_files: dict[str, bytes]
) -> None:
    body = weight_files["yolo11n-pose.pt"]
    sha = hashlib.sha256(body).hexdigest()
    for root in (bucket, str(tmp_path / "store")):
        storage = open_storage(root)
        before = server.requests["/yolo11n-pose.pt"]
        ref = pull(f"{server.url}/yolo11n-pose.pt", "yolo11n-pose.pt", storage, sha256=sha)
        assert (ref.sha256, ref.bytes, ref.fetched) == (sha, len(body), True)
        assert ref.uri == f"{root}/weights/yolo11n-pose.pt"
        again = pull(f"{server.url}/yolo11n-pose.pt", "yolo11n-pose.pt", storage)
        assert again.fetched is False and again.sha256 == sha
        assert server.requests["/yolo11n-pose.pt"] == before + 1, "the second pull downloads nothing"
        path, downloaded = resolve(ref.uri, cache=tmp_path / "cache" / str(len(root)))
        assert downloaded and path.read_bytes() == body


def test_a_wrong_hash_or_a_truncated_download_is_refused(
    server: Site, bucket: str, reliability: Reliability
) -> None:
    storage = open_storage(bucket)
    url = f"{server.url}/resnet18-untrained.pth"
    with reliability.bad_input("weights pull: another file than the pinned sha256", rejects=WeightsMismatch):
        pull(url, "resnet18.pth", storage, sha256="0" * 64)
    with reliability.bad_input(
        "weights pull: a download cut halfway", rejects=WeightsError, match="truncated"
    ):
        pull(url + "-truncated", "resnet18.pth", storage)
    with reliability.bad_input("weights pull: ftp source", rejects=ConfigError):
        pull("ftp://example.org/x.pt", "x.pt", storage)
    with reliability.bad_input("weights pull: a name with a path", rejects=ConfigError):
        pull(url, "../x.pt", storage)
    assert not storage.exists("weights/resnet18.pth"), "nothing is kept from a refused pull"


def test_a_tampered_object_in_storage_is_refused(server: Site, bucket: str, tmp_path: Path) -> None:
    storage = open_storage(bucket)
    ref = pull(f"{server.url}/resnet18-untrained.pth", "resnet18.pth", storage)
    storage.put_bytes("weights/resnet18.pth", b"not the weights")
    with pytest.raises(WeightsMismatch, match="its record says"):
        resolve(ref.uri, cache=tmp_path / "cache")


def _first_use(uri: str, cache: str, endpoint: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    path, downloaded = resolve(uri, cache=Path(cache))
    queue.put((str(path), downloaded))


def test_two_workers_first_use_at_once_downloads_once(
    server: Site, bucket: str, tmp_path: Path, s3_server: str
) -> None:
    ref = pull(f"{server.url}/yolo11n-pose.pt", "yolo11n-pose.pt", open_storage(bucket))
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    workers = [
        ctx.Process(target=_first_use, args=(ref.uri, str(tmp_path / "cache"), s3_server, queue))
        for _ in range(2)
    ]
    for w in workers:
        w.start()
    results = [queue.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(30)
    assert len({path for path, _ in results}) == 1
    assert sorted(d for _, d in results) == [False, True], f"exactly one download: {results}"


def test_the_pose_step_and_the_rgb_trainer_read_weights_from_storage(
    server: Site, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from action_recognition.pose.extract import load_pose_model
    from action_recognition.training.setup import with_backbone as _with_backbone

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    storage = open_storage(StorageConfig(uri=bucket))
    pose_ref = pull(f"{server.url}/yolo11n-pose.pt", "yolo11n-pose.pt", storage)
    model = load_pose_model(PoseConfig(weights=pose_ref.uri, weights_sha256=pose_ref.sha256, device="cpu"))
    assert (model.name, model.weights_sha256, model.untrained) == ("yolo11n-pose", pose_ref.sha256, False)
    assert (tmp_path / "xdg/action-recognition/weights" / pose_ref.sha256 / "yolo11n-pose.pt").is_file()
    with pytest.raises(WeightsMismatch):
        load_pose_model(PoseConfig(weights=pose_ref.uri, weights_sha256="f" * 64, device="cpu"))

    from action_recognition.models.rgb import TSNResNet18

    rgb_ref = pull(f"{server.url}/resnet18-untrained.pth", "resnet18-untrained.pth", storage)
    assert TrainConfig(backbone_weights=rgb_ref.uri).backbone_weights == rgb_ref.uri
    net = _with_backbone(TSNResNet18(num_classes=3, frames=2, pretrained=False), rgb_ref.uri)
    state = torch.load(
        tmp_path / "xdg/action-recognition/weights" / rgb_ref.sha256 / "resnet18-untrained.pth",
        weights_only=True,
    )
    assert torch.equal(net.net.conv1.weight, state["conv1.weight"]), "the backbone is the pulled one"
    with pytest.raises(WeightsMismatch, match="do not fit"):
        torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
        _with_backbone(TSNResNet18(num_classes=3, frames=2, pretrained=False), str(tmp_path / "bad.pth"))
