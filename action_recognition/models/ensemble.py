"""Models whose logits are averaged: the refit recipe's seeds, or the streams of a multi-stream skeleton
model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class LogitAverage(nn.Module):
    """The mean of its members' logits; takes what each member takes."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)
