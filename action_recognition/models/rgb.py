"""RGB models. Each takes ``(B, T, H, W, 3)`` uint8 frames and returns ``(B, K)`` logits.

Pretrained weights (ImageNet for the ResNet18s, Kinetics-400 for R(2+1)D) are downloaded by torchvision when
the network allows; ``pretrained=False`` builds random weights, which the trainer allows only with an explicit
flag and tags the run ``untrained``.
"""

from __future__ import annotations

import torch
from torch import nn

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
_K400_MEAN = (0.43216, 0.394666, 0.37645)
_K400_STD = (0.22803, 0.22145, 0.216989)


def _to_float(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> normalised float (..., 3, H, W)."""
    x = x.float().div(255.0)
    m = torch.tensor(mean, device=x.device, dtype=x.dtype)
    s = torch.tensor(std, device=x.device, dtype=x.dtype)
    return ((x - m) / s).movedim(-1, -3)


def _resnet18(num_classes: int, pretrained: bool) -> nn.Module:
    from torchvision.models import ResNet18_Weights, resnet18

    net = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1 if pretrained else None)
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    return net


class FrameResNet18(nn.Module):
    """The original study's single-frame classifier: ResNet18 on the middle frame of the clip.

    Training feeds one random frame per clip (``T == 1``); evaluation feeds all T and the middle one is used.
    """

    def __init__(self, num_classes: int, frames: int, pretrained: bool = True, **_: object) -> None:
        super().__init__()
        self.net = _resnet18(num_classes, pretrained)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        middle = x[:, x.shape[1] // 2]
        return self.net(_to_float(middle, _MEAN, _STD))


class TSNResNet18(nn.Module):
    """Temporal Segment Network: a ResNet18 on each of T segment frames, logits averaged (consensus)."""

    def __init__(
        self, num_classes: int, frames: int, pretrained: bool = True, dropout: float = 0.5, **_: object
    ) -> None:
        super().__init__()
        self.net = _resnet18(num_classes, pretrained)
        in_features = int(self.net.fc.in_features)  # type: ignore[union-attr,arg-type]
        self.net.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        logits = self.net(_to_float(x.flatten(0, 1), _MEAN, _STD))
        return logits.reshape(b, t, -1).mean(1)


class R2Plus1D18(nn.Module):
    """torchvision's R(2+1)D-18, fine-tuned from its Kinetics-400 weights."""

    def __init__(self, num_classes: int, frames: int, pretrained: bool = True, **_: object) -> None:
        super().__init__()
        from torchvision.models.video import R2Plus1D_18_Weights, r2plus1d_18

        self.net = r2plus1d_18(weights=R2Plus1D_18_Weights.KINETICS400_V1 if pretrained else None)
        self.net.fc = nn.Linear(self.net.fc.in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        clip = _to_float(x, _K400_MEAN, _K400_STD)  # (B, T, 3, H, W)
        return self.net(clip.transpose(1, 2))  # (B, 3, T, H, W)
