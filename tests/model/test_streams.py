"""Multi-stream skeletons: the bone tree from a layout or from the clips' mean pose, the bone stream, the
two-stream model, and the test-time flip."""

from __future__ import annotations

import numpy as np
import torch

from action_recognition.datasets import LabeledArrays, synthetic_skeletons
from action_recognition.models import ARCHS
from action_recognition.models.skeleton import Bones, FlipAverage, flip_keypoints
from action_recognition.skeletons import COCO17, bone_parents
from action_recognition.training.setup import bone_tree


def _reaches_root(parents: list[int]) -> bool:
    root = next(j for j, p in enumerate(parents) if p == j)
    for j in range(len(parents)):
        seen = set()
        while j != root:
            if j in seen:
                return False
            seen.add(j)
            j = parents[j]
    return True


def test_a_known_layout_gives_its_own_edges_as_bones() -> None:
    parents = bone_parents(COCO17, np.zeros((17, 2)))
    assert parents[COCO17.centre[0]] == COCO17.centre[0], "the centre joint is the root"
    edges = {frozenset(e) for e in COCO17.edges}
    assert all(frozenset((j, p)) in edges for j, p in enumerate(parents) if j != p), (
        "every bone is a layout edge"
    )
    assert _reaches_root(parents)


def test_an_unknown_layout_links_nearest_neighbours() -> None:
    """Joints on a line, shuffled: the tree links each to a neighbour on the line, from the middle joint."""
    order = np.random.default_rng(0).permutation(9)
    mean_xy = np.stack([order * 0.1, np.zeros(9)], -1)  # joint j sits at position order[j]
    parents = bone_parents(None, mean_xy)
    assert _reaches_root(parents)
    root = parents.index(next(j for j, p in enumerate(parents) if p == j))
    assert order[root] == 4, "rooted at the joint nearest the centre"
    assert all(abs(int(order[j]) - int(order[p])) == 1 for j, p in enumerate(parents) if j != p)


def test_the_bone_tree_comes_from_the_training_clips_only() -> None:
    d = synthetic_skeletons(num_classes=3, per_class=10, joints=15, unknown_layout=True)
    data = LabeledArrays(
        kind="keypoints",
        data=d["keypoints"],
        labels=d["labels"],
        split=d["split"],
        classes=d["classes"],
        clip_ids=d["clip_ids"],
        layout=None,
        sha256="x",
        meta={},
    )
    before = bone_tree(data)
    data.data[data.split == "test"] = np.random.default_rng(1).random(data.data[data.split == "test"].shape)
    assert bone_tree(data) == before and _reaches_root(before)


def test_bones_are_offsets_seen_only_where_both_ends_are() -> None:
    x = torch.rand(2, 4, 3, 3)
    x[0, 0, 1, 2] = 0.0  # joint 1 missing in one frame
    bones = Bones([0, 0, 1])(x)
    assert torch.allclose(bones[1, :, 2, :2], x[1, :, 2, :2] - x[1, :, 1, :2] + 0.5)
    assert bones[0, 0, 1, 2] == 0 and bones[0, 0, 2, 2] == 0, "a bone with a missing end is missing"
    assert (bones[0, 0, 1, :2] == 0).all()


def test_the_two_stream_model_and_the_test_time_flip() -> None:
    torch.manual_seed(0)
    d = synthetic_skeletons(num_classes=4, per_class=4, frames=24)
    x = torch.from_numpy(d["keypoints"])
    model = (
        ARCHS["ddnet-2s"]
        .build(
            num_classes=4,
            joints=17,
            frames=24,
            layout="coco17",
            parents=bone_parents(COCO17, np.zeros((17, 2))),
        )
        .eval()
    )
    assert model(x).shape == (16, 4)
    tta = FlipAverage(model, COCO17.flip_index()).eval()
    with torch.inference_mode():
        assert torch.allclose(tta(x), tta(flip_keypoints(x, COCO17.flip_index())), atol=1e-5), (
            "mirror-invariant"
        )
        assert not torch.allclose(model(x), model(flip_keypoints(x, COCO17.flip_index())), atol=1e-5)
