"""Models: ``train``, ``evaluate``, ``register``, ``promote``, ``predict``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from action_recognition.cli.common import (
    Common,
    TrackingOpt,
    nested,
    progress_bar,
    step_command,
)
from action_recognition.names import ARCH_NAMES

log = logging.getLogger(__name__)


@step_command()
def train(
    common: Common,
    dataset: Annotated[str, typer.Option("--dataset", help="Keypoint or frames .npz: a path or s3:// URI.")],
    arch: Annotated[
        str | None,
        typer.Option("--arch", help=f"One of {', '.join(ARCH_NAMES)} (default: by the dataset's kind)."),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Epochs at most (early stopping may end sooner).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of sampling, augmentation and init.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Dataset name for run and model names.")] = None,
    allow_untrained: Annotated[
        bool,
        typer.Option(
            "--allow-untrained", help="RGB: train from random weights when pretrained ones cannot be had."
        ),
    ] = False,
    resume: Annotated[
        bool | None,
        typer.Option(
            "--resume/--no-resume", help="Continue a killed try from its last checkpoint (default: on)."
        ),
    ] = None,
    manifest_uri: Annotated[
        str | None, typer.Option("--manifest-uri", help="Manifest the dataset came from (model card).")
    ] = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Train a model on a dataset file; track it in MLflow; report test metrics."""
    from action_recognition.storage import open_storage
    from action_recognition.train import train_model

    def step() -> Any:
        cfg = common.load(
            nested(
                train__arch=arch,
                train__epochs=epochs,
                train__seed=seed,
                train__allow_untrained=allow_untrained or None,
                train__resume=resume,
                tracking__uri=tracking_uri,
            )
        )
        from action_recognition.layout import dataset_name_of
        from action_recognition.pipeline import manifest_for

        store = open_storage(cfg.storage)
        dataset_name = name or dataset_name_of(dataset)  # a built file names its dataset: datasets/<name>/
        manifest = manifest_for(store, dataset_name, manifest_uri)
        with progress_bar(cfg.train.epochs, "train", not common.as_json) as bar:

            def tick(row: dict[str, Any]) -> None:
                shown = {"stage": row["stage"], "loss": f"{row['train_loss']:.3f}"}
                if "val_acc" in row:
                    shown["val_acc"] = f"{row['val_acc']:.3f}"
                bar.set_postfix(shown)
                if (
                    row["stage"] == "select"
                ):  # the bar counts the selection's epochs; each refit restarts the count
                    bar.update(1)

            return train_model(
                cfg.train,
                dataset,
                storage=store,
                tracking_uri=cfg.tracking.uri,
                dataset_name=dataset_name,
                manifest=manifest,
                progress=tick,
            )

    def human(r: Any) -> str:
        m = r.metrics
        return (
            f"{r.arch}: test top-1 {m['test_top1']:.3f}, top-5 {m['test_top5']:.3f}, mean class acc "
            f"{m['mean_class_acc']:.3f}; run {r.run_id}"
            + (" (reused a finished run)" if r.reused else "")
            + (" [UNTRAINED BACKBONE]" if r.untrained else "")
        )

    common.run(step, summarise=lambda r: r.summary(), human=human)


@step_command(storage=False, config=False)
def evaluate(
    common: Common,
    model: Annotated[
        str, typer.Option("--model", help="models:/NAME@champion, models:/NAME/3 or runs:/ID/model.")
    ],
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset .npz with the same classes.")],
    split: Annotated[str, typer.Option("--split", help="train, val or test.")] = "test",
    tracking_uri: TrackingOpt = None,
) -> None:
    """Score a logged or registered model on a dataset split with the standard metrics."""
    from action_recognition.evaluate import evaluate_model

    def step() -> Any:
        return evaluate_model(model, dataset, tracking_uri=tracking_uri, split=split)

    common.run(
        step,
        summarise=lambda m: {**m.scalars(f"{split}_"), "per_class_acc": m.per_class_acc, "model": model},
        human=lambda m: (
            f"{model} on {split}: top-1 {m.top1:.3f}, top-5 {m.top5:.3f}, "
            f"mean class acc {m.mean_class_acc:.3f}, macro-F1 {m.macro_f1:.3f} "
            f"({m.samples} clips)"
        ),
    )


@step_command(storage=False)
def register(
    common: Common,
    run_id: Annotated[str, typer.Option("--run-id", help="MLflow run whose model to register.")],
    name: Annotated[str, typer.Option("--name", help="Registered model name (one per model family).")],
    video: Annotated[
        bool, typer.Option("--video/--no-video", help="Also log and register <dataset>-video.")
    ] = True,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Register a run's model (once per run) and set alias @challenger; with it the video model that wraps
    it."""
    from action_recognition.registry import register_run
    from action_recognition.video_model import register_video
    from action_recognition.weights import WeightsError

    def step() -> Any:
        cfg = common.load()
        uri = tracking_uri or cfg.tracking.uri
        registered = register_run(run_id, name, cfg.registry, tracking_uri=uri)
        if video:
            try:
                wrapper = register_video(
                    run_id, registered, pose=cfg.pose, clip=cfg.clip, config=cfg.registry, tracking_uri=uri
                )
                registered.video = f"models:/{wrapper.name}/{wrapper.version}"
            except (
                WeightsError
            ) as exc:  # the family model stands on its own; say why no video model came with it
                log.warning("no video model for %s: %s", name, exc)
        return registered

    common.run(
        step,
        summarise=lambda r: r.summary(),
        human=lambda r: (
            f"{'registered' if r.created else 'already registered'}: models:/{r.name}/{r.version} "
            f"(aliases {', '.join(r.aliases)})"
        ),
    )


@step_command(storage=False)
def promote(
    common: Common,
    name: Annotated[str, typer.Option("--name", help="Registered model name.")],
    margin: Annotated[
        float | None, typer.Option("--margin", help="How much better the challenger must be.")
    ] = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Move @champion to @challenger when it beats the champion on the same test set by the margin (a
    challenger trained on new clips: the champion is re-evaluated on its test set first); the retrain report
    goes to the challenger's run."""
    from mlflow import MlflowClient

    from action_recognition.evaluate import evaluate_model
    from action_recognition.registry import promote as do_promote
    from action_recognition.retrain_report import log_report, retrain_report
    from action_recognition.video_model import sync_video_champion

    def step() -> Any:
        cfg = common.load(nested(registry__promotion_margin=margin))
        uri = tracking_uri or cfg.tracking.uri
        decision = do_promote(
            name,
            cfg.registry,
            tracking_uri=uri,
            reevaluate=lambda model, data: evaluate_model(model, data, tracking_uri=uri),
        )
        report = log_report(MlflowClient(uri), retrain_report(MlflowClient(uri), decision))
        decision.report = {k: report[k] for k in ("decision", "compared_on", "recipe")}
        if name.endswith(("-keypoint", "-rgb")):
            version = sync_video_champion(name, cfg.registry, tracking_uri=uri)
            decision.video_champion = (
                f"models:/{name.rpartition('-')[0]}-video/{version}" if version else None
            )
        return decision

    common.run(
        step,
        summarise=lambda r: r.summary(),
        human=lambda r: (
            f"{r.name}: {'PROMOTED' if r.promoted else 'kept the champion'} "
            f"(challenger v{r.challenger_version}): {r.reason}"
        ),
    )


@step_command(storage=False)
def predict(
    common: Common,
    video: Annotated[Path, typer.Argument(help="Any video file.")],
    model: Annotated[
        str, typer.Option("--model", help="models:/NAME@champion, models:/NAME/N or runs:/ID/model.")
    ],
    overlay: Annotated[
        Path | None, typer.Option("--overlay", help="Also write the skeleton overlay mp4 with the label.")
    ] = None,
    weights: Annotated[
        str | None, typer.Option("--weights", help="Pose weights for keypoint models.")
    ] = None,
    untrained: Annotated[
        bool, typer.Option("--untrained", help="Untrained pose weights (tests only).")
    ] = False,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Clip, pose and classify a video; print the top-5 labels with probabilities."""
    from action_recognition.predict import predict_video

    def step() -> Any:
        cfg = common.load(
            nested(
                pose__weights=weights,
                pose__untrained=untrained or None,
            )
        )
        return predict_video(
            video,
            model,
            pose_config=cfg.pose,
            clip_config=cfg.clip,
            tracking_uri=tracking_uri or cfg.tracking.uri,
            overlay=overlay,
        )

    def human(p: Any) -> str:
        lines = [f"{p.video} ({p.model}){' [UNTRAINED]' if p.untrained else ''}:"]
        lines += [f"  {prob:6.1%}  {label}" for label, prob in p.top]
        if p.overlay:
            lines.append(f"overlay: {p.overlay}")
        return "\n".join(lines)

    common.run(step, summarise=lambda p: p.summary(), human=human)
