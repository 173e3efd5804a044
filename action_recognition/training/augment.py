"""Training-time augmentation of keypoint and frame batches, and the centre crop evaluation uses instead."""

from __future__ import annotations

import math
from typing import Any


def augment_keypoints(x: Any, layout: str | None, gen: Any) -> Any:
    """Skeleton-respecting augmentation of a batch (B, T, J, 3): left-right flip with joint swap (known
    layouts only), scale, small rotation about the sequence centre, and a temporal crop resampled back to T.
    The random numbers come from ``gen`` on the CPU whatever the batch's device; nothing here waits for the
    device."""
    import torch

    from action_recognition.models.skeleton import flip_keypoints
    from action_recognition.skeletons import layout_for

    def rand(n: int) -> Any:
        return torch.rand(n, generator=gen).to(x.device, non_blocking=True)

    b, t, j, _ = x.shape
    x = x.clone()
    mask = (x[..., 2] > 0).unsqueeze(-1).to(x.dtype)
    known = layout_for(layout, j)
    if known is not None:
        flip = torch.rand(b, generator=gen) < 0.5
        if flip.any():  # a CPU tensor: no wait
            x = torch.where(flip.to(x.device)[:, None, None, None], flip_keypoints(x, known.flip_index()), x)
            mask = (x[..., 2] > 0).unsqueeze(-1).to(x.dtype)
    centre = (x[..., :2] * mask).sum((1, 2), keepdim=True) / mask.sum((1, 2), keepdim=True).clamp_min(1)
    angle = (rand(b) - 0.5) * (2 * math.pi / 18)  # +-10 degrees
    scale = 0.9 + 0.2 * rand(b)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, 2, 2)
    xy = torch.einsum("btjc,bdc->btjd", x[..., :2] - centre, rot) + centre
    x[..., :2] = torch.where(mask > 0, xy.clamp(0, 1), x[..., :2])
    # Temporal crop of 80-100% of the clip, resampled to T frames (nearest: keeps missing frames missing).
    keep = (0.8 + 0.2 * rand(b)) * (t - 1)
    start = rand(b) * ((t - 1) - keep)
    pos = start[:, None] + keep[:, None] * torch.linspace(0, 1, t, device=x.device)[None]
    index = pos.round().long().clamp(0, t - 1)
    return torch.gather(x, 1, index[:, :, None, None].expand(b, t, j, 3))


def frame_draws(gen: Any, batch: int, h: int, w: int, crop: int) -> tuple[int, int, Any]:
    """The random numbers of a frames batch, in their order: the crop's top and left, then who is flipped
    (CPU)."""
    import torch

    top = int(torch.randint(0, h - crop + 1, (1,), generator=gen))
    left = int(torch.randint(0, w - crop + 1, (1,), generator=gen))
    return top, left, torch.rand(batch, generator=gen) < 0.5


def augment_frames(x: Any, gen: Any, crop: int) -> Any:
    """Random crop to ``crop`` and horizontal flip of a uint8 batch (B, T, H, W, 3) (for a GPU the training
    loop draws the same numbers and flips on the device)."""

    top, left, flip = frame_draws(gen, x.shape[0], x.shape[2], x.shape[3], crop)
    x = x[:, :, top : top + crop, left : left + crop]
    if flip.any():
        x = x.clone()
        x[flip] = x[flip].flip(3)
    return x


def centre_crop(x: Any, crop: int) -> Any:
    h, w = x.shape[2], x.shape[3]
    top, left = (h - crop) // 2, (w - crop) // 2
    return x[:, :, top : top + crop, left : left + crop]
