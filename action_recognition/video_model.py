"""``<dataset>-video``: a registered model that takes a video and answers with labels and probabilities.

- :func:`log_video_model`: once per training run, into that run (tag ``ar.video_model_uri``), a
  :class:`VideoClassifier` wrapping the run's network with the settings that made its data pinned: the clip
  profile, and for keypoint models the pose settings with the pose weights as an artifact (untrained weights
  are saved as a file, so every load of the model sees the same ones, and the model says untrained). The code
  is :func:`action_recognition.predict.video_input`, the same as ``action-recognition predict``.
- :func:`register_video`: registers it under ``<dataset>-video`` (one version per run), tagged ``ar.wraps``
  with the family model version it wraps; ``register`` does this after registering the family model.
- :func:`sync_video_champion`: ``<dataset>-video@champion`` is the video version that wraps the better of the
  family champions (the promotion metric); ``promote`` calls it, so the video model moves with the champion it
  wraps.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.pyfunc import PythonModel

from action_recognition.config import ClipConfig, PoseConfig, RegistryConfig
from action_recognition.names import FAMILIES, split_model_name
from action_recognition.names import model_name as names_model_name
from action_recognition.registry import (
    CHAMPION,
    Registration,
    RegistryError,
    register_run,
    set_alias,
    with_retries,
)
from action_recognition.services import fetch_model, log_model, mlflow_client
from action_recognition.serving import POSE_ARTIFACT, TORCH_ARTIFACT

log = logging.getLogger(__name__)

#: MLflow's answers for a model or an alias that does not exist (yet).
MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")
VIDEO_TAG = "ar.video_model_uri"


class VideoClassifier(PythonModel):
    """A video in (column ``video``: a path or a storage URI; or ``video_bytes``: the file), answers out. The
    clip, pose and frame settings are those of the wrapped model's pipeline, pinned here; see
    :mod:`action_recognition.video_model`."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec  # family, classes, input_shape, clip, pose, max_mb, wraps, untrained
        self.module: Any = None
        self.pose: Any = None
        self.pose_config: Any = None

    def load_context(self, context: Any) -> None:
        import mlflow.pytorch

        from action_recognition.config import PoseConfig

        self.module = mlflow.pytorch.load_model(context.artifacts[TORCH_ARTIFACT], map_location="cpu").eval()
        if self.spec["family"] == "keypoint":
            from action_recognition.pose.extract import load_pose_model

            self.pose_config = PoseConfig.model_validate(
                {**self.spec["pose"], "weights": context.artifacts[POSE_ARTIFACT]}
            )
            self.pose = load_pose_model(self.pose_config)

    def predict(self, context, model_input, params=None):
        return classify_videos(self, model_input)


def video_name(model_name: str) -> str:
    """``demo-keypoint`` -> ``demo-video``."""
    dataset, family = split_model_name(model_name)
    if family not in FAMILIES:
        raise RegistryError(f"{model_name!r} is not a <dataset>-keypoint or <dataset>-rgb model name")
    return names_model_name(dataset, "video")


def _signature(classes: list[str]) -> Any:
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema

    from action_recognition.serving import answers

    inputs = Schema(
        [ColSpec("string", "video", required=False), ColSpec("binary", "video_bytes", required=False)]
    )
    outputs = infer_signature(None, answers(np.zeros((1, len(classes))), classes)).outputs
    return ModelSignature(inputs=inputs, outputs=outputs)


def _pose_weights(pose: PoseConfig, folder: Path) -> tuple[Path, str]:
    """The weights file the video model carries, and its sha256."""
    import hashlib

    if pose.untrained:
        from action_recognition.pose.extract import load_pose_model

        path = folder / f"{Path(pose.weights).stem}-untrained.pt"
        load_pose_model(pose).model.save(path)
    else:
        from action_recognition.weights import WeightsError, resolve

        path, _ = resolve(pose.weights, expected_sha256=pose.weights_sha256)
        if not path.is_file():
            raise WeightsError(f"the video model carries the pose weights, and {pose.weights} is not a file")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def log_video_model(
    run_id: str,
    model_uri: str,
    *,
    pose: PoseConfig,
    clip: ClipConfig,
    config: RegistryConfig,
    tracking_uri: str | None = None,
) -> str:
    """Log the video model of ``run_id`` (whose network is ``model_uri``) once, on the MLflow server at
    ``tracking_uri``; its ``models:/`` URI."""
    client = mlflow_client(tracking_uri)
    run = with_retries(lambda: client.get_run(run_id), f"read run {run_id}", config)
    if run.data.tags.get(VIDEO_TAG):
        return str(run.data.tags[VIDEO_TAG])
    with tempfile.TemporaryDirectory(prefix="ar-video-model-") as tmp:
        network = fetch_model(model_uri, tracking_uri, Path(tmp) / "network")
        uri = _log_video_model(
            client, run_id, model_uri, network, Path(tmp), pose=pose, clip=clip, config=config
        )
    with_retries(lambda: client.set_tag(run_id, VIDEO_TAG, uri), "tag the video model", config)
    log.info("logged the video model of run %s: %s (wraps %s)", run_id, uri, model_uri)
    return uri


def _log_video_model(
    client: Any,
    run_id: str,
    model_uri: str,
    network: Path,
    tmp: Path,
    *,
    pose: PoseConfig,
    clip: ClipConfig,
    config: RegistryConfig,
) -> str:
    """The video model around the network fetched into ``network``, logged into run ``run_id``."""
    import mlflow.pyfunc
    import mlflow.pytorch

    from action_recognition.predict import _input_shape
    from action_recognition.serving import load_module, model_info

    info = model_info(network)
    meta = dict(info.metadata or {})
    family = str(meta.get("family") or "")
    if family not in FAMILIES or not meta.get("classes"):
        raise RegistryError(f"{model_uri} lacks the classes/family metadata that action-recognition logs")
    untrained = bool(meta.get("untrained")) or (family == "keypoint" and pose.untrained)
    spec: dict[str, Any] = {
        "family": family,
        "classes": list(meta["classes"]),
        "input_shape": _input_shape(info, model_uri),
        "clip": clip.model_dump(mode="json"),
        "max_mb": config.video_max_mb,
        "wraps": model_uri,
        "untrained": untrained,
    }
    torch_dir = tmp / TORCH_ARTIFACT
    mlflow.pytorch.save_model(load_module(network, model_uri), str(torch_dir), serialization_format="pickle")
    artifacts = {TORCH_ARTIFACT: str(torch_dir)}
    if family == "keypoint":
        weights, sha = _pose_weights(pose, tmp)
        artifacts[POSE_ARTIFACT] = str(weights)
        spec["pose"] = {
            **pose.model_dump(mode="json", exclude={"config_dir"}),
            "untrained": False,
            "weights": weights.name,
            "weights_sha256": sha,
        }

    def save(folder: Path, mlflow_model: Any) -> None:
        mlflow.pyfunc.save_model(
            str(folder),
            python_model=VideoClassifier(spec),
            artifacts=artifacts,
            signature=_signature(spec["classes"]),
            pip_requirements=_requirements(family),
            metadata={**meta, "family": "video", "wraps_family": family, "untrained": spec["untrained"]},
            mlflow_model=mlflow_model,
        )

    # Into the training run without reopening it: the run stays FINISHED whatever happens here.
    return log_model(client, run_id, "video-model", save)


def _requirements(family: str) -> list[str]:
    """Pinned as this environment has them (the model's code is action-recognition's: it loads where that is
    installed, e.g. the worker image or ``mlflow models serve --env-manager local`` in the project's venv)."""
    from importlib.metadata import PackageNotFoundError, version

    names = ["torch", "numpy", "pandas", "ffmpeg-python"]
    names += ["ultralytics"] if family == "keypoint" else ["torchvision", "opencv-python"]
    pinned = []
    for name in names:
        try:
            pinned.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            pinned.append(name)
    return pinned


def register_video(
    run_id: str,
    registered: Registration,
    *,
    pose: PoseConfig,
    clip: ClipConfig,
    config: RegistryConfig,
    tracking_uri: str | None = None,
) -> Registration:
    """Log (once) and register the video model of ``run_id`` beside its family model ``registered``."""
    import mlflow

    uri = log_video_model(
        run_id, registered.model_uri, pose=pose, clip=clip, config=config, tracking_uri=tracking_uri
    )
    name = video_name(registered.name)
    video = register_run(run_id, name, config, tracking_uri=tracking_uri, model_uri=uri)
    client = mlflow.MlflowClient(tracking_uri)
    wraps = f"{registered.name}/{registered.version}"
    with_retries(
        lambda: client.set_model_version_tag(name, video.version, "ar.wraps", wraps), "tag ar.wraps", config
    )
    return video


def sync_video_champion(
    model_name: str, config: RegistryConfig, *, tracking_uri: str | None = None
) -> str | None:
    """Point ``<dataset>-video@champion`` at the video version of the better family champion; its version, or
    None when no family champion has a video version (models registered before video models existed)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from action_recognition.registry import _score

    client = mlflow.MlflowClient(tracking_uri)
    name = video_name(model_name)
    dataset, _ = split_model_name(name)
    best: tuple[float, str, str] | None = None
    for family in FAMILIES:
        family_model = names_model_name(dataset, family)
        try:
            champion = with_retries(
                functools.partial(client.get_model_version_by_alias, family_model, CHAMPION),
                f"read {family_model}@{CHAMPION}",
                config,
            )
        except RegistryError as exc:
            cause = exc.__cause__
            if isinstance(cause, MlflowException) and cause.error_code in MISSING:
                continue  # no such model or no champion yet
            raise
        run = champion.run_id
        videos = with_retries(
            lambda: client.search_model_versions(f"name='{name}' and run_id='{run}'"),  # noqa: B023
            f"search {name}",
            config,
        )
        if not videos:
            continue
        score = _score(champion, config.promotion_metric)
        candidate = (
            score if score is not None else float("-inf"),
            family,
            str(min(int(v.version) for v in videos)),
        )
        if best is None or candidate[0] > best[0]:
            best = candidate
    if best is None:
        return None
    set_alias(client, name, CHAMPION, best[2], config)
    log.info("%s@%s is version %s (wraps the %s champion)", name, CHAMPION, best[2], best[1])
    return best[2]


def classify_file(model: Any, path: Path, work: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The logits (1, K) of a loaded :class:`VideoClassifier` for one local video, and the people seen
    (keypoint models; for an overlay). The normalised clip is ``work/clip.mp4``. A file that is not a readable
    video is refused as bad input."""
    from action_recognition.media import MediaError
    from action_recognition.predict import video_input
    from action_recognition.serving import bad_input, logits_of

    spec = model.spec
    try:
        x, people = video_input(
            path,
            spec["family"],
            spec["input_shape"],
            work,
            clip_config=ClipConfig.model_validate(spec["clip"]),
            pose=model.pose,
            pose_config=model.pose_config,
        )
    except MediaError as exc:
        raise bad_input(f"not a video that can be read: {str(exc)[:300]}") from None
    return logits_of(model.module, x), people


def classify_videos(model: Any, model_input: Any) -> Any:
    """The :class:`VideoClassifier`'s answers for each row of ``model_input``: a DataFrame with ``video`` (a
    path or storage URI) or ``video_bytes`` (the file)."""
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from action_recognition.serving import answers, bad_input

    if not isinstance(model_input, pd.DataFrame) or model_input.empty:
        raise bad_input(
            "give one row per video: a column `video` (a path or s3:// URI) or `video_bytes` (the file)"
        )
    logits = []
    for i, row in enumerate(model_input.to_dict("records")):
        with tempfile.TemporaryDirectory(prefix="ar-video-") as tmp:
            path = _materialise(row, i, Path(tmp), model.spec["max_mb"])
            try:
                logits.append(classify_file(model, path, Path(tmp))[0])
            except MlflowException as exc:
                raise bad_input(f"row {i}: {exc.message}") from None
    return answers(np.concatenate(logits), model.spec["classes"])


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value))


def _materialise(row: dict[str, Any], i: int, folder: Path, max_mb: int) -> Path:
    """The row's video as a local file: the bytes written, a storage URI fetched, or the path checked."""
    from action_recognition.serving import bad_input

    data, ref = row.get("video_bytes"), row.get("video")
    limit = max_mb * 1024 * 1024
    if _present(data):
        if not isinstance(data, bytes | bytearray) or len(data) == 0:
            raise bad_input(f"row {i}: video_bytes is empty")
        if len(data) > limit:
            raise bad_input(
                f"row {i}: video_bytes is {len(data) / 2**20:.1f} MB, more than this model's {max_mb} MB"
            )
        path = folder / "input.video"
        path.write_bytes(bytes(data))
        return path
    if not (_present(ref) and isinstance(ref, str) and ref.strip()):
        raise bad_input(f"row {i}: give `video` (a path or s3:// URI) or `video_bytes` (the file)")
    if ref.startswith("s3://"):
        from action_recognition.storage import open_storage

        bucket, _, key = ref[5:].partition("/")
        store = open_storage(f"s3://{bucket}")
        if not key or not store.exists(key):
            raise bad_input(f"row {i}: {ref} does not exist")
        return store.get_file(key, folder / "input.video")
    path = Path(ref)
    if not path.is_file():
        raise bad_input(f"row {i}: {ref} is not a file")
    if path.stat().st_size > limit:
        raise bad_input(f"row {i}: {ref} is more than this model's {max_mb} MB")
    return path
