"""The ``review`` step: the clips that passed every stage but probably hurt the model, with the evidence.

For every labelled clip of a keypoint dataset (or of a frames dataset, once the RGB family has a champion),
out-of-sample class probabilities: stratified k-fold (``review.folds``), each fold scored by a model trained
on the others with the champion's recipe (or the given settings) on a short schedule (``review.epochs``), one
seed. cleanlab's confident learning (``cleanlab.filter.find_label_issues``, pruning by the estimated noise
rate) finds the candidate label errors, kept when the suggested label is ``review.min_odds`` times likelier
than the given one, and ``cleanlab.rank.get_label_quality_scores`` ranks them; for keypoints, the clip's pose
figures, from the dataset's own joints (the share of joints seen, their mean confidence, the frames with
nobody), flag clips whose skeleton is too poor to learn from. Each listed clip says why; the list is per
class, worst first, and the first few of each class get a thumbnail: frames of the published clip, with the
skeleton for keypoints.

The result is stored content-keyed by the dataset file's bytes (``reviews/<dataset>/<sha>.json``: a re-run
on the same file trains nothing), and the exclusions a person then makes are ledger records
(:mod:`action_recognition.exclusions`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from action_recognition.config import Config, ReviewConfig, TrainConfig
from action_recognition.datasets import LabeledArrays
from action_recognition.errors import ActionRecognitionError
from action_recognition.layout import clip_key, dataset_name_of, keypoints_key, review_key, thumbnail_key
from action_recognition.names import model_name
from action_recognition.storage import Storage

log = logging.getLogger(__name__)

#: The splits whose clips are reviewed: every labelled clip the models learn from or are judged on.
REVIEWED_SPLITS = ("train", "val", "test")


@dataclass
class ReviewItem:
    """One listed clip and its evidence."""

    clip_id: str
    label: str
    split: str
    suggested: str
    suggested_prob: float
    given_prob: float
    label_quality: float
    label_issue: bool
    joints_seen: float | None  # the pose figures: None in a frames review
    mean_conf: float | None
    empty_frames: float | None
    why: list[str] = field(default_factory=list)
    thumbnail: str = ""  # a storage key (layout.thumbnail_key); empty when none was made


@dataclass
class ReviewResult:
    """The review of one dataset file; ``summary()`` is the CLI's JSON line and the stored file."""

    dataset: str
    dataset_uri: str
    dataset_sha256: str
    arch: str
    folds: int
    epochs: int
    clips: int
    label_issues: int
    poor_poses: int
    per_class: dict[str, list[dict[str, Any]]]
    note: str = ""
    family: str = "keypoint"
    untrained: bool = False  # the fold models' backbone had random weights (allow_untrained): named so
    review_uri: str = ""
    reused: bool = False
    seconds: float = 0.0

    @property
    def listed(self) -> int:
        return sum(len(items) for items in self.per_class.values())

    def listed_ids(self) -> list[str]:
        return sorted(item["clip_id"] for items in self.per_class.values() for item in items)

    def summary(self) -> dict[str, Any]:
        return {**asdict(self), "listed": self.listed}


def pose_figures(data: LabeledArrays) -> dict[str, np.ndarray]:
    """Per clip: the share of (frame, joint) detected, the detected joints' mean confidence, and the share of
    frames with no joint at all (nobody found)."""
    conf = data.data[..., 2]
    seen = conf > 0
    joints_seen = seen.mean(axis=(1, 2))
    total = np.where(seen, conf, 0).sum(axis=(1, 2))
    mean_conf = np.divide(total, seen.sum(axis=(1, 2)), out=np.zeros(len(conf)), where=seen.any(axis=(1, 2)))
    empty_frames = (~seen.any(axis=2)).mean(axis=1)
    return {"joints_seen": joints_seen, "mean_conf": mean_conf, "empty_frames": empty_frames}


def out_of_sample_probs(
    data: LabeledArrays, rows: np.ndarray, config: TrainConfig, arch: str, folds: int, epochs: int
) -> tuple[np.ndarray, bool]:
    """Class probabilities (len(rows), K) for ``rows``, each from a model that never saw it: stratified
    ``folds``-fold, one model a fold trained ``epochs`` epochs on the other folds with ``config``'s
    settings (one seed, no selection); and whether a fold model started from random backbone weights."""
    import torch

    from action_recognition.training.inference import predict_logits, rgb_crop
    from action_recognition.training.loop import EpochData, train_one_epoch
    from action_recognition.training.setup import build_model, pick_device, seed_everything
    from action_recognition.training.state import TrainState

    device = pick_device(config.device)
    ds = EpochData.of(data, arch, device, rgb_crop(data) if data.kind == "frames" else 0)
    probs = np.zeros((len(rows), data.num_classes), dtype=np.float64)
    fold_of = _stratified_folds(data.labels[rows], folds, config.seed)
    untrained = False
    for k in range(folds):
        held, train = rows[fold_of == k], rows[fold_of != k]
        seed_everything(config.seed + k)
        model, random_backbone = build_model(arch, data, config)
        untrained = untrained or random_backbone
        steps = max(1, -(-len(train) // config.batch_size))
        state = TrainState.create(
            model.to(device), config, arch, steps, device, epochs=epochs, seed=config.seed + k
        )
        for _ in range(epochs):
            train_one_epoch(state, ds, train, config)
        logits = predict_logits(state.eval_model, ds.x, held, config.batch_size * 2, device, ds.crop)
        probs[fold_of == k] = torch.softmax(torch.from_numpy(logits).double(), dim=1).numpy()
        log.info("review fold %d/%d: %d clips scored by a model of %d", k + 1, folds, len(held), len(train))
    return probs, untrained


def _stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold number per row, each class dealt round-robin over the folds in a seeded order."""
    rng = np.random.default_rng(seed)
    out = np.zeros(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rng.shuffle(members)
        out[members] = np.arange(len(members)) % folds
    return out


def review_dataset(
    data: LabeledArrays, config: TrainConfig, review: ReviewConfig, *, dataset: str, dataset_uri: str
) -> ReviewResult:
    """Score every labelled clip out of sample and list the probable label errors (and, for keypoints, the
    poor poses)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    family = family_of_kind(data.kind)
    rows = np.flatnonzero(np.isin(data.split, REVIEWED_SPLITS))
    counts = np.bincount(data.labels[rows], minlength=data.num_classes)
    arch = config.arch_for(data.kind)
    epochs = min(review.epochs, config.epochs)
    # Every class in every fold: at most as many folds as the smallest class has clips.
    folds = min(review.folds, int(counts.min()) if len(rows) else 0)
    if folds < 2:
        fewest = int(counts.min()) if len(rows) else 0
        note = f"not reviewed: a class has {fewest} clip(s); out-of-sample scores need 2 in every class"
        return ReviewResult(
            dataset, dataset_uri, data.sha256, arch, folds, epochs, len(rows), 0, 0, {}, note, family
        )
    probs, untrained = out_of_sample_probs(data, rows, config, arch, folds, epochs)
    labels = data.labels[rows]
    given = probs[np.arange(len(rows)), labels]
    confident = given * review.min_odds <= probs.max(axis=1)  # the suggested label min_odds times likelier
    issues = find_label_issues(labels, probs, filter_by="prune_by_noise_rate") & confident
    quality = get_label_quality_scores(labels, probs)
    pose = {k: v[rows] for k, v in pose_figures(data).items()} if data.kind == "keypoints" else {}
    poor = (
        (pose["joints_seen"] < review.min_joints_seen) | (pose["mean_conf"] < review.min_confidence)
        if pose
        else np.zeros(len(rows), dtype=bool)
    )
    per_class: dict[str, list[dict[str, Any]]] = {}
    for i in np.argsort(quality):
        if not (issues[i] or poor[i]):
            continue
        figures = {k: float(v[i]) for k, v in pose.items()}
        item = _item(data, rows[i], probs[i], float(quality[i]), bool(issues[i]), figures, review)
        per_class.setdefault(item.label, []).append(asdict(item))
    note = "untrained: the fold models started from random backbone weights" if untrained else ""
    return ReviewResult(
        dataset=dataset,
        dataset_uri=dataset_uri,
        dataset_sha256=data.sha256,
        arch=arch,
        folds=folds,
        epochs=epochs,
        clips=len(rows),
        label_issues=int(issues.sum()),
        poor_poses=int(poor.sum()),
        per_class=dict(sorted(per_class.items())),
        note=note,
        family=family,
        untrained=untrained,
    )


def family_of_kind(kind: str) -> str:
    """The model family that learns from a dataset ``kind``: keypoints -> keypoint, frames -> rgb."""
    return "keypoint" if kind == "keypoints" else "rgb"


def _item(
    data: LabeledArrays,
    row: int,
    probs: np.ndarray,
    quality: float,
    issue: bool,
    pose: dict[str, float],
    review: ReviewConfig,
) -> ReviewItem:
    given = int(data.labels[row])
    best = int(np.argmax(probs))
    why = []
    if issue:
        odds = probs[best] / max(float(probs[given]), 1e-6)
        why.append(
            f"label: the models out of sample give {data.classes[given]!r} {probs[given]:.2f} and "
            f"{data.classes[best]!r} {probs[best]:.2f} ({odds:.0f}x)"
        )
    if pose and pose["joints_seen"] < review.min_joints_seen:
        why.append(f"pose: {pose['joints_seen']:.0%} of the joints seen (< {review.min_joints_seen:.0%})")
    if pose and pose["mean_conf"] < review.min_confidence:
        why.append(f"pose: mean joint confidence {pose['mean_conf']:.2f} (< {review.min_confidence:.2f})")
    return ReviewItem(
        clip_id=str(data.clip_ids[row]),
        label=data.classes[given],
        split=str(data.split[row]),
        suggested=data.classes[best],
        suggested_prob=round(float(probs[best]), 4),
        given_prob=round(float(probs[given]), 4),
        label_quality=round(quality, 4),
        label_issue=issue,
        joints_seen=round(pose["joints_seen"], 4) if pose else None,
        mean_conf=round(pose["mean_conf"], 4) if pose else None,
        empty_frames=round(pose["empty_frames"], 4) if pose else None,
        why=why,
    )


def attach_thumbnails(
    storage: Storage, result: ReviewResult, clip_profile: str, per_class: int, work: Path, pose_tag: str = ""
) -> int:
    """Give the first ``per_class`` listed clips of each class a thumbnail (``thumbnail`` in the item): a few
    frames of the published clip, with the main person's skeleton from its per-clip keypoints when
    ``pose_tag`` is given, made once per clip and pose tag (``frames-<profile>`` for the frames alone). A clip
    whose video (or keypoints) is not in storage gets none, said in the log. How many the items point to."""
    from action_recognition.ledger import read_stage

    if per_class == 0:
        return 0
    profiles = {cid: rec.method for cid, rec in read_stage(storage, result.dataset, "clip").items()}
    tag = pose_tag or f"frames-{clip_profile}"
    attached = 0
    for items in result.per_class.values():
        for item in items[:per_class]:
            cid = item["clip_id"]
            key = thumbnail_key(tag, cid)
            video = clip_key(profiles.get(cid) or clip_profile, cid)
            people = keypoints_key(pose_tag, cid) if pose_tag else None
            if storage.exists(key) or _make_thumbnail(storage, key, video, people, work):
                item["thumbnail"] = key
                attached += 1
    return attached


def _make_thumbnail(storage: Storage, key: str, video_key: str, people_key: str | None, work: Path) -> bool:
    from action_recognition.pose.extract import load_people
    from action_recognition.pose.render import thumbnail_strip

    needed = [video_key] + ([people_key] if people_key else [])
    missing = [k for k in needed if not storage.exists(k)]
    if missing:
        log.info("no thumbnail for %s: %s not in storage", key, " or ".join(missing))
        return False
    try:
        person, fps = np.zeros((0, 17, 3), np.float32), None
        if people_key:
            people, fps = load_people(storage.get_bytes(people_key))
            person = people[0]
        video = storage.get_file(video_key, work / "thumbnail.mp4")
        storage.put_bytes(key, thumbnail_strip(video, person, fps))
    except (ActionRecognitionError, OSError, ValueError) as exc:  # evidence, not the review: the list stands
        log.warning("no thumbnail for %s: %s", key, exc)
        return False
    return True


def store_review(storage: Storage, result: ReviewResult) -> str:
    """Publish the review content-keyed by the dataset file (unchanged content writes nothing); its URI."""
    key = review_key(result.dataset, result.dataset_sha256)
    body = {k: v for k, v in result.summary().items() if k not in ("review_uri", "reused", "seconds")}
    storage.put_bytes_if_changed(key, json.dumps(body, indent=1, sort_keys=True).encode())
    return storage.key_uri(key)


def stored_review(storage: Storage, dataset: str, sha256: str) -> ReviewResult | None:
    """The stored review of the dataset file with this content, or None."""
    key = review_key(dataset, sha256)
    return _read_review(storage, key) if storage.exists(key) else None


def review_of(storage: Storage, dataset: str, dataset_uri: str) -> ReviewResult | None:
    """The stored review of the dataset file at ``dataset_uri`` (built files are content-keyed: one URI,
    one content), or None."""
    for key in storage.list(review_key(dataset, "").rsplit("/", 1)[0] + "/"):
        found = _read_review(storage, key)
        if found.dataset_uri == dataset_uri:
            return found
    return None


def _read_review(storage: Storage, key: str) -> ReviewResult:
    body = json.loads(storage.get_bytes(key))
    body.pop("listed", None)
    return ReviewResult(**body, review_uri=storage.key_uri(key), reused=True)


def run_review(cfg: Config, dataset_uri: str, storage: Storage) -> ReviewResult:
    """The ``review`` step: the review of a built dataset file (keypoints, or frames once the RGB family has a
    champion), trained with its family champion's recipe (for keypoints, the given settings when there is no
    champion), stored content-keyed (a file reviewed before is not reviewed again) and attached to the
    champion's MLflow run as ``review_<sha>.json``."""
    import torch
    from mlflow import MlflowClient

    from action_recognition.datasets import load_dataset
    from action_recognition.recipe import resolve_recipe
    from action_recognition.training.inference import fetch_dataset
    from action_recognition.workdir import job_folder, work_base

    began = time.monotonic()
    name = dataset_name_of(dataset_uri)
    with job_folder(work_base(None), "review", "run") as work:
        data = load_dataset(fetch_dataset(dataset_uri, work))
        stored = stored_review(storage, name, data.sha256)
        if stored is not None:
            log.info("%s was reviewed before: %s", dataset_uri, stored.review_uri)
            return stored
        family = family_of_kind(data.kind)
        registered = model_name(name, family)
        choice = resolve_recipe(
            cfg.train.model_copy(update={"recipe_source": "champion"}), registered, family, cfg.tracking.uri
        )
        if family == "rgb" and not choice.champion_run:
            note = f"not reviewed: {registered} has no champion yet (the frames review follows its recipe)"
            arch = cfg.train.arch_for(data.kind)
            return ReviewResult(name, dataset_uri, data.sha256, arch, 0, 0, 0, 0, 0, {}, note, family)
        if choice.config.threads:
            torch.set_num_threads(choice.config.threads)
        result = review_dataset(data, choice.config, cfg.review, dataset=name, dataset_uri=dataset_uri)
        pose_tag = str(data.meta.get("pose_tag") or "")
        profile = str(data.meta.get("profile") or cfg.clip.profile)
        shown = attach_thumbnails(
            storage, result, profile, cfg.review.thumbnails_per_class, work, pose_tag=pose_tag
        )
        log.info("%s: %d thumbnails of listed clips (%s)", name, shown, pose_tag or f"frames of {profile}")
    result.review_uri = store_review(storage, result)
    result.seconds = round(time.monotonic() - began, 1)
    if choice.champion_run:
        MlflowClient(cfg.tracking.uri).log_dict(
            choice.champion_run, result.summary(), f"review_{data.sha256[:16]}.json"
        )
    log.info("%s: %d of %d clips listed -> %s", name, result.listed, result.clips, result.review_uri)
    return result
