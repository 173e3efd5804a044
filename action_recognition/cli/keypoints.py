"""Keypoints: ``pose``, ``build-dataset``, ``latest-dataset``, ``render``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from action_recognition.cli.common import (
    Common,
    DatasetOpt,
    ShardOpt,
    nested,
    progress_bar,
    shard_size,
    step_command,
)


@step_command()
def pose(
    common: Common,
    dataset: DatasetOpt = None,
    shard: ShardOpt = "0/1",
    weights: Annotated[
        str | None, typer.Option("--weights", help="Ultralytics pose weights (.pt path).")
    ] = None,
    untrained: Annotated[
        bool,
        typer.Option("--untrained", help="Random weights from the model yaml: tests and benchmarks only."),
    ] = False,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = None,
) -> None:
    """Extract the main person's keypoints from every clip of a shard with Ultralytics YOLO pose."""
    from action_recognition.ledger import parse_shard
    from action_recognition.pose.extract import pose_shard
    from action_recognition.storage import open_storage

    def step() -> Any:
        cfg = common.load(
            nested(
                plan__dataset=dataset,
                pose__weights=weights,
                pose__untrained=untrained or None,
                pose__device=device,
            )
        )
        part = parse_shard(shard)
        with progress_bar(shard_size(cfg, cfg.plan.dataset, part), "pose", not common.as_json) as bar:
            return pose_shard(
                cfg.plan.dataset, open_storage(cfg.storage), cfg.pose, cfg.clip, part, progress=bar.update
            )

    common.run(
        step,
        summarise=lambda r: r.summary(),
        human=lambda r: (
            f"pose {r.dataset} shard {r.shard[0]}/{r.shard[1]} ({r.pose_tag}): {r.counts}, "
            f"{r.frames} frames in {r.seconds:.1f} s" + (" [UNTRAINED WEIGHTS]" if r.untrained else "")
        ),
    )


@step_command("build-dataset")
def build_dataset(
    common: Common,
    dataset: DatasetOpt = None,
    kind: Annotated[str | None, typer.Option("--kind", help="keypoints or frames.")] = None,
    pose_tag: Annotated[
        str | None, typer.Option("--pose-tag", help="Which keypoints (default: from the pose config).")
    ] = None,
    frames: Annotated[int | None, typer.Option("--frames", help="T of the keypoint dataset.")] = None,
) -> None:
    """Pack per-clip keypoints (and an MMAction2 pkl) or clip frames into one training file."""
    from action_recognition.build import build_frames_dataset, build_keypoint_dataset
    from action_recognition.storage import open_storage

    def step() -> Any:
        cfg = common.load(
            nested(
                plan__dataset=dataset,
                build__kind=kind,
                build__frames=frames,
            )
        )
        store = open_storage(cfg.storage)
        if cfg.build.kind == "frames":
            return build_frames_dataset(cfg.plan.dataset, store, cfg.build, cfg.clip)
        from action_recognition.pose.extract import pose_tag_of

        return build_keypoint_dataset(cfg.plan.dataset, store, cfg.build, pose_tag or pose_tag_of(cfg.pose))

    common.run(
        step,
        summarise=lambda r: r.summary(),
        human=lambda r: (
            f"{r.kind} dataset {r.dataset_uri}: {r.samples} clips {r.splits}, excluded {r.excluded}"
            + (" (already built)" if not r.built else "")
        ),
    )


@step_command("latest-dataset", log_level="WARNING")
def latest_dataset(
    common: Common,
    dataset: DatasetOpt = None,
    kind: Annotated[str | None, typer.Option("--kind", help="keypoints or frames.")] = None,
) -> None:
    """The dataset file ``build-dataset`` last built (``latest-<kind>.json``): what a retrain or a review
    reads; skipped when none was built yet."""
    from action_recognition.pipeline import latest_dataset as latest
    from action_recognition.storage import open_storage

    def step() -> dict[str, Any]:
        cfg = common.load(nested(plan__dataset=dataset, build__kind=kind))
        found = latest(open_storage(cfg.storage), cfg.plan.dataset, cfg.build.kind)
        if found is None:
            where = f"{cfg.plan.dataset} in {cfg.storage.uri}"
            return {"nothing_to_do": f"no {cfg.build.kind} dataset of {where} yet"}
        return found

    common.run(
        step,
        summarise=lambda r: r,
        human=lambda r: r.get("nothing_to_do") or f"{r['dataset_uri']}",
    )


@step_command(storage=False, config=False)
def render(
    common: Common,
    video: Annotated[Path, typer.Argument(help="A clip (normalised or not).")],
    keypoints: Annotated[
        Path, typer.Option("--keypoints", help="Per-clip keypoints .npz from the pose step.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output mp4 with skeletons drawn.")],
    label: Annotated[str | None, typer.Option("--label", help="Text to draw in the corner.")] = None,
) -> None:
    """Draw the extracted skeletons over a clip (H.264 mp4)."""

    from action_recognition.pose.extract import load_people
    from action_recognition.pose.render import render_overlay

    def step() -> Any:
        people, fps = load_people(keypoints.read_bytes())
        return render_overlay(video, people, out, fps=fps, label=label)

    common.run(step, summarise=lambda p: {"overlay": str(p)}, human=lambda p: f"wrote {p}")
