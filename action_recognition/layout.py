"""Every storage key the project writes, in one place (DESIGN.md, "Storage layout"). Steps ask this module
for keys and never build them, so no step imports another for its key and the layout can be read top to
bottom:

    datasets/<dataset>/manifest.csv, candidates.csv, rejected.csv, plan.json
                                                     the plan (plan.json last: it marks a complete one)
    datasets/<dataset>/<kind>-<hash>.npz (+ .mmaction.pkl)
                                                     built datasets; latest-<kind>.json points at one
    ledger/<dataset>/<stage>/shard-<i>-of-<n>.csv    one recorded state per clip per stage
        stage: download | clip | pose/<pose_tag> | review (a person's exclusions)
    raw/<clip_id>.mp4                                the downloaded window
    clips/<profile>/<clip_id>.mp4                    the normalised clip
    keypoints/<pose_tag>/<clip_id>.npz               the main person's keypoints
    models/<fingerprint[:16]>/last.pt                a training's checkpoint
    weights/<name> (+ .sha256)                       weights pulled once (weights pull)
    doctor/probe-<token>                             the preflight's write probe, deleted at once
    reviews/<dataset>/<dataset file sha256[:16]>.json   the review list of one built keypoint dataset
        (the exclusions a person makes are ledger records: ledger/<dataset>/review/)
"""

from __future__ import annotations

DATASETS = "datasets"
LEDGER = "ledger"
WEIGHTS = "weights/"


def dataset_prefix(dataset: str) -> str:
    """Where a dataset's plan, manifest and built files live."""
    return f"{DATASETS}/{dataset}"


def manifest_key(dataset: str) -> str:
    return f"{dataset_prefix(dataset)}/manifest.csv"


def candidates_key(dataset: str) -> str:
    """The spare clips a top-up draws from, in the plan's seeded order."""
    return f"{dataset_prefix(dataset)}/candidates.csv"


def staged_key(dataset: str, name: str, content_sha256: str) -> str:
    """A top-up's new manifest or candidates, written before ``plan.json`` names them (then copied into
    place)."""
    return f"{dataset_prefix(dataset)}/staged/{name}-{content_sha256[:16]}.csv"


def rejected_key(dataset: str) -> str:
    return f"{dataset_prefix(dataset)}/rejected.csv"


def plan_key(dataset: str) -> str:
    return f"{dataset_prefix(dataset)}/plan.json"


def built_key(dataset: str, kind: str, content_hash: str, suffix: str = ".npz") -> str:
    """A built dataset file, keyed by the hash of what went into it."""
    return f"{dataset_prefix(dataset)}/{kind}-{content_hash}{suffix}"


def dataset_name_of(uri: str) -> str:
    """The dataset a built file belongs to: ``<dataset>`` of ``.../datasets/<dataset>/<kind>-<hash>.npz``,
    else the file name's first ``-``-separated part (``synth6-keypoints.npz`` -> ``synth6``)."""
    parts = uri.rstrip("/").split("/")
    if len(parts) >= 3 and parts[-3] == "datasets":
        return parts[-2]
    return parts[-1].rsplit(".", 1)[0].split("-")[0]


def latest_pointer_key(dataset: str, kind: str) -> str:
    return f"{dataset_prefix(dataset)}/latest-{kind}.json"


def pose_stage(pose_tag: str) -> str:
    """The ledger stage of a pose model's keypoints: one ledger per pose tag."""
    return f"pose/{pose_tag}"


def ledger_prefix(dataset: str, stage: str) -> str:
    return f"{LEDGER}/{dataset}/{stage}/"


def review_key(dataset: str, dataset_sha256: str) -> str:
    """``reviews/<dataset>/<sha[:16]>.json``: the review of the built dataset file with that content."""
    return f"reviews/{dataset}/{dataset_sha256[:16]}.json"


#: A pose tag or a clip id as it may appear in a thumbnail key (no leading dot, no separators): what the
#: health page's thumbnail route accepts.
THUMBNAIL_PART = r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,159}"


def thumbnail_key(pose_tag: str, clip_id: str) -> str:
    """``thumbnails/<pose_tag>/<clip_id>.jpg``: a few frames of the clip with its main person's skeleton, once
    per clip and pose tag (the review's evidence on the health page)."""
    return f"thumbnails/{pose_tag}/{clip_id}.jpg"


def health_key(dataset: str) -> str:
    """``health/<dataset>.json``: the dataset's health, written at the end of each pipeline run."""
    return f"health/{dataset}.json"


def shard_key(dataset: str, stage: str, shard: tuple[int, int]) -> str:
    return f"{ledger_prefix(dataset, stage)}shard-{shard[0]:04d}-of-{shard[1]:04d}.csv"


def raw_key(clip_id: str) -> str:
    return f"raw/{clip_id}.mp4"


def clips_prefix(profile: str) -> str:
    return f"clips/{profile}/"


def clip_key(profile: str, clip_id: str) -> str:
    return f"{clips_prefix(profile)}{clip_id}.mp4"


def keypoints_prefix(pose_tag: str) -> str:
    return f"keypoints/{pose_tag}/"


def keypoints_key(pose_tag: str, clip_id: str) -> str:
    return f"{keypoints_prefix(pose_tag)}{clip_id}.npz"


def checkpoint_key(fingerprint: str) -> str:
    return f"models/{fingerprint[:16]}/last.pt"


def refit_checkpoint_key(fingerprint: str, index: int) -> str:
    """The refit recipe's ``index``-th model (seed ``train.seed + index``) beside the selection's
    checkpoint."""
    return f"models/{fingerprint[:16]}/refit-{index}.pt"


def weights_key(name: str) -> str:
    return f"{WEIGHTS}{name}"


def probe_key(token: str) -> str:
    return f"doctor/probe-{token}"


def inference_prefix(dataset: str, key: str) -> str:
    """``inference/<dataset>/<key>/``: one batch inference (the model version and the inputs name ``key``)."""
    return f"inference/{dataset}/{key}/"


def inference_stage(key: str) -> str:
    """The ledger stage of a batch inference: ``ledger/<dataset>/infer/<key>/``."""
    return f"infer/{key}"
