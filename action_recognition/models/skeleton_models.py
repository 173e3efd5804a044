"""Keypoint-sequence classifiers. Each takes ``(B, T, J, 3)`` (x, y in [0, 1], score) and returns ``(B, K)``
logits.

- :class:`KeypointLSTM`: the original study's LSTM, done right: normalised input, bidirectional, and missing
  frames masked out of the pooling.
- :class:`DDNet`: Yang et al., "Make Skeleton-based Action Recognition Model Smaller, Faster and Better"
  (2019): joint-collection distances (location-viewpoint invariant) plus slow and fast motion, 1D
  convolutions. Small and strong on small datasets; works for any J.
- :class:`TwoStreamDDNet`: the joint and bone streams of 2s-AGCN / ST-GCN++ practice, each a DD-Net (which
  adds each stream's motion at two scales), trained as one model whose logits are averaged. Bones come from
  the layout when it is known and from the nearest-neighbour tree of the training clips' mean pose when it is
  not.
- :class:`STGCN`: Yan et al. (2018) spatial-temporal graph convolutions, with the known skeleton graph plus a
  learned residual adjacency, or a learned graph alone when the layout is unknown.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from action_recognition.models.skeleton import Bones, normalise
from action_recognition.skeletons import adjacency, layout_for


class KeypointLSTM(nn.Module):
    """Bidirectional LSTM over per-frame normalised joints; masked mean + max pooling over visible frames."""

    def __init__(
        self,
        num_classes: int,
        joints: int,
        frames: int,
        layout: str | None = None,
        hidden: int = 128,
        layers: int = 2,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(joints * 3, hidden), nn.LayerNorm(hidden), nn.GELU())
        self.lstm = nn.LSTM(
            hidden,
            hidden,
            num_layers=layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xy, mask = normalise(x)
        b, t, j, _ = xy.shape
        feats = torch.cat([xy, mask.unsqueeze(-1)], dim=-1).reshape(b, t, j * 3)
        out, _ = self.lstm(self.embed(feats))
        frame_mask = (mask.sum(-1) > 0).to(out.dtype).unsqueeze(-1)  # (B, T, 1)
        count = frame_mask.sum(1).clamp_min(1.0)
        mean = (out * frame_mask).sum(1) / count
        peak = out.masked_fill(frame_mask == 0, -1e4).amax(1)
        return self.head(torch.cat([mean, peak], dim=-1))


class _Conv1d(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__(
            nn.Conv1d(cin, cout, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm1d(cout),
            nn.LeakyReLU(0.2),
        )


class _Branch(nn.Sequential):
    """DD-Net's embedding: 1x1, 3, 1x1 convolutions over time."""

    def __init__(self, cin: int, filters: int) -> None:
        super().__init__(
            _Conv1d(cin, 2 * filters, 1),
            nn.Dropout(0.1),
            _Conv1d(2 * filters, filters, 3),
            nn.Dropout(0.1),
            _Conv1d(filters, filters, 1),
            nn.Dropout(0.1),
        )


class DDNet(nn.Module):
    """DD-Net with JCD features and two-scale motion; ``filters`` sets the width (16 in the paper's small
    model)."""

    iu_rows: torch.Tensor
    iu_cols: torch.Tensor

    def __init__(
        self,
        num_classes: int,
        joints: int,
        frames: int,
        layout: str | None = None,
        filters: int = 32,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.joints = joints
        rows, cols = torch.triu_indices(joints, joints, offset=1)
        self.register_buffer("iu_rows", rows, persistent=False)
        self.register_buffer("iu_cols", cols, persistent=False)
        jcd_dim = rows.numel()
        self.jcd_norm = nn.BatchNorm1d(jcd_dim)
        self.jcd = _Branch(jcd_dim, filters)
        self.slow = _Branch(joints * 2, filters)
        self.fast = _Branch(joints * 2, filters)
        f = filters
        self.body = nn.Sequential(
            _Conv1d(3 * f, 2 * f, 3),
            _Conv1d(2 * f, 2 * f, 3),
            nn.MaxPool1d(2, ceil_mode=True),
            nn.Dropout(0.1),
            _Conv1d(2 * f, 4 * f, 3),
            _Conv1d(4 * f, 4 * f, 3),
            nn.MaxPool1d(2, ceil_mode=True),
            nn.Dropout(0.1),
            _Conv1d(4 * f, 8 * f, 3),
            _Conv1d(8 * f, 8 * f, 3),
            nn.Dropout(0.1),
        )
        self.head = nn.Sequential(
            nn.Linear(8 * f, 128),
            nn.BatchNorm1d(128),
            nn.LeakyReLU(0.2),
            nn.Dropout(dropout),
            nn.Linear(128, 128),
            nn.BatchNorm1d(128),
            nn.LeakyReLU(0.2),
            nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xy, mask = normalise(x)  # (B, T, J, 2)
        b, t, j, _ = xy.shape
        diff = xy.unsqueeze(3) - xy.unsqueeze(2)  # (B, T, J, J, 2)
        dist = (diff.pow(2).sum(-1) + 1e-8).sqrt()
        pair_mask = mask.unsqueeze(3) * mask.unsqueeze(2)
        jcd = (dist * pair_mask)[:, :, self.iu_rows, self.iu_cols]  # (B, T, J(J-1)/2)
        jcd = self.jcd_norm(jcd.transpose(1, 2))  # (B, D, T)
        flat = xy.reshape(b, t, j * 2)
        slow = F.pad(flat[:, 1:] - flat[:, :-1], (0, 0, 0, 1)).transpose(1, 2)  # (B, 2J, T)
        fast = flat[:, ::2]
        fast = F.pad(fast[:, 1:] - fast[:, :-1], (0, 0, 0, 1)).transpose(1, 2)  # (B, 2J, ceil(T/2))
        jcd_e = F.max_pool1d(self.jcd(jcd), 2, ceil_mode=True)
        slow_e = F.max_pool1d(self.slow(slow), 2, ceil_mode=True)
        fast_e = self.fast(fast)
        steps = min(jcd_e.shape[-1], slow_e.shape[-1], fast_e.shape[-1])
        h = torch.cat([jcd_e[..., :steps], slow_e[..., :steps], fast_e[..., :steps]], dim=1)
        h = self.body(h).amax(-1)
        return self.head(h)


class TwoStreamDDNet(nn.Module):
    """Joint stream + bone stream (each with its own two-scale motion), logits averaged. ``parents``: each
    joint's parent (:func:`~action_recognition.models.skeleton.bone_parents`); default the nearest-neighbour
    chain."""

    def __init__(
        self,
        num_classes: int,
        joints: int,
        frames: int,
        layout: str | None = None,
        parents: list[int] | None = None,
        filters: int = 32,
    ) -> None:
        super().__init__()
        self.joint = DDNet(num_classes, joints, frames, layout, filters=filters)
        self.bone = nn.Sequential(
            Bones(parents or [max(0, j - 1) for j in range(joints)]),
            DDNet(num_classes, joints, frames, layout, filters=filters),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.joint(x) + self.bone(x)) / 2


class _GraphBlock(nn.Module):
    """Spatial graph convolution (fixed + learned adjacency), then a temporal convolution, with a residual."""

    a: torch.Tensor

    def __init__(
        self,
        cin: int,
        cout: int,
        a: torch.Tensor,
        learn_graph: bool,
        stride: int = 1,
        kernel_t: int = 9,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.register_buffer("a", a, persistent=True)
        joints = a.shape[0]
        self.b = nn.Parameter(
            torch.zeros(joints, joints) if not learn_graph else torch.full((joints, joints), 1e-2)
        )
        self.spatial = nn.Conv2d(cin, cout, 1)
        self.bn1 = nn.BatchNorm2d(cout)
        self.temporal = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(cout, cout, (kernel_t, 1), (stride, 1), (kernel_t // 2, 0)),
            nn.BatchNorm2d(cout),
            nn.Dropout(dropout),
        )
        if cin == cout and stride == 1:
            self.residual: nn.Module = nn.Identity()
        else:
            self.residual = nn.Sequential(nn.Conv2d(cin, cout, 1, (stride, 1)), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, T, V)
        graph = self.a + self.b
        h = torch.einsum("bctv,vw->bctw", self.spatial(x), graph)
        h = self.temporal(self.bn1(h))
        return F.relu(h + self.residual(x))


class STGCN(nn.Module):
    """A compact ST-GCN: input features are normalised x, y, score and the x, y motion (5 channels)."""

    def __init__(
        self,
        num_classes: int,
        joints: int,
        frames: int,
        layout: str | None = None,
        channels: tuple[int, ...] = (48, 48, 96, 96, 192),
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        known = layout_for(layout, joints)
        a = torch.from_numpy(adjacency(known, joints))
        self.data_bn = nn.BatchNorm1d(5 * joints)
        blocks = []
        cin = 5
        for i, cout in enumerate(channels):
            stride = 2 if i > 0 and cout != channels[i - 1] else 1
            blocks.append(_GraphBlock(cin, cout, a, learn_graph=known is None, stride=stride))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(cin, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xy, mask = normalise(x)
        motion = F.pad(xy[:, 1:] - xy[:, :-1], (0, 0, 0, 0, 0, 1))
        feats = torch.cat([xy, mask.unsqueeze(-1), motion], dim=-1)  # (B, T, V, 5)
        b, t, v, c = feats.shape
        feats = self.data_bn(feats.permute(0, 2, 3, 1).reshape(b, v * c, t)).reshape(b, v, c, t)
        h = self.blocks(feats.permute(0, 2, 3, 1))  # (B, C, T, V)
        return self.head(h.mean(dim=(2, 3)))
