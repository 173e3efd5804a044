"""Batch inference: ``infer-plan``, ``infer``, ``infer-collect`` (the ``kinetics_infer`` DAG's steps)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from action_recognition.cli.common import (
    Common,
    DatasetOpt,
    ShardOpt,
    TrackingOpt,
    nested,
    progress_bar,
    step_command,
)

KeyOpt = Annotated[str, typer.Option("--key", help="The inference, as infer-plan named it.")]


@step_command("infer-plan")
def infer_plan(
    common: Common,
    prefix: Annotated[
        str | None, typer.Option("--prefix", help="Storage prefix of the videos, e.g. incoming/.")
    ] = None,
    youtube_csv: Annotated[
        str | None,
        typer.Option("--youtube-csv", help="Or a CSV of youtube_id,time_start,time_end[,label] (path/URL)."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="models:/NAME@ALIAS or /N; default <dataset>-video@champion."),
    ] = None,
    videos_per_shard: Annotated[int, typer.Option("--videos-per-shard", min=1, max=10000)] = 25,
    dataset: DatasetOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Resolve the model alias once and list the videos to classify (a storage prefix, or YouTube ids that the
    download and clip steps fetch first); print the shards' arguments."""
    from action_recognition.infer import plan_inference
    from action_recognition.storage import open_storage

    def step() -> Any:
        cfg = common.load(nested(plan__dataset=dataset))
        name = cfg.plan.dataset
        return plan_inference(
            open_storage(cfg.storage),
            name,
            model or f"models:/{name}-video@champion",
            prefix=prefix,
            youtube_csv=youtube_csv,
            clip_profile=cfg.clip.profile,
            cache_dir=cfg.plan.cache_dir,
            videos_per_shard=videos_per_shard,
            tracking_uri=tracking_uri or cfg.tracking.uri,
        )

    common.run(
        step,
        summarise=lambda p: p.summary(),
        human=lambda p: f"inference {p.key}: {p.videos} videos with {p.model_uri}, {len(p.shards)} shard(s)",
    )


@step_command("infer")
def infer(
    common: Common,
    key: KeyOpt,
    model: Annotated[
        str, typer.Option("--model", help="The resolved model, models:/NAME/N (from infer-plan).")
    ],
    shard: ShardOpt = "0/1",
    overlays: Annotated[
        bool, typer.Option("--overlays", help="Also write a labelled overlay mp4 per video.")
    ] = False,
    dataset: DatasetOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """Classify one shard of an inference's videos: answers and one ledger record per video."""

    from action_recognition.infer import infer_shard
    from action_recognition.ledger import parse_shard
    from action_recognition.storage import open_storage

    def step() -> Any:
        cfg = common.load(nested(plan__dataset=dataset, tracking__uri=tracking_uri))
        with progress_bar(0, "infer", not common.as_json) as bar:
            return infer_shard(
                open_storage(cfg.storage),
                cfg.plan.dataset,
                key,
                parse_shard(shard),
                model_uri=model,
                tracking_uri=cfg.tracking.uri,
                overlays=overlays,
                progress=bar.update,
            )

    common.run(
        step,
        summarise=lambda r: r.summary(),
        human=lambda r: f"infer {r.key} shard {r.shard[0]}/{r.shard[1]}: {r.counts} in {r.seconds:.1f} s",
    )


@step_command("infer-collect")
def infer_collect(common: Common, key: KeyOpt, dataset: DatasetOpt = None) -> None:
    """Join an inference's shards into predictions.csv and summary.json."""
    from action_recognition.infer import collect_predictions
    from action_recognition.storage import open_storage

    def step() -> Any:
        cfg = common.load(nested(plan__dataset=dataset))
        return collect_predictions(open_storage(cfg.storage), cfg.plan.dataset, key)

    common.run(
        step,
        summarise=lambda s: s.summary(),
        human=lambda s: f"{s.videos} videos with {s.model_uri}: {s.counts} -> {s.predictions_uri}",
    )
