"""``action-recognition``: one sub-command per step, each a thin twin of a typed function.

Every command takes ``--config FILE.yaml``, ``--set section.key=value`` (repeatable) and ``--json``; with
``--json`` the last line of stdout is one JSON object summarising the result, for machines and for
DockerOperator's XCom. Logs go to stderr. Errors the user can fix exit with status 2 and one clear line.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from action_recognition import __version__
from action_recognition.errors import ActionRecognitionError, ConfigError

app = typer.Typer(
    name="action-recognition",
    help="Kinetics-style action recognition: plan, download, clip, pose, train, register.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML config file (sections as top-level keys).")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override one config value: section.key=value (repeatable).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON summary as the last line of stdout.")]
StorageOpt = Annotated[
    str | None, typer.Option("--storage", help="Storage root: a local folder or s3://bucket/prefix.")
]
LogOpt = Annotated[str, typer.Option("--log-level", help="Logging level for stderr.")]

T = TypeVar("T")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _run(step: Callable[[], T], *, as_json: bool, summarise: Callable[[T], dict[str, Any]],
         human: Callable[[T], str]) -> None:  # fmt: skip
    """Run a step; print its human summary or its JSON line; turn known errors into exit status 2."""
    try:
        result = step()
    except ActionRecognitionError as exc:
        _fail(exc, as_json)
    if as_json:
        typer.echo(json.dumps({"ok": True, **summarise(result)}, default=str, sort_keys=True))
    else:
        typer.echo(human(result))


def _fail(exc: ActionRecognitionError, as_json: bool) -> NoReturn:
    """A known error: one line on stderr, the JSON failure summary with --json, exit status 2."""
    typer.echo(f"error: {exc}", err=True)
    if as_json:
        typer.echo(json.dumps({"ok": False, "error": str(exc), "error_type": type(exc).__name__,
                               "retryable": exc.retryable}))  # fmt: skip
    raise typer.Exit(2) from None


def _load(path: Path | None, pairs: list[str] | None, extra: dict[str, Any] | None = None) -> Any:
    """The one validated config from ``--config``, the environment, ``--set`` and the command's own flags."""
    from action_recognition.config import load_config

    return load_config(path, overrides=pairs or (), extra=extra)


def _nested(**flat: Any) -> dict[str, Any]:
    """``{"plan.per_class": 5, "plan.seed": None}`` -> ``{"plan": {"per_class": 5}}`` (None = not given)."""
    tree: dict[str, Any] = {}
    for dotted, value in flat.items():
        if value is None:
            continue
        section, key = dotted.split("__", 1)
        tree.setdefault(section, {})[key] = value
    return tree


@app.command()
def plan(
    annotations: Annotated[
        list[str] | None,
        typer.Option("--annotations", help="Annotation CSV: a path or an http(s) URL (repeatable)."),
    ] = None,
    classes: Annotated[str | None, typer.Option("--classes", help='Exact class names, "a,b".')] = None,
    class_contains: Annotated[
        str | None, typer.Option("--class-contains", help="Every class whose name contains this word.")
    ] = None,
    all_classes: Annotated[bool, typer.Option("--all-classes", help="Every class in the sources.")] = False,
    per_class: Annotated[int | None, typer.Option("--per-class", help="Clips per class at most.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the per-class selection.")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Dataset name (lower case, -, _).")] = None,
    allow_mixed_versions: Annotated[
        bool, typer.Option("--allow-mixed-versions", help="Allow Kinetics versions to be mixed.")
    ] = False,
    storage: StorageOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
    log_level: LogOpt = "INFO",
) -> None:
    """Plan a dataset from Kinetics annotation CSVs: validate rows, select classes, cap, split, publish."""
    _setup_logging(log_level)
    from action_recognition.kinetics import plan_dataset
    from action_recognition.names import class_selector
    from action_recognition.storage import open_storage

    given = classes is not None or class_contains is not None or all_classes
    # More than one selector given: the config refuses it, naming each (the one rule, in PlanConfig).
    selector = class_selector(classes.split(",") if classes is not None else None, class_contains,
                              all_classes) if given else {}  # fmt: skip

    def step() -> Any:
        extra = _nested(
            plan__annotations=annotations or None, plan__per_class=per_class, plan__seed=seed,
            plan__dataset=dataset, plan__allow_mixed_versions=allow_mixed_versions or None,
            storage__uri=storage,
        )  # fmt: skip
        extra.setdefault("plan", {}).update(selector)
        cfg = _load(config, set_, extra)
        return plan_dataset(cfg.plan, open_storage(cfg.storage))

    _run(
        step,
        as_json=as_json,
        summarise=lambda r: r.summary(),
        human=lambda r: (
            f"planned {r.dataset}: {r.rows} clips in {len(r.classes)} classes "
            f"(splits {r.splits}), {r.rejected} rejected, {r.candidates} spare candidates\n"
            f"manifest {r.manifest_uri} (version {r.manifest_sha256[:12]}); "
            f"{len(r.written)} file(s) written"
        ),
    )


DatasetOpt = Annotated[str | None, typer.Option("--dataset", help="Dataset name (as planned).")]
ShardOpt = Annotated[str, typer.Option("--shard", help="I/N: this process handles shard I of N (from 0).")]


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="clip", file=sys.stderr, disable=not enabled, dynamic_ncols=True)


def _shard_size(cfg: Any, dataset: str, shard: tuple[int, int]) -> int:
    from action_recognition.ledger import shard_rows
    from action_recognition.manifest import read_manifest
    from action_recognition.storage import open_storage

    return len(shard_rows(read_manifest(open_storage(cfg.storage), dataset), shard))


@app.command()
def download(
    dataset: DatasetOpt = None,
    shard: ShardOpt = "0/1",
    url_template: Annotated[
        str | None, typer.Option("--url-template", help="Video URL with {youtube_id}; default YouTube watch URL.")
    ] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Concurrent downloads.")] = None,
    storage: StorageOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
    log_level: LogOpt = "INFO",
) -> None:
    """Download just the annotated segment of each clip of a shard into raw/; record each in the ledger."""
    _setup_logging(log_level)
    from action_recognition.download import download_shard
    from action_recognition.ledger import parse_shard
    from action_recognition.storage import open_storage

    def step() -> Any:
        cfg = _load(config, set_, _nested(
            plan__dataset=dataset, storage__uri=storage, download__url_template=url_template,
            download__workers=workers,
        ))  # fmt: skip
        part = parse_shard(shard)
        with _progress_bar(_shard_size(cfg, cfg.plan.dataset, part), "download", not as_json) as bar:
            return download_shard(cfg.plan.dataset, open_storage(cfg.storage), cfg.download, part,
                                  progress=bar.update)  # fmt: skip

    _run(step, as_json=as_json, summarise=lambda r: r.summary(),
         human=lambda r: f"download {r.dataset} shard {r.shard[0]}/{r.shard[1]}: {r.counts}, "
                         f"{r.downloaded} fetched ({r.bytes / 1e6:.1f} MB), {r.skipped} already done"
                         + (" - circuit breaker OPEN, rerun later" if r.breaker_open else ""))  # fmt: skip


@app.command()
def clip(
    dataset: DatasetOpt = None,
    shard: ShardOpt = "0/1",
    storage: StorageOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
    log_level: LogOpt = "INFO",
) -> None:
    """Re-encode each downloaded segment of a shard to its exact window, behind a quality gate."""
    _setup_logging(log_level)
    from action_recognition.clip import clip_shard
    from action_recognition.ledger import parse_shard
    from action_recognition.storage import open_storage

    def step() -> Any:
        cfg = _load(config, set_, _nested(plan__dataset=dataset, storage__uri=storage))
        part = parse_shard(shard)
        with _progress_bar(_shard_size(cfg, cfg.plan.dataset, part), "clip", not as_json) as bar:
            return clip_shard(cfg.plan.dataset, open_storage(cfg.storage), cfg.clip, part, progress=bar.update)

    _run(step, as_json=as_json, summarise=lambda r: r.summary(),
         human=lambda r: f"clip {r.dataset} shard {r.shard[0]}/{r.shard[1]} ({r.profile}): {r.counts}, "
                         f"{r.skipped} already done, {r.waiting} not downloaded")  # fmt: skip


@app.command()
def status(
    dataset: DatasetOpt = None,
    storage: StorageOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
    log_level: LogOpt = "WARNING",
) -> None:
    """Counts per ledger state and per class; rows in = sum of states."""
    _setup_logging(log_level)
    from action_recognition.ledger import status as ledger_status
    from action_recognition.storage import open_storage

    def step() -> Any:
        cfg = _load(config, set_, _nested(plan__dataset=dataset, storage__uri=storage))
        return ledger_status(open_storage(cfg.storage), cfg.plan.dataset)

    _run(step, as_json=as_json, summarise=lambda r: r.summary(), human=lambda r: r.table())


@app.command("top-up")
def top_up_cmd(
    dataset: DatasetOpt = None,
    storage: StorageOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
    log_level: LogOpt = "INFO",
) -> None:
    """Replace clips that failed for good with each class's next planned candidates (a new manifest version)."""
    _setup_logging(log_level)
    from action_recognition.ledger import PERMANENT, final_states
    from action_recognition.storage import open_storage
    from action_recognition.topup import top_up

    def step() -> Any:
        cfg = _load(config, set_, _nested(plan__dataset=dataset, storage__uri=storage))
        store = open_storage(cfg.storage)
        return top_up(store, cfg.plan.dataset, final_states(store, cfg.plan.dataset), PERMANENT)

    _run(step, as_json=as_json, summarise=lambda r: r.summary(),
         human=lambda r: f"top-up {r.dataset}: added {r.added or 'nothing'}; manifest version "
                         f"{r.previous_manifest_sha256[:12]} -> {r.manifest_sha256[:12]}"
                         + (f"; candidates exhausted for {', '.join(r.exhausted)}" if r.exhausted else ""))  # fmt: skip


TrackingOpt = Annotated[
    str | None, typer.Option("--tracking-uri", help="MLflow tracking URI (default MLFLOW_TRACKING_URI).")
]


@app.command()
def train(
    dataset: Annotated[str, typer.Option("--dataset", help="Keypoint or frames .npz: a path or s3:// URI.")],
    arch: Annotated[
        str | None, typer.Option("--arch", help="lstm, ddnet, stgcn, frame-resnet18, tsn-resnet18, r2plus1d-18.")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Epochs at most (early stopping may end sooner).")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of sampling, augmentation and init.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Dataset name for run and model names.")] = None,
    allow_untrained: Annotated[
        bool,
        typer.Option("--allow-untrained", help="RGB: train from random weights when pretrained ones cannot be had."),
    ] = False,
    resume: Annotated[
        bool | None,
        typer.Option("--resume/--no-resume", help="Continue a killed try from its last checkpoint (default: on)."),
    ] = None,
    manifest_uri: Annotated[
        str | None, typer.Option("--manifest-uri", help="Manifest the dataset came from (model card).")
    ] = None,
    tracking_uri: TrackingOpt = None,
    storage: StorageOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
    log_level: LogOpt = "INFO",
) -> None:
    """Train a model on a dataset file; track it in MLflow; report test metrics."""
    _setup_logging(log_level)
    from action_recognition.storage import open_storage
    from action_recognition.train import train_model

    def step() -> Any:
        cfg = _load(config, set_, _nested(
            train__arch=arch, train__epochs=epochs, train__seed=seed, train__allow_untrained=allow_untrained or None,
            train__resume=resume, train__tracking_uri=tracking_uri, storage__uri=storage,
        ))  # fmt: skip
        from action_recognition.pipeline import manifest_info

        store = open_storage(cfg.storage)
        manifest = manifest_info(store, name) if name else None
        if manifest_uri:
            manifest = {**(manifest or {}), "uri": manifest_uri}
        with _progress_bar(cfg.train.epochs, "train", not as_json) as bar:

            def tick(row: dict[str, float]) -> None:
                bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_acc=f"{row['val_acc']:.3f}")
                bar.update(1)

            return train_model(cfg.train, dataset, storage=store, dataset_name=name, manifest=manifest, progress=tick)

    _run(step, as_json=as_json, summarise=lambda r: r.summary(),
         human=lambda r: f"{r.arch}: test top-1 {r.metrics['test_top1']:.3f}, top-5 {r.metrics['test_top5']:.3f}, "
                         f"mean class acc {r.metrics['mean_class_acc']:.3f}; run {r.run_id}"
                         + (" (reused a finished run)" if r.reused else "")
                         + (" [UNTRAINED BACKBONE]" if r.untrained else ""))  # fmt: skip


@app.command()
def evaluate(
    model: Annotated[str, typer.Option("--model", help="models:/NAME@champion, models:/NAME/3 or runs:/ID/model.")],
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset .npz with the same classes.")],
    split: Annotated[str, typer.Option("--split", help="train, val or test.")] = "test",
    tracking_uri: TrackingOpt = None,
    as_json: JsonOpt = False,
    log_level: LogOpt = "INFO",
) -> None:
    """Score a logged or registered model on a dataset split with the standard metrics."""
    _setup_logging(log_level)
    from action_recognition.evaluate import evaluate_model

    def step() -> Any:
        return evaluate_model(model, dataset, tracking_uri=tracking_uri, split=split)

    _run(step, as_json=as_json,
         summarise=lambda m: {**m.scalars(f"{split}_"), "per_class_acc": m.per_class_acc, "model": model},
         human=lambda m: f"{model} on {split}: top-1 {m.top1:.3f}, top-5 {m.top5:.3f}, "
                         f"mean class acc {m.mean_class_acc:.3f}, macro-F1 {m.macro_f1:.3f} "
                         f"({m.samples} clips)")  # fmt: skip


@app.command()
def register(
    run_id: Annotated[str, typer.Option("--run-id", help="MLflow run whose model to register.")],
    name: Annotated[str, typer.Option("--name", help="Registered model name (one per model family).")],
    tracking_uri: TrackingOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
    log_level: LogOpt = "INFO",
) -> None:
    """Register a run's model (once per run) and set alias @challenger."""
    _setup_logging(log_level)
    from action_recognition.registry import register_run

    def step() -> Any:
        cfg = _load(config, set_)
        return register_run(run_id, name, cfg.registry, tracking_uri=tracking_uri or cfg.train.tracking_uri)

    _run(step, as_json=as_json, summarise=lambda r: r.summary(),
         human=lambda r: f"{'registered' if r.created else 'already registered'}: models:/{r.name}/{r.version} "
                         f"(aliases {', '.join(r.aliases)})")  # fmt: skip


@app.command()
def promote(
    name: Annotated[str, typer.Option("--name", help="Registered model name.")],
    margin: Annotated[float | None, typer.Option("--margin", help="How much better the challenger must be.")] = None,
    tracking_uri: TrackingOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
    log_level: LogOpt = "INFO",
) -> None:
    """Move @champion to @challenger when it beats the champion on the same test set by the margin."""
    _setup_logging(log_level)
    from action_recognition.registry import promote as do_promote

    def step() -> Any:
        cfg = _load(config, set_, _nested(registry__promotion_margin=margin))
        return do_promote(name, cfg.registry, tracking_uri=tracking_uri or cfg.train.tracking_uri)

    _run(step, as_json=as_json, summarise=lambda r: r.summary(),
         human=lambda r: f"{r.name}: {'PROMOTED' if r.promoted else 'kept the champion'} "
                         f"(challenger v{r.challenger_version}): {r.reason}")  # fmt: skip


@app.command()
def pose(
    dataset: DatasetOpt = None,
    shard: ShardOpt = "0/1",
    weights: Annotated[str | None, typer.Option("--weights", help="Ultralytics pose weights (.pt path).")] = None,
    untrained: Annotated[
        bool, typer.Option("--untrained", help="Random weights from the model yaml: tests and benchmarks only.")
    ] = False,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = None,
    storage: StorageOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
    log_level: LogOpt = "INFO",
) -> None:
    """Extract the main person's keypoints from every clip of a shard with Ultralytics YOLO pose."""
    _setup_logging(log_level)
    from action_recognition.ledger import parse_shard
    from action_recognition.pose.extract import pose_shard
    from action_recognition.storage import open_storage

    def step() -> Any:
        cfg = _load(config, set_, _nested(
            plan__dataset=dataset, storage__uri=storage, pose__weights=weights, pose__untrained=untrained or None,
            pose__device=device,
        ))  # fmt: skip
        part = parse_shard(shard)
        with _progress_bar(_shard_size(cfg, cfg.plan.dataset, part), "pose", not as_json) as bar:
            return pose_shard(cfg.plan.dataset, open_storage(cfg.storage), cfg.pose, cfg.clip, part,
                              progress=bar.update)  # fmt: skip

    _run(step, as_json=as_json, summarise=lambda r: r.summary(),
         human=lambda r: f"pose {r.dataset} shard {r.shard[0]}/{r.shard[1]} ({r.pose_tag}): {r.counts}, "
                         f"{r.frames} frames in {r.seconds:.1f} s"
                         + (" [UNTRAINED WEIGHTS]" if r.untrained else ""))  # fmt: skip


@app.command("build-dataset")
def build_dataset(
    dataset: DatasetOpt = None,
    kind: Annotated[str | None, typer.Option("--kind", help="keypoints or frames.")] = None,
    pose_tag: Annotated[
        str | None, typer.Option("--pose-tag", help="Which keypoints (default: from the pose config).")
    ] = None,
    frames: Annotated[int | None, typer.Option("--frames", help="T of the keypoint dataset.")] = None,
    storage: StorageOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
    log_level: LogOpt = "INFO",
) -> None:
    """Pack per-clip keypoints (and an MMAction2 pkl) or clip frames into one training file."""
    _setup_logging(log_level)
    from action_recognition.build import build_frames_dataset, build_keypoint_dataset
    from action_recognition.storage import open_storage

    def step() -> Any:
        cfg = _load(config, set_, _nested(
            plan__dataset=dataset, storage__uri=storage, build__kind=kind, build__frames=frames,
        ))  # fmt: skip
        store = open_storage(cfg.storage)
        if cfg.build.kind == "frames":
            return build_frames_dataset(cfg.plan.dataset, store, cfg.build, cfg.clip)
        tag = pose_tag
        if tag is None:
            from action_recognition.pose.extract import load_pose_model

            tag = load_pose_model(cfg.pose).tag(cfg.pose)
        return build_keypoint_dataset(cfg.plan.dataset, store, cfg.build, tag)

    _run(step, as_json=as_json, summarise=lambda r: r.summary(),
         human=lambda r: f"{r.kind} dataset {r.dataset_uri}: {r.samples} clips {r.splits}, excluded {r.excluded}"
                         + (" (already built)" if not r.built else ""))  # fmt: skip


@app.command()
def render(
    video: Annotated[Path, typer.Argument(help="A clip (normalised or not).")],
    keypoints: Annotated[Path, typer.Option("--keypoints", help="Per-clip keypoints .npz from the pose step.")],
    out: Annotated[Path, typer.Option("--out", help="Output mp4 with skeletons drawn.")],
    label: Annotated[str | None, typer.Option("--label", help="Text to draw in the corner.")] = None,
    as_json: JsonOpt = False,
    log_level: LogOpt = "INFO",
) -> None:
    """Draw the extracted skeletons over a clip (H.264 mp4)."""
    _setup_logging(log_level)
    import numpy as np

    from action_recognition.pose.render import render_overlay

    def step() -> Any:
        with np.load(keypoints, allow_pickle=False) as npz:
            people = npz["people"] if "people" in npz.files else npz["keypoints"]
            fps = json.loads(str(npz["meta"])).get("fps") if "meta" in npz.files else None
        return render_overlay(video, people, out, fps=fps, label=label)

    _run(step, as_json=as_json, summarise=lambda p: {"overlay": str(p)}, human=lambda p: f"wrote {p}")


@app.command()
def predict(
    video: Annotated[Path, typer.Argument(help="Any video file.")],
    model: Annotated[str, typer.Option("--model", help="models:/NAME@champion, models:/NAME/N or runs:/ID/model.")],
    overlay: Annotated[
        Path | None, typer.Option("--overlay", help="Also write the skeleton overlay mp4 with the label.")
    ] = None,
    weights: Annotated[str | None, typer.Option("--weights", help="Pose weights for keypoint models.")] = None,
    untrained: Annotated[bool, typer.Option("--untrained", help="Untrained pose weights (tests only).")] = False,
    tracking_uri: TrackingOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
    log_level: LogOpt = "INFO",
) -> None:
    """Clip, pose and classify a video; print the top-5 labels with probabilities."""
    _setup_logging(log_level)
    from action_recognition.predict import predict_video

    def step() -> Any:
        cfg = _load(config, set_, _nested(
            pose__weights=weights, pose__untrained=untrained or None,
        ))  # fmt: skip
        return predict_video(video, model, pose_config=cfg.pose, clip_config=cfg.clip,
                             tracking_uri=tracking_uri or cfg.train.tracking_uri, overlay=overlay)  # fmt: skip

    def human(p: Any) -> str:
        lines = [f"{p.video} ({p.model}){' [UNTRAINED]' if p.untrained else ''}:"]
        lines += [f"  {prob:6.1%}  {label}" for label, prob in p.top]
        if p.overlay:
            lines.append(f"overlay: {p.overlay}")
        return "\n".join(lines)

    _run(step, as_json=as_json, summarise=lambda p: p.summary(), human=human)


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option("--workdir", help="Where the demo keeps everything.")] = Path(".demo"),
    videos: Annotated[Path, typer.Option("--videos", help="Folder of the bundled real videos.")] = Path(
        "tests/fixtures/videos"
    ),
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs of each model.")] = 12,
    as_json: JsonOpt = False,
    log_level: LogOpt = "INFO",
) -> None:
    """Run the whole kinetics_pipeline DAG offline on the embedded defaults (SQLite, local folder, local MLflow)."""
    _setup_logging(log_level)
    from action_recognition.demo import run_demo

    def human(r: Any) -> str:
        lines = [f"demo finished in {r.workdir}: {r.summary.get('rows')} clips, states {r.summary.get('states')}"]
        for info in (r.summary.get("models") or {}).values():
            flag = ", UNTRAINED" if info["untrained"] else ""
            top1 = info["metrics"].get("test_top1", float("nan"))
            lines.append(f"  {info['champion']} (version {info['version']}{flag}): test top-1 {top1:.3f}")
        lines.append(f"storage: {r.storage}  (action-recognition status --storage {r.storage} --dataset demo)")
        video = (videos / "demo.mp4").resolve()
        lines += [
            "next:",
            f"  1. the runs and the registry:  mlflow ui --backend-store-uri {r.tracking_uri} --port 5000"
            "   (then http://127.0.0.1:5000)",
            f"  2. predict with the champion:  action-recognition predict {video} --model models:/demo-rgb@champion"
            f" --tracking-uri {r.tracking_uri}",
            "  3. the deployed shape, trigger it from the Airflow UI:  make stack-up",
        ]  # fmt: skip
        return "\n".join(lines)

    def step() -> Any:
        if not (videos / "demo.mp4").is_file():
            raise ConfigError(f"--videos {videos}: no demo.mp4 there; the bundled videos are in a checkout's "
                              "tests/fixtures/videos (run from the checkout, or pass --videos)")  # fmt: skip
        try:
            return run_demo(workdir, videos, epochs=epochs)
        except RuntimeError as exc:  # the DAG failed: the message names its log
            raise ActionRecognitionError(str(exc)) from exc

    _run(step, as_json=as_json, summarise=lambda r: r.as_dict(), human=human)


@app.command()
def smoke(
    workdir: Annotated[Path, typer.Option("--workdir", help="Where the smoke run keeps everything.")] = Path(".smoke"),
    annotations: Annotated[str | None, typer.Option("--annotations", help="Kinetics CSV (default: K700 val).")] = None,
    url_template: Annotated[str | None, typer.Option("--url-template", help="Default: YouTube.")] = None,
    pose_source: Annotated[str | None, typer.Option("--pose-weights-from", help="Pose weights URL or file.")] = None,
    backbone_source: Annotated[
        str | None, typer.Option("--backbone-weights-from", help="RGB backbone state dict URL or file.")
    ] = None,
    classes: Annotated[list[str] | None, typer.Option("--class", help="A class to use (repeat; default 3).")] = None,
    per_class: Annotated[int, typer.Option("--per-class", min=1)] = 3,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 30,
    as_json: JsonOpt = False,
    log_level: LogOpt = "INFO",
) -> None:
    """A networked machine's first real run (make smoke-online): the real Kinetics CSV, 3 classes x 3 clips, real
    YouTube, real weights pulled into storage, real training; per-step seconds, the ledger and the champions."""
    _setup_logging(log_level)
    from action_recognition import smoke as s

    options: dict[str, Any] = {
        "annotations": annotations,
        "url_template": url_template,
        "pose_source": pose_source,
        "backbone_source": backbone_source,
        "classes": tuple(classes) if classes else None,
    }
    kwargs = {k: v for k, v in options.items() if v is not None}  # fmt: skip

    def step() -> Any:
        try:
            return s.run_smoke(workdir, per_class=per_class, epochs=epochs, **kwargs)
        except RuntimeError as exc:  # the DAG failed: its log is named in the message
            raise ActionRecognitionError(str(exc)) from exc

    _run(step, as_json=as_json, summarise=lambda r: r.as_dict(), human=lambda r: r.table())


@app.command("demo-site")
def demo_site(
    folder: Annotated[Path, typer.Argument(help="Folder to write the site into.")],
    videos: Annotated[Path, typer.Option("--videos", help="Folder of the bundled real videos.")] = Path(
        "tests/fixtures/videos"
    ),
    per_class: Annotated[int, typer.Option("--per-class", help="Generated videos per demo class.", min=1)] = 6,
    as_json: JsonOpt = False,
) -> None:
    """Write the demo's "YouTube" (videos, annotation CSV, routes) for `serve-videos`."""
    from action_recognition.demo import build_demo_site

    _run(lambda: build_demo_site(folder, videos, per_class), as_json=as_json,
         summarise=lambda r: {"folder": str(folder), "videos": len(r)},
         human=lambda r: f"demo site in {folder}: {len(r)} videos")  # fmt: skip


@app.command("serve-videos")
def serve_videos(
    folder: Annotated[Path, typer.Argument(help="A folder made by `demo-site`.")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
    log_level: LogOpt = "INFO",
) -> None:
    """Serve a demo site over HTTP with Range support: /v/<youtube_id>.mp4 and the annotation CSVs at /<name>.csv."""
    _setup_logging(log_level)
    import time

    from action_recognition.demo import load_demo_site
    from action_recognition.localserve import VideoServer

    routes, files = load_demo_site(folder)
    with VideoServer(routes, host=host, port=port, files=files) as server:  # type: ignore[arg-type]
        logging.getLogger(__name__).info("serving %d videos and %s at %s", len(routes), sorted(files), server.base_url)
        while True:
            time.sleep(3600)


@app.command("docker-guard")
def docker_guard(
    listen: Annotated[str, typer.Option("--listen", help="host:port to serve the Docker API on.")] = "127.0.0.1:2375",
    engine: Annotated[
        str, typer.Option("--engine", help="The real engine: unix:///var/run/docker.sock or tcp://host:port.")
    ] = "unix:///var/run/docker.sock",
    allow_image: Annotated[
        list[str] | None, typer.Option("--allow-image", help="Image pattern a container may run (repeatable).")
    ] = None,
    allow_bind: Annotated[
        list[str] | None, typer.Option("--allow-bind", help="Host folder that may be bind-mounted (repeatable).")
    ] = None,
    allow_network: Annotated[
        list[str] | None, typer.Option("--allow-network", help="Network mode a container may use (repeatable).")
    ] = None,
    writable_binds: Annotated[
        bool, typer.Option("--writable-binds", help="Allow read-write bind mounts (default: read-only only).")
    ] = False,
    log_level: LogOpt = "INFO",
) -> None:
    """Serve the Docker API to Airflow, refusing privileged containers, host mounts and every call a step never
    makes (see action_recognition/dockerguard.py)."""
    import asyncio

    from action_recognition.dockerguard import Engine, Policy, serve

    _setup_logging(log_level)
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise typer.BadParameter(f"--listen must be host:port, got {listen!r}")
    defaults = Policy()
    policy = Policy(
        images=tuple(allow_image or defaults.images),
        bind_roots=tuple(allow_bind or ()),
        networks=tuple(allow_network or defaults.networks),
        read_only_binds=not writable_binds,
    )
    asyncio.run(serve(host, int(port), Engine(engine), policy))


@app.command()
def doctor(
    gpu: Annotated[bool, typer.Option("--gpu", help="A GPU is required (gpu_enabled).")] = False,
    skip: Annotated[list[str] | None, typer.Option("--skip", help="A check to leave out (repeatable).")] = None,
    storage: StorageOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
    log_level: LogOpt = "WARNING",
) -> None:
    """Can this machine do the job? ffmpeg, JavaScript runtime + EJS, yt-dlp's age, weights, GPU, storage, MLflow,
    annotation sources. A table (or one JSON line); exit status 2 naming every failure."""
    _setup_logging(log_level)
    from action_recognition.doctor import run_checks

    try:
        cfg = _load(config, set_, _nested(storage__uri=storage))
        report = run_checks(cfg, gpu=gpu, skip=tuple(skip or ()))
    except ActionRecognitionError as exc:
        _fail(exc, as_json)
    failed = "; ".join(f"{c.name}: {c.detail}" for c in report.failed)
    if as_json:
        extra = {"error": f"preflight failed: {failed}", "error_type": "DoctorError", "retryable": False}
        typer.echo(json.dumps({"ok": not report.failed, **report.summary(), **(extra if failed else {})},
                              sort_keys=True))  # fmt: skip
    else:
        typer.echo(report.table())
    if report.failed:
        typer.echo(f"error: preflight failed: {failed}", err=True)
        raise typer.Exit(2)


weights_app = typer.Typer(help="Weights are data: pull a file into storage once; steps read it from there.",
                          no_args_is_help=True)  # fmt: skip
app.add_typer(weights_app, name="weights")


@weights_app.command("pull")
def weights_pull(
    source: Annotated[str, typer.Argument(help="https URL (e.g. the Ultralytics release asset) or a local file.")],
    name: Annotated[str, typer.Option("--name", help="Name under weights/ in storage, e.g. yolo11n-pose.pt.")],
    sha256: Annotated[str | None, typer.Option("--sha256", help="Refuse a file with another sha256.")] = None,
    storage: StorageOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
    log_level: LogOpt = "INFO",
) -> None:
    """Fetch SOURCE into storage as weights/NAME once (its sha256 recorded): use the printed URI as pose.weights or
    train.backbone_weights. Defaults: yolo11n-pose.pt and resnet18-f37072fd.pth (action_recognition.weights)."""
    _setup_logging(log_level)
    from action_recognition.storage import open_storage
    from action_recognition.weights import pull

    def step() -> Any:
        cfg = _load(config, set_, _nested(storage__uri=storage))
        return pull(source, name, open_storage(cfg.storage), sha256=sha256)

    _run(step, as_json=as_json, summarise=lambda r: r.summary(),
         human=lambda r: f"{r.uri} sha256 {r.sha256} ({r.bytes} bytes, "
                         f"{'fetched' if r.fetched else 'already in storage'})")  # fmt: skip


@weights_app.command("pull-defaults")
def weights_pull_defaults(
    storage: StorageOpt = None,
    if_online: Annotated[
        bool, typer.Option("--if-online", help="Report unreachable sources instead of failing.")
    ] = False,
    aws_conn_id: Annotated[
        str | None, typer.Option("--aws-conn-id", help="Take the storage keys from this Airflow connection.")
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
    log_level: LogOpt = "INFO",
) -> None:
    """Pull the default pose model and RGB backbone (the stack's init runs this with --if-online)."""
    _setup_logging(log_level)
    from action_recognition.storage import open_storage
    from action_recognition.weights import pull_defaults

    def step() -> Any:
        if aws_conn_id:
            from action_recognition.airflow_adapter import apply_connection_env

            apply_connection_env(aws_conn_id)
        cfg = _load(config, set_, _nested(storage__uri=storage))
        return pull_defaults(open_storage(cfg.storage), if_online=if_online)

    def human(r: dict[str, Any]) -> str:
        return "\n".join(f"{name}: {info.get('uri') or 'NOT PULLED (' + info['skipped'] + '); later: ' + info['later']}"
                         for name, info in r.items())  # fmt: skip

    _run(step, as_json=as_json, summarise=lambda r: {"weights": r}, human=human)


@app.command()
def version() -> None:
    """Print the package version."""
    typer.echo(__version__)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
