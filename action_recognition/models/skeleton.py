"""The normalisation every keypoint model uses, the flip and the bone streams (layouts:
:mod:`action_recognition.skeletons`)."""

from __future__ import annotations

import torch
from torch import nn


def normalise(x: torch.Tensor, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre and scale each sequence by its visible joints.

    Args:
        x: (B, T, J, 3) with x, y in [0, 1] and score; score 0 marks a missing joint.

    Returns:
        xy: (B, T, J, 2) centred on the mean visible joint and divided by the visible spread; 0 where missing.
        mask: (B, T, J) float, 1 where the joint is visible.
    """
    mask = (x[..., 2] > 0).to(x.dtype)
    xy = x[..., :2]
    weight = mask.unsqueeze(-1)
    count = weight.sum(dim=(1, 2), keepdim=True).clamp_min(1.0)
    centre = (xy * weight).sum(dim=(1, 2), keepdim=True) / count
    spread = (((xy - centre) ** 2) * weight).sum(dim=(1, 2, 3), keepdim=True) / count.sum(-1, keepdim=True)
    scale = spread.clamp_min(eps).sqrt()
    return (xy - centre) / scale * weight, mask


def flip_keypoints(x: torch.Tensor, flip_index: list[int]) -> torch.Tensor:
    """A left-right mirror of (B, T, J, 3): left and right joints swapped, x -> 1 - x where a joint is
    seen."""
    flipped = x[:, :, flip_index].clone()
    flipped[..., 0] = torch.where(flipped[..., 2] > 0, 1.0 - flipped[..., 0], flipped[..., 0])
    return flipped


class Bones(nn.Module):
    """Joints to bones: each joint's offset from its parent (x, y; 0 at the root), seen where both ends
    are."""

    parents: torch.Tensor

    def __init__(self, parents: list[int]) -> None:
        super().__init__()
        self.register_buffer("parents", torch.tensor(parents, dtype=torch.long), persistent=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parent = x[:, :, self.parents]
        xy = x[..., :2] - parent[..., :2] + 0.5  # offsets centred in the unit square, like joints
        score = torch.minimum(x[..., 2], parent[..., 2])
        return torch.cat([xy * (score > 0).unsqueeze(-1), score.unsqueeze(-1)], -1)


class FlipAverage(nn.Module):
    """Test-time flip: the mean of a model's logits on the clip and on its mirror (layouts with left/right
    pairs)."""

    flip_index: torch.Tensor

    def __init__(self, model: nn.Module, flip_index: list[int]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("flip_index", torch.tensor(flip_index, dtype=torch.long), persistent=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.model(x) + self.model(flip_keypoints(x, self.flip_index.tolist()))) / 2
