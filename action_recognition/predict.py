"""``predict``: clip, pose and classify a new video with a registered model; print the top-5 labels.

The model's MLflow metadata says what it needs (family, classes) and its signature the input shape; the video is
normalised the way the pipeline normalises clips, then fed as keypoints (pose extraction, main person) or frames.
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
from action_recognition.media import encode_clip, probe

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


def _input_shape(info: Any) -> list[int]:
    spec = info.signature.inputs.to_dict()[0] if info.signature is not None else {}
    shape = spec.get("tensor-spec", {}).get("shape") or spec.get("shape")
    if not shape:
        raise PredictError(f"{info.model_uri} has no tensor signature; it was not logged by action-recognition")
    return [int(v) for v in shape]


def predict_video(
    video: Path, model_uri: str, *, pose_config: PoseConfig, clip_config: ClipConfig, tracking_uri: str | None = None,
    overlay: Path | None = None, top_k: int = 5,
) -> Prediction:  # fmt: skip
    """Classify ``video`` with ``model_uri`` (``models:/name@champion`` or ``runs:/...``)."""
    import mlflow
    import torch

    from action_recognition.build import resample, sample_frames

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    if not Path(video).is_file():
        raise PredictError(f"video {video} does not exist")
    info = mlflow.models.get_model_info(model_uri)
    meta = info.metadata or {}
    classes = list(meta.get("classes") or [])
    family = str(meta.get("family") or "")
    if not classes or family not in ("keypoint", "rgb"):
        raise PredictError(f"{model_uri} lacks the classes/family metadata that action-recognition logs")
    shape = _input_shape(info)
    model = mlflow.pytorch.load_model(model_uri, map_location="cpu").eval()
    with tempfile.TemporaryDirectory(prefix="ar-predict-") as tmp:
        clip = Path(tmp) / "clip.mp4"
        duration = probe(Path(video)).duration_s
        encode_clip(Path(video), clip, start_s=0.0, duration_s=duration, short_side=clip_config.short_side,
                    fps=clip_config.fps, crf=clip_config.crf, preset=clip_config.preset,
                    threads=clip_config.threads, timeout_s=clip_config.timeout_s)  # fmt: skip
        people = None
        untrained = bool(meta.get("untrained"))
        if family == "keypoint":
            from action_recognition.pose.extract import extract_clip, load_pose_model

            pose = load_pose_model(pose_config)
            arrays, pose_meta = extract_clip(pose, clip, pose_config)
            untrained = untrained or pose.untrained
            people = arrays["people"]
            if pose_meta["main_fraction"] == 0:
                log.warning("no person found in %s: the prediction has nothing to go on", video)
            x = resample(arrays["keypoints"], shape[1])[None]
        else:
            x = sample_frames(clip, shape[1], shape[2])[None]
        with torch.inference_mode():
            logits = model(torch.from_numpy(np.ascontiguousarray(x)))
        probs = torch.softmax(logits.float(), dim=1)[0].numpy()
        order = np.argsort(-probs)[: min(top_k, len(classes))]
        top = [(classes[i], float(probs[i])) for i in order]
        written = ""
        if overlay is not None:
            from action_recognition.pose.render import render_overlay

            label = f"{top[0][0]} ({top[0][1]:.0%})"
            render_overlay(clip, people if people is not None else np.zeros((1, 0, 17, 3), np.float32), overlay,
                           label=label)  # fmt: skip
            written = str(overlay)
    return Prediction(str(video), model_uri, top, family, written, untrained)
