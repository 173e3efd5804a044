"""Model cards say only true things for each family: rendered for every architecture on a dataset of its kind,
each statement checked against the dataset and against the model itself (it accepts the input size the card
names)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from action_recognition.config import TrainConfig
from action_recognition.datasets import LabeledArrays
from action_recognition.models import ARCHS
from action_recognition.train import model_card, rgb_crop


def _data(kind: str, layout: str | None = None) -> LabeledArrays:
    n = 6
    shape = (n, 8, 128, 160, 3) if kind == "frames" else (n, 40, 17 if layout else 15, 3)
    data = np.zeros(shape, np.uint8 if kind == "frames" else np.float32)
    return LabeledArrays(
        data=data,
        labels=np.arange(n) % 3,
        split=np.array(["train", "val", "test"] * 2),
        classes=["a", "b", "c"],
        clip_ids=np.array([f"c{i}" for i in range(n)]),
        kind=kind,
        layout=layout,
        sha256="0" * 64,
    )


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("untrained", [False, True])
def test_each_architecture_gets_a_card_true_to_its_family(arch: str, untrained: bool) -> None:
    spec = ARCHS[arch]
    layouts = [None] if spec.family == "rgb" else [None, "coco17"]
    for layout in layouts:
        data = _data("frames" if spec.family == "rgb" else "keypoints", layout)
        # What the card states (the licence note and the config dump that follow are the same for every card).
        card = model_card("run", arch, data, None, {"test_top1": 0.5}, untrained, TrainConfig()).split(
            "## Licence"
        )[0]
        if spec.family == "rgb":
            side = rgb_crop(data)
            assert side == 112
            assert "graph" not in card and "joint" not in card.lower(), card
            assert (
                "8 RGB frames" in card
                and "128 x 160" in card
                and f"centre-cropped to {side} x {side}" in card
            )
            model = spec.build(num_classes=3, frames=8, pretrained=False).eval()
            with torch.inference_mode():
                out = model(torch.zeros((1, 8, side, side, 3), dtype=torch.uint8))
            assert out.shape == (1, 3), "the model takes the size the card names"
            assert ("random weights" in card) == untrained and "pose" not in card
        else:
            assert re.search(rf"40 frames x {data.data.shape[2]} joints x 3", card), card
            assert "RGB" not in card.split("## Limits")[0]
            if layout:
                assert f"joint layout {layout}" in card
            elif arch == "stgcn":
                assert "a graph learned over the joints" in card
            else:
                assert "graph" not in card.split("## Data")[1].split("## Metrics")[0].replace(
                    "skeleton graph", ""
                )
            assert ("untrained pose model" in card) == untrained and "backbone" not in card
