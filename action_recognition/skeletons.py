"""Skeleton layouts: each known joint layout's graph edges, left-right pairs and centre joints, the
graph's adjacency and the bone tree. A data contract (pose writes COCO-17, datasets name their layout),
numpy only: drawing or validating a skeleton imports no model code."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Layout:
    """A known joint layout. ``edges`` and ``flip_pairs`` use 0-based joint indices."""

    name: str
    joints: int
    edges: tuple[tuple[int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]
    centre: tuple[int, ...]

    def flip_index(self) -> list[int]:
        """Joint permutation that swaps left and right."""
        order = list(range(self.joints))
        for a, b in self.flip_pairs:
            order[a], order[b] = b, a
        return order


COCO17 = Layout(
    "coco17",
    17,
    edges=(
        (0, 1),
        (0, 2),
        (1, 3),
        (2, 4),
        (0, 5),
        (0, 6),
        (5, 6),
        (5, 7),
        (7, 9),
        (6, 8),
        (8, 10),
        (5, 11),
        (6, 12),
        (11, 12),
        (11, 13),
        (13, 15),
        (12, 14),
        (14, 16),
    ),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    centre=(11, 12),
)
_NTU_EDGES_1 = (
    (1, 2),
    (2, 21),
    (3, 21),
    (4, 3),
    (5, 21),
    (6, 5),
    (7, 6),
    (8, 7),
    (9, 21),
    (10, 9),
    (11, 10),
    (12, 11),
    (13, 1),
    (14, 13),
    (15, 14),
    (16, 15),
    (17, 1),
    (18, 17),
    (19, 18),
    (20, 19),
    (22, 23),
    (23, 8),
    (24, 25),
    (25, 12),
)
NTU25 = Layout(
    "ntu25",
    25,
    edges=tuple((a - 1, b - 1) for a, b in _NTU_EDGES_1),
    flip_pairs=tuple(
        (a - 1, b - 1)
        for a, b in (
            (5, 9),
            (6, 10),
            (7, 11),
            (8, 12),
            (13, 17),
            (14, 18),
            (15, 19),
            (16, 20),
            (22, 24),
            (23, 25),
        )
    ),
    centre=(0,),
)
# JHMDB order: neck, belly, face, r/l shoulder, r/l hip, r/l elbow, r/l knee, r/l wrist, r/l ankle
JOINTS15 = Layout(
    "joints15",
    15,
    edges=(
        (0, 1),
        (0, 2),
        (0, 3),
        (0, 4),
        (1, 5),
        (1, 6),
        (3, 7),
        (4, 8),
        (5, 9),
        (6, 10),
        (7, 11),
        (8, 12),
        (9, 13),
        (10, 14),
    ),
    flip_pairs=((3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14)),
    centre=(1,),
)
LAYOUTS = {layout.name: layout for layout in (COCO17, NTU25, JOINTS15)}


def layout_for(name: str | None, joints: int) -> Layout | None:
    """The named layout when it matches ``joints``; None (a learned graph, no flip) otherwise."""
    layout = LAYOUTS.get(name or "")
    if layout is not None and layout.joints == joints:
        return layout
    return None


def adjacency(layout: Layout | None, joints: int) -> np.ndarray:
    """Symmetrically normalised adjacency with self-loops, (J, J); identity when the layout is unknown."""
    a = np.eye(joints, dtype=np.float32)
    if layout is not None:
        for i, j in layout.edges:
            a[i, j] = a[j, i] = 1.0
    d = a.sum(1) ** -0.5
    return (d[:, None] * a * d[None, :]).astype(np.float32)


def bone_parents(layout: Layout | None, mean_xy: np.ndarray) -> list[int]:
    """Each joint's parent in a tree over the skeleton; the root is its own parent.

    A known layout: its edges, walked breadth-first from its centre joint. An unknown one: the
    nearest-neighbour tree (minimum spanning tree of the mean distances between joints, ``mean_xy`` (J, 2)
    from the training clips), rooted at the joint nearest the skeleton's centre, so bones link joints that sit
    next to each other.
    """
    joints = len(mean_xy)
    parents = [-1] * joints
    if layout is not None:
        links: dict[int, list[int]] = {j: [] for j in range(joints)}
        for a, b in layout.edges:
            links[a].append(b)
            links[b].append(a)
        root = layout.centre[0]
        parents[root] = root
        queue = deque([root])
        while queue:
            j = queue.popleft()
            for k in links[j]:
                if parents[k] < 0:
                    parents[k] = j
                    queue.append(k)
        if min(parents) >= 0:
            return parents
    dist = np.linalg.norm(mean_xy[:, None] - mean_xy[None], axis=-1)
    root = int(np.argmin(np.linalg.norm(mean_xy - mean_xy.mean(0), axis=-1)))
    parents = [-1] * joints
    parents[root] = root
    best = dist[root].copy()
    link = np.full(joints, root)
    for _ in range(joints - 1):  # Prim's algorithm
        j = int(np.argmin(np.where(np.asarray(parents) < 0, best, np.inf)))
        parents[j] = int(link[j])
        closer = dist[j] < best
        best, link = np.where(closer, dist[j], best), np.where(closer, j, link)
    return parents
