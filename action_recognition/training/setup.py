"""Before the first epoch: the device, the seeds, and the model with its weights (an RGB backbone from storage
or torchvision, never silently random)."""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np

from action_recognition.config import TrainConfig
from action_recognition.datasets import DatasetError, LabeledArrays
from action_recognition.errors import TrainError

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def pick_device(choice: str) -> Any:
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise TrainError("train.device=cuda but no CUDA device is available")
    return torch.device("cuda" if choice in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def bone_tree(data: LabeledArrays) -> list[int]:
    """Each joint's parent: from the layout when known, else the nearest-neighbour tree of the training clips'
    mean pose (train split only: the test clips never shape the model)."""
    from action_recognition.skeletons import bone_parents, layout_for

    train = data.data[data.split == "train"]
    seen = train[..., 2:3] > 0
    mean_xy = (train[..., :2] * seen).sum((0, 1)) / np.maximum(seen.sum((0, 1)), 1)
    return bone_parents(layout_for(data.layout, data.data.shape[2]), mean_xy)


def build_model(arch: str, data: LabeledArrays, config: TrainConfig) -> tuple[Any, bool]:
    """The model for ``arch`` and whether its weights are untrained (RGB without downloadable weights)."""
    from action_recognition.models import ARCHS

    spec = ARCHS[arch]
    k = data.num_classes
    if spec.family == "keypoint":
        if data.kind != "keypoints":
            raise DatasetError(f"{arch} is a keypoint model but the dataset holds {data.kind}")
        extra = {"parents": bone_tree(data)} if spec.bones else {}
        return spec.build(
            num_classes=k, joints=data.data.shape[2], frames=data.data.shape[1], layout=data.layout, **extra
        ), False
    if data.kind != "frames":
        raise DatasetError(f"{arch} is an RGB model but the dataset holds {data.kind}")
    if config.pretrained and config.backbone_weights:
        from action_recognition.weights import WeightsError, WeightsMismatch

        model = spec.build(num_classes=k, frames=data.data.shape[1], pretrained=False)
        try:
            return with_backbone(model, config.backbone_weights), False
        except WeightsMismatch:
            raise  # the wrong file is never replaced by random weights
        except WeightsError as exc:
            if not config.allow_untrained:
                raise TrainError(
                    f"cannot read the backbone weights of {arch} ({exc}); pull them with "
                    "`action-recognition weights pull`, or pass --allow-untrained (tagged untrained)"
                ) from exc
            log.warning("backbone weights of %s unavailable (%s): training from random weights", arch, exc)
            return model, True
    if config.pretrained:
        try:
            return spec.build(num_classes=k, frames=data.data.shape[1], pretrained=True), False
        except OSError as exc:  # URLError, HTTP errors and offline DNS failures are all OSErrors
            if not config.allow_untrained:
                raise TrainError(
                    f"cannot download the pretrained weights of {arch} ({exc}); connect to the network, put "
                    "the "
                    "weights in TORCH_HOME, or pass --allow-untrained to train from random weights (tagged "
                    "untrained)"
                ) from exc
            log.warning("pretrained weights of %s unavailable (%s): training from random weights", arch, exc)
    elif not config.allow_untrained:
        raise TrainError(
            f"{arch} with pretrained=false trains from random weights: pass --allow-untrained to do so"
        )
    return spec.build(num_classes=k, frames=data.data.shape[1], pretrained=False), True


def with_backbone(model: Any, value: str) -> Any:
    """Load a pretrained backbone state dict (from storage through the weights cache, or a path) into an RGB
    model: every backbone tensor must match; the classifier head (``fc``) stays new."""
    import torch

    from action_recognition.weights import WeightsError, WeightsMismatch, resolve

    path, _ = resolve(value)
    if not path.is_file():
        raise WeightsError(f"backbone weights {value}: no such file")
    state = torch.load(path, map_location="cpu", weights_only=True)  # not ours: tensors only, no pickled code
    if not isinstance(state, dict):
        raise WeightsMismatch(f"backbone weights {value}: not a state dict")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        missing, unexpected = model.net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of another shape
        raise WeightsMismatch(f"backbone weights {value} do not fit {type(model).__name__}: {exc}") from exc
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise WeightsMismatch(
            f"backbone weights {value} do not fit {type(model).__name__}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    log.info("RGB backbone loaded from %s", value)
    return model
