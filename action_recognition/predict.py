"""``predict``: clip, pose and classify a new video with a registered model; print the top-5 labels.

The model's MLflow metadata says what it needs (family, classes) and its signature the input shape; the video
is normalised the way the pipeline normalises clips, then fed as keypoints (pose extraction, main person) or
frames.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from action_recognition.config import ClipConfig, PoseConfig
from action_recognition.errors import ActionRecognitionError
from action_recognition.media import probe
from action_recognition.services import fetch_model

log = logging.getLogger(__name__)


class PredictError(ActionRecognitionError):
    """The model or the video cannot be used for prediction."""

    retryable = False


@dataclass
class Prediction:
    """Top-k labels with probabilities; ``summary()`` is the CLI's JSON line."""

    video: str
    model: str
    top: list[tuple[str, float]]
    family: str
    overlay: str = ""
    untrained: bool = False

    def summary(self) -> dict[str, object]:
        out = asdict(self)
        out["top"] = [{"label": k, "probability": round(p, 5)} for k, p in self.top]
        return out


def _input_shape(info: Any, model_uri: str) -> list[int]:
    """The input shape of a model's tensor signature (``info``: its ``MLmodel``)."""
    spec = info.signature.inputs.to_dict()[0] if info.signature is not None else {}
    shape = spec.get("tensor-spec", {}).get("shape") or spec.get("shape")
    if not shape:
        raise PredictError(f"{model_uri} has no tensor signature; it was not logged by action-recognition")
    return [int(v) for v in shape]


def video_input(
    video: Path,
    family: str,
    shape: list[int],
    work: Path,
    *,
    clip_config: ClipConfig,
    pose: Any = None,
    pose_config: PoseConfig | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The network's input (1, ...) for ``video``, normalised the way the pipeline normalises clips, then
    keypoints of the main person resampled to the model's T (``pose``: a loaded pose model) or T frames
    sampled and cropped; and the people seen (keypoint models) for an overlay. The clip is written to
    ``work``."""
    from action_recognition.build import resample, sample_frames
    from action_recognition.clip import make_clip

    clip = work / "clip.mp4"
    # The clip step's own gates and encoding (with its fallback for files whose index defeats input seeking).
    make_clip(Path(video), clip, offset_s=0.0, window_s=probe(Path(video)).duration_s, config=clip_config)
    if family != "keypoint":
        return sample_frames(clip, shape[1], shape[2])[None], None
    from action_recognition.pose.extract import extract_clip

    assert pose is not None and pose_config is not None, "a keypoint model needs the pose model"
    arrays, pose_meta = extract_clip(pose, clip, pose_config)
    if pose_meta["main_fraction"] == 0:
        log.warning("no person found in %s: the prediction has nothing to go on", video)
    return resample(arrays["keypoints"], shape[1])[None], arrays["people"]


def predict_video(
    video: Path,
    model_uri: str,
    *,
    pose_config: PoseConfig,
    clip_config: ClipConfig,
    tracking_uri: str | None = None,
    overlay: Path | None = None,
    top_k: int = 5,
) -> Prediction:
    """Classify ``video`` with ``model_uri`` (``models:/name@champion`` or ``runs:/...``): the same answers as
    the model's pyfunc gives for the same input (:func:`action_recognition.serving.answers`)."""
    from action_recognition.serving import answers, load_module, logits_of, model_info

    if not Path(video).is_file():
        raise PredictError(f"video {video} does not exist")
    with tempfile.TemporaryDirectory(prefix="ar-model-") as tmp:
        folder = fetch_model(model_uri, tracking_uri, Path(tmp))
        info = model_info(folder)
        meta = info.metadata or {}
        classes = list(meta.get("classes") or [])
        family = str(meta.get("family") or "")
        if not classes or family not in ("keypoint", "rgb"):
            raise PredictError(f"{model_uri} lacks the classes/family metadata that action-recognition logs")
        shape = _input_shape(info, model_uri)
        model = load_module(folder, model_uri)
    untrained = bool(meta.get("untrained"))
    pose = None
    if family == "keypoint":
        from action_recognition.pose.extract import load_pose_model

        pose = load_pose_model(pose_config)
        untrained = untrained or pose.untrained
    with tempfile.TemporaryDirectory(prefix="ar-predict-") as tmp:
        x, people = video_input(
            Path(video), family, shape, Path(tmp), clip_config=clip_config, pose=pose, pose_config=pose_config
        )
        row = answers(logits_of(model, x), classes, top_k).iloc[0]
        top = list(zip(row["top_labels"], row["top_probabilities"], strict=True))
        written = ""
        if overlay is not None:
            from action_recognition.pose.render import render_overlay

            label = f"{top[0][0]} ({top[0][1]:.0%})"
            render_overlay(
                Path(tmp) / "clip.mp4",
                people if people is not None else np.zeros((1, 0, 17, 3), np.float32),
                overlay,
                label=label,
            )
            written = str(overlay)
    return Prediction(str(video), model_uri, top, family, written, untrained)
