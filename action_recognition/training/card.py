"""The model card logged with every training: data, availability, metrics, limits, licence."""

from __future__ import annotations

import json
from typing import Any

from action_recognition.config import TrainConfig
from action_recognition.datasets import LabeledArrays
from action_recognition.training.inference import rgb_crop

LICENCE_NOTE = (
    "Kinetics annotations: DeepMind, CC BY 4.0. The videos belong to their YouTube uploaders; a model "
    "trained on them "
    "is for research. Pretrained backbones carry their own licences (torchvision: BSD-3-Clause)."
)


def model_card(
    run_name: str,
    arch: str,
    data: LabeledArrays,
    manifest: dict[str, Any] | None,
    scalars: dict[str, float],
    untrained: bool,
    config: TrainConfig,
    *,
    recipe: str = "",
) -> str:
    """A Markdown model card: data, availability, training recipe (``recipe``, in words), metrics, limits,
    licence."""
    from action_recognition.models import ARCHS

    splits = {s: int((data.split == s).sum()) for s in ("train", "val", "test")}
    chance = 1.0 / data.num_classes
    availability = (manifest or {}).get("availability") or {}
    family = ARCHS[arch].family
    lines = [
        f"# {run_name}",
        "",
        f"**Architecture**: `{arch}`: {ARCHS[arch].summary}.",
        "",
        "## Data",
        f"- {len(data.labels)} clips of {data.num_classes} classes; {input_statement(arch, data)}",
        f"- splits: {splits}; dataset sha256 `{data.sha256[:16]}`.",
    ]
    if manifest:
        lines.append(
            f"- manifest: `{manifest.get('uri', '')}` (sha256 `{str(manifest.get('sha256', ''))[:16]}`)."
        )
    if availability:
        lines.append(f"- availability of the planned clips: {json.dumps(availability)}.")
    if recipe:
        lines += ["", "## Training", recipe]
    lines += ["", "## Metrics (test split)", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in sorted(scalars.items())]
    lines += [
        f"| chance (1/K) | {chance:.4f} |",
        "",
        "Baselines of the original study (15 dance classes): single-frame ResNet18 0.069 val accuracy, "
        "keypoint LSTM "
        "0.205 test accuracy.",
        "",
        "## Limits",
        "- Trained on YouTube clips that were still available; the classes' availability differs (see "
        "above).",
        "- Keypoint models see one person (the main track); interactions between people are not modelled."
        if family == "keypoint"
        else "- RGB models see the whole frame: scene and background can stand in for the action "
        "(dataset bias).",
    ]
    if untrained:
        what = (
            "keypoints from an untrained pose model (tag ar.untrained_pose)"
            if family == "keypoint"
            else "a backbone with random weights, no pretrained ones (tag ar.untrained)"
        )
        lines.append(f"- **UNTRAINED WEIGHTS**: {what}; the metrics are not representative.")
    if data.classes and all(c.startswith("synthetic-") for c in data.classes):
        lines.append("- **SYNTHETIC DATA**: generated skeleton motions, for tests and benchmarks only.")
    lines += [
        "",
        "## Licence",
        LICENCE_NOTE,
        "",
        f"Config: `{json.dumps(config.model_dump(mode='json'))}`",
        "",
    ]
    return "\n".join(lines)


def input_statement(arch: str, data: LabeledArrays) -> str:
    """What the model takes, in words true for its family."""
    if data.kind == "frames":
        t, h, w = data.data.shape[1:4]
        side = rgb_crop(data)
        return (
            f"input {t} RGB frames a clip, stored at {h} x {w} and centre-cropped to {side} x {side} "
            f"(random {side} x {side} crops and flips in training)."
        )
    t, joints, channels = data.data.shape[1:4]
    if data.layout:
        layout = f"joint layout {data.layout}"
    elif arch == "stgcn":
        layout = "joint layout not named: a graph learned over the joints"
    else:
        layout = f"joint layout not named ({arch} needs no skeleton graph)"
    return f"input {t} frames x {joints} joints x {channels} (x, y, score), {layout}."
