"""The curation loop measured: does the review list find planted label errors, and does excluding it help?

A generated keypoint dataset (synthetic, named so in every line) with 10% of its train and val labels flipped
to another class at random and 5% of its clips' poses degraded (most joints dropped, the rest at low
confidence). ``review_dataset`` (k-fold out-of-sample probabilities, cleanlab's confident learning, the pose
figures) lists clips; the bench reports the list's precision and recall on the flipped labels at its own
cut-off (cleanlab's), and how many degraded poses it names. Then the product's default recipe is trained
on the noisy dataset and on the dataset without the listed training clips (what ``exclude`` and a rebuild
do), and both are scored on the same clean test split (test labels are never flipped, and listed test clips
stay: the two models are judged on the same clips).

Two sets (``--data``): ``articulated`` (the default: 15 joints in 2D, 14 classes in confusable pairs, 31
training clips a class, per-clip scale, tempo, missing frames; shaped like a small real benchmark, where the
default recipe is far from perfect and noise costs accuracy) and ``easy`` (8 well-separated classes of 40
clips: the model saturates, so the before/after figure says little).

    python -m benchmarks.bench_curation [--data articulated|easy] [--seed 0] [--json]

The last line with ``--json`` holds ``recall``, ``precision``, ``clean_top1_before`` and ``clean_top1_after``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from action_recognition.config import ReviewConfig, TrainConfig
from action_recognition.datasets import load_dataset, save_dataset, synthetic_skeletons
from action_recognition.review import review_dataset
from action_recognition.storage import LocalStorage
from action_recognition.train import train_model

FLIPPED = 0.10
DEGRADED = 0.05


def base_arrays(data: str, seed: int) -> tuple[dict[str, Any], str]:
    """The clean generated dataset and how to name it."""
    if data == "articulated":
        from benchmarks.articulated import articulated_skeletons

        text = "synthetic articulated: 15 joints, 14 classes x 31 train + 13 test clips, 40 frames"
        return articulated_skeletons(seed=seed), text
    arrays = synthetic_skeletons(num_classes=8, per_class=40, frames=32, seed=seed, noise=0.02)
    arrays["clip_ids"] = np.array([f"clip{i:05d}" for i in range(len(arrays["labels"]))])
    return arrays, "synthetic easy: 8 classes x 40 clips, 32 frames, COCO-17"


def noisy_dataset(folder: Path, data: str, seed: int) -> tuple[Path, np.ndarray, np.ndarray, str]:
    """The generated dataset with planted flips and degraded poses; its path, the flipped and the degraded
    clip ids, and its description."""
    arrays, text = base_arrays(data, seed)
    rng = np.random.default_rng(seed + 100)
    labels, split, ids = arrays["labels"].copy(), arrays["split"], arrays["clip_ids"]
    learnable = np.flatnonzero(split != "test")
    flipped = rng.choice(learnable, size=round(FLIPPED * len(learnable)), replace=False)
    k = int(labels.max()) + 1
    labels[flipped] = (labels[flipped] + rng.integers(1, k, size=len(flipped))) % k
    keypoints = arrays["keypoints"].copy()
    rest = np.setdiff1d(learnable, flipped)
    degraded = rng.choice(rest, size=round(DEGRADED * len(learnable)), replace=False)
    for i in degraded:
        drop = rng.random(keypoints.shape[1:3]) < 0.8
        keypoints[i][drop] = 0
        keypoints[i][~drop, 2] *= 0.2
    out = {**arrays, "keypoints": keypoints, "labels": labels}
    path = save_dataset(folder / "noisy-keypoints.npz", **out)
    return path, ids[flipped], ids[degraded], text


def without(path: Path, drop: set[str], folder: Path) -> Path:
    data = load_dataset(path)
    keep = np.array([cid not in drop for cid in data.clip_ids])
    return save_dataset(
        folder / "cleaned-keypoints.npz",
        keypoints=data.data[keep],
        labels=data.labels[keep],
        split=data.split[keep],
        classes=data.classes,
        clip_ids=data.clip_ids[keep],
        layout=data.layout,
    )


def _top1(path: Path, folder: Path, name: str) -> tuple[float, float]:
    cfg = TrainConfig(system_metrics=False, log_model=False)
    began = time.monotonic()
    store, uri = LocalStorage(folder / name), f"sqlite:///{folder / name}.db"
    result = train_model(cfg, str(path), storage=store, tracking_uri=uri, dataset_name=name)
    return float(result.metrics["test_top1"]), time.monotonic() - began


def run(data_name: str, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-curation-") as tmp:
        folder = Path(tmp)
        path, flipped, degraded, text = noisy_dataset(folder, data_name, seed)
        data = load_dataset(path)
        test_ids = set(data.clip_ids[data.split == "test"].tolist())
        began = time.monotonic()
        review = review_dataset(
            data, TrainConfig(system_metrics=False), ReviewConfig(), dataset="noisy", dataset_uri=str(path)
        )
        review_s = time.monotonic() - began
        listed = set(review.listed_ids())
        label_listed = {
            i["clip_id"] for items in review.per_class.values() for i in items if i["label_issue"]
        }
        hits = len(label_listed & set(flipped))
        before, before_s = _top1(path, folder, "before")
        after, after_s = _top1(without(path, listed - test_ids, folder), folder, "after")
    return {
        "bench": "curation",
        "data": text,
        "flipped": len(flipped),
        "degraded": len(degraded),
        "listed": len(listed),
        "excluded": len(listed - test_ids),
        "label_issues_listed": len(label_listed),
        "recall": round(hits / len(flipped), 3),
        "precision": round(hits / max(1, len(label_listed)), 3),
        "degraded_found": round(len(listed & set(degraded)) / max(1, len(degraded)), 3),
        "review_seconds": round(review_s, 1),
        "clean_top1_before": round(before, 3),
        "clean_top1_after": round(after, 3),
        "train_seconds": [round(before_s, 1), round(after_s, 1)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("articulated", "easy"), default="articulated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="end with one JSON line of every figure")
    args = parser.parse_args()
    r = run(args.data, args.seed)
    print(
        f"{r['data']}: {r['flipped']} flipped labels, {r['degraded']} degraded poses; the review "
        f"listed {r['listed']} ({r['label_issues_listed']} as label issues) in {r['review_seconds']} s"
    )
    print(f"  flipped labels: recall {r['recall']:.3f}, precision {r['precision']:.3f}")
    print(f"  degraded poses named: {r['degraded_found']:.3f}")
    print(
        f"  clean test top-1: {r['clean_top1_before']:.3f} on the noisy data, {r['clean_top1_after']:.3f} "
        f"without the {r['excluded']} listed training clips"
    )
    if args.json:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
