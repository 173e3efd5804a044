"""One validated configuration, one section per step.

Sources, later ones win: the defaults below, a YAML file, environment variables
``AR__<SECTION>__<KEY>`` (for example ``AR__PLAN__PER_CLASS=200``), ``--set section.key=value``
overrides, then explicit CLI flags or Airflow Params (see :mod:`action_recognition.airflow_adapter`).
Values from the environment and ``--set`` are parsed as YAML scalars, so ``[a, b]``, ``true`` and ``0.2``
mean what they look like. Unknown keys are rejected, and out-of-range values are reported with the
range that is valid. Secrets (S3 keys, MLflow passwords) are never config: they come from the
environment or Airflow connections only.
"""

from __future__ import annotations

import os
import string
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from action_recognition.config_tree import merge_trees, parse_scalar, set_dotted
from action_recognition.errors import ConfigError
from action_recognition.names import (
    ARCH_NAMES,
    DEFAULT_KEYPOINT_ARCH,
    DEFAULT_PER_CLASS,
    DEFAULT_RGB_ARCH,
    KEYPOINT_ARCHS,
    RGB_ARCHS,
)
from action_recognition.validation import format_validation_error

ENV_PREFIX = "AR__"
DATASET_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


def default_cache_dir() -> Path:
    """Where downloaded annotation files and other re-fetchable inputs are cached."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "action-recognition"


class StrictModel(BaseModel):
    """A config section: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


class StorageConfig(StrictModel):
    """Where every layer (raw, clips, keypoints, datasets, ledger) is kept.

    ``uri`` is a local folder or ``s3://bucket/prefix``. For S3 the keys come from the environment
    (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``) or an Airflow AWS connection, never from here.
    """

    uri: str = Field(
        "./ar-data", min_length=1, max_length=1024, description="Local folder or s3://bucket/prefix."
    )
    endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, a test server); default from AWS_ENDPOINT_URL."
    )
    region: str | None = Field(None, description="S3 region; default from AWS_DEFAULT_REGION.")
    max_attempts: int = Field(6, ge=1, le=20, description="Attempts per S3 call (botocore standard retries).")
    unreachable_s: float = Field(
        30.0, ge=0, le=3600, description="Seconds a call retries an unreachable server."
    )
    connect_timeout_s: float = Field(5.0, gt=0, le=300)
    read_timeout_s: float = Field(60.0, gt=0, le=3600)
    multipart_threshold_mb: int = Field(64, ge=5, le=5120, description="Files above this upload in parts.")

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in ("", "s3", "file"):
            raise ValueError(
                f"unsupported scheme {scheme!r}; use a local folder, file:// or s3://bucket/prefix"
            )
        if scheme == "s3" and len(value[5:].split("/", 1)[0]) < 3:
            raise ValueError("an S3 URI needs a bucket name of at least 3 characters: s3://bucket/prefix")
        return value


class PlanConfig(StrictModel):
    """``plan``: which Kinetics rows make a dataset. Exactly one class selector is used."""

    dataset: str = Field("dance15", pattern=DATASET_NAME_PATTERN, description="Dataset name (used in keys).")
    annotations: list[Annotated[str, StringConstraints(min_length=1, max_length=2048)]] = Field(
        default_factory=list,
        max_length=100,
        description="Annotation CSVs: paths or http(s) URLs, any number.",
    )
    kinetics_version: Literal[400, 600, 700] | None = Field(
        None, description="Of all sources; default: from names."
    )
    allow_mixed_versions: bool = Field(
        False, description="Allow sources of different Kinetics versions (K400 val clips are in K700 train)."
    )
    classes: list[Annotated[str, StringConstraints(max_length=200)]] = Field(
        default_factory=list, max_length=1000, description="Exact class names."
    )
    class_contains: str | None = Field(
        "dancing", max_length=200, description="Every class whose name contains this word."
    )
    all_classes: bool = False
    per_class: int = Field(DEFAULT_PER_CLASS, ge=1, le=1_000_000, description="Clips per class at most.")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    carve_missing_splits: bool = Field(
        True, description="Carve val/test out of train (stratified by class) when the sources lack them."
    )
    val_ratio: float = Field(0.15, ge=0.0, le=0.5)
    test_ratio: float = Field(0.2, ge=0.0, le=0.5)
    max_clip_seconds: float = Field(20.0, gt=0, le=600, description="Longer annotated windows are rejected.")
    cache_dir: Path = Field(default_factory=lambda: default_cache_dir() / "annotations")
    download_timeout_s: float = Field(60.0, gt=0, le=3600)

    @field_validator("annotations")
    @classmethod
    def _sources(cls, value: list[str]) -> list[str]:
        for source in value:
            scheme = urlsplit(source).scheme
            if len(scheme) > 1 and scheme not in ("file", "http", "https"):  # one letter: a Windows drive
                raise ValueError(
                    f"unsupported scheme {scheme!r} in {source[:200]!r}: use a path or an http(s) URL"
                )
            if any((ch.isspace() and ch != " ") or ord(ch) < 32 for ch in source):
                raise ValueError(f"control characters in {source[:200]!r}")
        return value

    @model_validator(mode="after")
    def _one_selector(self) -> PlanConfig:
        chosen = [bool(self.classes), self.class_contains is not None, self.all_classes]
        if sum(chosen) != 1:
            raise ValueError(
                "choose exactly one class selector: classes (exact names), class_contains (a word) "
                f"or all_classes; got classes={self.classes!r}, class_contains={self.class_contains!r}, "
                f"all_classes={self.all_classes!r}"
            )
        if self.class_contains is not None and not self.class_contains.strip():
            raise ValueError("class_contains must not be blank")
        if self.val_ratio + self.test_ratio >= 0.9:
            raise ValueError(f"val_ratio + test_ratio must be < 0.9, got {self.val_ratio + self.test_ratio}")
        return self


class DownloadConfig(StrictModel):
    """``download``: fetch just the annotated segment of each video with yt-dlp."""

    url_template: str = Field(
        "https://www.youtube.com/watch?v={youtube_id}",
        description="Video URL with a {youtube_id} field; the id is validated before it is put in.",
    )
    max_height: int = Field(360, ge=144, le=2160, description="Highest video height fetched.")
    margin_s: float = Field(1.0, ge=0, le=30, description="Seconds fetched before and after the window.")
    method: Literal["auto", "segment", "whole"] = Field(
        "auto",
        description="auto: segment, then the whole video when a segment download fails for a fixable reason.",
    )
    workers: int = Field(4, ge=1, le=64, description="Concurrent downloads in one process.")
    max_attempts: int = Field(4, ge=1, le=20, description="Attempts per clip for transient errors.")
    backoff_base_s: float = Field(2.0, ge=0, le=600)
    backoff_max_s: float = Field(120.0, ge=0, le=3600)
    breaker_threshold: int = Field(
        8, ge=1, le=1000, description="Consecutive rate-limit or bot-check answers that stop the shard."
    )
    socket_timeout_s: float = Field(30.0, gt=0, le=600)
    max_filesize_mb: int = Field(2048, ge=1, le=100_000)
    extractors: list[str] = Field(
        default_factory=lambda: ["youtube", "generic"], description="yt-dlp extractors allowed."
    )
    cookies_file: Path | None = Field(None, description="Netscape cookies file (a mounted secret).")
    proxy: str | None = Field(None, description="Proxy URL; put it in AR__DOWNLOAD__PROXY, not in a file.")
    work_dir: Path | None = Field(
        None, description="Job folders for partial downloads; default: system temp."
    )

    @field_validator("url_template")
    @classmethod
    def _template(cls, value: str) -> str:
        fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
        if fields != ["youtube_id"]:
            raise ValueError(f"must contain {{youtube_id}} exactly once and no other field, got {fields}")
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        if any(ch.isspace() or ord(ch) < 32 for ch in value) or len(value) > 2048:
            raise ValueError(
                "must be one URL of at most 2048 characters, without spaces or control characters"
            )
        return value


class ClipConfig(StrictModel):
    """``clip``: re-encode each raw segment to the exact window; the profile is part of the output key."""

    short_side: int = Field(256, ge=64, le=1080)
    fps: int = Field(25, ge=1, le=60)
    crf: int = Field(23, ge=0, le=51)
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = "veryfast"
    threads: int = Field(2, ge=1, le=64)
    workers: int = Field(2, ge=1, le=64, description="Clips encoded at once.")
    duration_tolerance_s: float = Field(0.1, ge=0.0, le=2.0)
    max_input_mb: int = Field(2048, ge=1, le=100_000, description="Larger raw files are bad_media.")
    max_input_pixels: int = Field(3840 * 2160, ge=64 * 64, le=16384 * 16384)
    timeout_s: float = Field(600.0, gt=0, le=7200)

    @property
    def profile(self) -> str:
        """The part of the clip keys that names this encoding: ``s256-f25-crf23``."""
        return f"s{self.short_side}-f{self.fps}-crf{self.crf}"


#: Detection threshold of an untrained pose model unless one is given (see PoseConfig).
UNTRAINED_CONF = 1e-4


class PoseConfig(StrictModel):
    """``pose``: Ultralytics YOLO pose on the normalised clips; the main person, tracked."""

    weights: str = Field(
        "yolo11n-pose.pt",
        min_length=1,
        max_length=512,
        pattern=r"^(s3://)?[A-Za-z0-9_./-]+\.(pt|onnx|engine|torchscript)$",
        description="Ultralytics pose weights: a storage URI from `weights pull` "
        "(s3://bucket/prefix/weights/NAME: "
        "cached, hash-checked), or a file path without '..', ending .pt, .onnx, .engine or .torchscript. "
        "Ultralytics unpickles .pt files: pin them with weights_sha256.",
    )
    weights_sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="Refuse weights with another hash."
    )
    untrained: bool = Field(
        False, description="Tests and benchmarks only: random weights built from the model yaml."
    )
    imgsz: int = Field(
        320, ge=64, le=1920, multiple_of=32, description="Inference size (clips are 256 px short side)."
    )
    batch: int = Field(16, ge=1, le=512)
    fps: float | None = Field(
        None, gt=0, le=120, description="Sample frames at this rate; default every frame."
    )
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+|mps)$")
    half: bool = Field(True, description="FP16 on CUDA.")
    conf: float = Field(0.25, gt=0, le=1.0, description="Detection confidence threshold.")
    tracker: str = Field(
        "bytetrack.yaml", min_length=1, description="Ultralytics tracker config (name or path)."
    )
    top_m: int = Field(1, ge=1, le=10, description="People kept per clip (skeleton models may use M > 1).")
    weight_length: float = Field(1.0, ge=0, le=10, description="Main person: weight of track length.")
    weight_area: float = Field(1.0, ge=0, le=10, description="Main person: weight of box size.")
    weight_centre: float = Field(
        0.5, ge=0, le=10, description="Main person: weight of nearness to the centre."
    )
    weight_conf: float = Field(0.5, ge=0, le=10, description="Main person: weight of keypoint confidence.")
    workers: int = Field(
        2, ge=1, le=16, description="Decoding threads (one ffmpeg each); clips decoded ahead."
    )
    track_in: Literal["auto", "thread", "process"] = Field(
        "auto", description="Tracking: auto = processes on CUDA."
    )
    config_dir: Path | None = Field(None, description="YOLO_CONFIG_DIR; default: a folder in the cache.")

    @field_validator("weights")
    @classmethod
    def _no_parent_dirs(cls, value: str) -> str:
        if ".." in Path(value).parts:
            raise ValueError(f"{value!r}: no '..' in a weights path")
        return value

    @model_validator(mode="before")
    @classmethod
    def _untrained_keeps_what_it_finds(cls, data: Any) -> Any:
        """Random weights never score a person near the default threshold: an untrained run (demos, tests)
        would find nobody at all. Unless ``conf`` is given, it keeps every (meaningless) detection instead."""
        if (
            isinstance(data, dict)
            and str(data.get("untrained", "")).lower() in ("true", "1")
            and "conf" not in data
        ):
            return {**data, "conf": UNTRAINED_CONF}
        return data


class BuildConfig(StrictModel):
    """``build-dataset``: pack per-clip keypoints (or frames) into one training file."""

    kind: Literal["keypoints", "frames"] = "keypoints"
    frames: int = Field(40, ge=2, le=1000, description="T of the keypoint dataset (resampled).")
    rgb_frames: int = Field(8, ge=1, le=64, description="Frames per clip of the RGB dataset (TSN segments).")
    rgb_size: int = Field(128, ge=32, le=512, description="Square side of the RGB frames (centre crop).")
    min_main_fraction: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Clips where the main person is seen in fewer frames are left out (no person).",
    )


class TrainConfig(StrictModel):
    """``train``: one model on one dataset file, tracked in MLflow."""

    arch: str | None = Field(
        None,
        description=f"Architecture, one of {', '.join(ARCH_NAMES)}, whatever the dataset; default: "
        "keypoint_arch for a keypoint dataset, rgb_arch for frames.",
    )
    keypoint_arch: str = Field(
        DEFAULT_KEYPOINT_ARCH,
        description="Keypoint architecture (a keypoint dataset, when `arch` is unset).",
        json_schema_extra={"enum": list(KEYPOINT_ARCHS)},
    )
    rgb_arch: str = Field(
        DEFAULT_RGB_ARCH,
        description="RGB architecture (a frames dataset, when `arch` is unset).",
        json_schema_extra={"enum": list(RGB_ARCHS)},
    )
    epochs: int = Field(80, ge=1, le=2000)
    batch_size: int = Field(32, ge=2, le=4096)
    lr: float | None = Field(
        None, gt=0, le=1.0, description="Peak learning rate; default: the architecture's own."
    )
    weight_decay: float | None = Field(None, ge=0, le=1.0, description="Default: the architecture's own.")
    label_smoothing: float = Field(0.1, ge=0, lt=1.0)
    patience: int = Field(25, ge=1, le=1000, description="Epochs without a better val score before stopping.")
    min_epochs: int | None = Field(
        None,
        ge=1,
        le=2000,
        description="No early stop before this many epochs (default: half of `epochs`): a "
        "model on hard data can sit at chance for a while before it starts to learn.",
    )
    recipe: Literal["auto", "refit", "early_stop", "fixed"] = Field(
        "auto",
        description="auto: `fixed` for a keypoint dataset of at most `auto_fixed_max_clips` train+val clips "
        "(the small-data winner on the articulated bench), `early_stop` for a larger one, `refit` for "
        "frames; "
        "refit: choose the epoch count on val (early stopping), then train `seeds` models from "
        "scratch on train+val for that many epochs and average their logits (every labelled clip trains the "
        "model); early_stop: keep the best val epoch's weights of one model trained on train alone; fixed: "
        "no validation, `seeds` models trained on train+val for `epochs` epochs (cosine), logits averaged.",
    )
    auto_fixed_max_clips: int = Field(
        5000,
        ge=0,
        le=10_000_000,
        description="recipe=auto: the largest keypoint train+val set that gets the fixed recipe; above "
        "it one model selected on val (a large set can spare its val clips, and one model costs a third).",
    )
    recipe_source: Literal["champion", "form"] = Field(
        "form",
        description="champion: repeat the training settings of the registered model's @champion (its run's "
        "train_config.json), keys in `recipe_overrides` excepted; form: the settings given here. The "
        "retrain DAG's default is champion.",
    )
    recipe_overrides: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="recipe_source=champion: the train keys whose given value wins over the champion's "
        "(a DAG run fills it with the keys its trigger set).",
    )
    seeds: int = Field(
        3,
        ge=1,
        le=10,
        description="refit and fixed: models trained on train+val (seeds seed, seed+1, ...), "
        "logits averaged; their test top-1 spread is logged.",
    )
    ema_decay: float = Field(
        0.99,
        ge=0,
        lt=1,
        description="Exponential moving average of the weights, per step (0: off); validation, "
        "the checkpoint's best weights and the logged model use the average.",
    )
    seed: int = Field(0, ge=0, le=2**32 - 1)
    val_ratio: float = Field(
        0.15, gt=0, le=0.5, description="Carved from train (stratified) when there is no val."
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    balanced_sampling: bool = True
    augment: bool = True
    pretrained: bool = Field(True, description="RGB models: start from downloaded ImageNet/Kinetics weights.")
    backbone_weights: str | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description="RGB models: the pretrained backbone's state dict, a storage URI from `weights pull` "
        "(s3://.../weights/resnet18-f37072fd.pth) or a path; read with torch.load(weights_only=True). "
        "Unset: torchvision's own download (needs the network at train time).",
    )
    allow_untrained: bool = Field(
        False, description="RGB models: train from random weights when pretrained ones cannot be downloaded."
    )
    max_minutes: float = Field(0.0, ge=0, le=10_000, description="Stop after this long (0: no limit).")
    checkpoint_interval_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="Seconds between checkpoints to storage (0: every epoch); a finished "
        "stage is always saved. A killed try loses at most this much.",
    )
    threads: int = Field(0, ge=0, le=256, description="CPU threads for torch (0: torch's default).")
    num_workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes.")
    experiment: str = Field("action-recognition", min_length=1, max_length=200)
    registered_model: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$", description="Default: <dataset>-<family>."
    )
    resume: bool = Field(
        True,
        description="Continue a killed try: the last checkpoint of the same configuration and data, in the "
        "same "
        "MLflow run when that run never ended (false: start over).",
    )
    log_model: bool = True
    system_metrics: bool = True

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "tracking_uri" in data:
            raise ValueError(
                "train.tracking_uri moved to tracking.uri (the MLflow server is every step's, not only "
                "training's): --set tracking.uri=..., AR__TRACKING__URI or the CLI's --tracking-uri"
            )
        return data

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, value: str | None) -> str | None:
        if value is not None and value not in ARCH_NAMES:
            raise ValueError(f"unknown architecture {value!r}; the architectures are {', '.join(ARCH_NAMES)}")
        return value

    @field_validator("keypoint_arch", "rgb_arch")
    @classmethod
    def _family_arch(cls, value: str, info: ValidationInfo) -> str:
        family = KEYPOINT_ARCHS if info.field_name == "keypoint_arch" else RGB_ARCHS
        if value not in family:
            raise ValueError(f"unknown architecture {value!r}; the choices are {', '.join(family)}")
        return value

    @field_validator("recipe_overrides")
    @classmethod
    def _train_keys(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(cls.model_fields))
        if unknown:
            raise ValueError(f"not train settings: {', '.join(unknown)}")
        return sorted(set(value))

    def arch_for(self, kind: str) -> str:
        """The architecture that trains a dataset of ``kind`` (``keypoints`` or ``frames``)."""
        return self.arch or (self.keypoint_arch if kind == "keypoints" else self.rgb_arch)

    def recipe_for(self, kind: str, labelled: int) -> tuple[str, str]:
        """The recipe that trains a dataset of ``kind`` with ``labelled`` train+val clips, and why (the run
        records both)."""
        if self.recipe != "auto":
            return self.recipe, f"recipe={self.recipe} was set"
        if kind == "frames":
            return "refit", "auto: frames datasets use refit"
        if labelled <= self.auto_fixed_max_clips:
            return "fixed", f"auto: {labelled} keypoint train+val clips <= {self.auto_fixed_max_clips}"
        return "early_stop", f"auto: {labelled} keypoint train+val clips > {self.auto_fixed_max_clips}"


class TrackingConfig(StrictModel):
    """``tracking``: the MLflow server of every step that tracks, registers, predicts or reports."""

    uri: str | None = Field(
        None,
        description="MLflow tracking URI (http(s)://host:port, sqlite:///path.db); default: "
        "MLFLOW_TRACKING_URI, else MLflow's own default.",
    )


class RegistryConfig(StrictModel):
    """``register``/``promote``: the MLflow model registry."""

    promotion_metric: Literal["test_top1", "mean_class_acc", "macro_f1"] = "test_top1"
    promotion_margin: float = Field(
        0.0, ge=0.0, le=1.0, description="How much better the challenger must be."
    )
    max_attempts: int = Field(
        5, ge=1, le=50, description="Attempts per MLflow call (server restarts, timeouts)."
    )
    backoff_s: float = Field(1.0, ge=0, le=120)
    video_max_mb: int = Field(
        100, ge=1, le=4096, description="<dataset>-video refuses larger videos (served: 400)."
    )


class ReviewConfig(StrictModel):
    """``review``: the clips that probably hurt the model (:mod:`action_recognition.review`)."""

    folds: int = Field(
        5,
        ge=2,
        le=20,
        description="Out-of-sample probabilities: each clip scored by a model of the other folds.",
    )
    epochs: int = Field(
        80,
        ge=1,
        le=2000,
        description="Each fold's model's epochs (at most the recipe's own `train.epochs`): out-of-sample "
        "scores of undertrained models accuse clean clips (bench_curation: 30 epochs, precision 0.23; 80, "
        "0.76 at recall 0.96).",
    )
    min_odds: float = Field(
        10.0,
        ge=1,
        le=1000,
        description="A clip cleanlab finds is listed as a probable label error only when the out-of-sample "
        "models give the suggested label at least this many times the given label's probability: confident "
        "learning alone also accuses the hard clips of confusable classes (bench_curation, articulated set: "
        "precision 0.22 at recall 0.93 alone; 0.74 at 0.86 with 10).",
    )
    min_joints_seen: float = Field(
        0.5, ge=0, le=1, description="Listed as a poor pose below this share of (frame, joint) detected."
    )
    min_confidence: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Listed as a poor pose below this mean confidence of its detected joints.",
    )
    thumbnails_per_class: int = Field(
        8,
        ge=0,
        le=100,
        description="The first (worst) listed clips of each class that get an overlay thumbnail on the "
        "health page: a few frames with the skeleton, stored once per clip and pose tag.",
    )


class Config(StrictModel):
    """The whole configuration; :func:`load_config` builds it, ``model_dump(mode="json")`` logs it."""

    storage: StorageConfig = Field(default_factory=StorageConfig)
    plan: PlanConfig = Field(default_factory=PlanConfig)
    download: DownloadConfig = Field(default_factory=DownloadConfig)
    clip: ClipConfig = Field(default_factory=ClipConfig)
    pose: PoseConfig = Field(default_factory=PoseConfig)
    build: BuildConfig = Field(default_factory=BuildConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)


def overrides_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """``AR__PLAN__PER_CLASS=200`` -> ``{"plan": {"per_class": 200}}``."""
    tree: dict[str, Any] = {}
    for name, raw in sorted(environ.items()):
        if name.startswith(ENV_PREFIX):
            dotted = name[len(ENV_PREFIX) :].lower().replace("__", ".")
            set_dotted(tree, dotted, parse_scalar(raw), f"environment variable {name}")
    return tree


def overrides_from_pairs(pairs: Iterable[str]) -> dict[str, Any]:
    """``["plan.per_class=200"]`` -> ``{"plan": {"per_class": 200}}``."""
    tree: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected key=value, for example plan.per_class=200")
        key, value = pair.split("=", 1)
        set_dotted(tree, key.strip(), parse_scalar(value), f"--set {pair!r}")
    return tree


def load_config(
    path: str | Path | None = None,
    *,
    overrides: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Config:
    """Build the validated config from its sources.

    Args:
        path: Optional YAML file with sections as top-level keys.
        overrides: ``section.key=value`` strings (the CLI's ``--set``).
        environ: Environment to read ``AR__*`` variables from; ``os.environ`` when None.
        extra: A nested mapping applied last (CLI flags, Airflow Params).

    Raises:
        ConfigError: naming every invalid key, the value given and the valid range or choices.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(
                f"config file {path} must hold a mapping of sections, got {type(loaded).__name__}"
            )
        tree = merge_trees(tree, loaded or {})
    tree = merge_trees(tree, overrides_from_env(os.environ if environ is None else environ))
    tree = merge_trees(tree, overrides_from_pairs(overrides))
    if extra:
        tree = merge_trees(tree, extra)
    return validate_config(tree)


def validate_config(tree: Mapping[str, Any]) -> Config:
    """Validate a nested mapping into :class:`Config`, turning pydantic errors into one ConfigError."""
    try:
        return Config.model_validate(dict(tree))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, Config)) from None
