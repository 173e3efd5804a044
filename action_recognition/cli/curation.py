"""Curation: ``review`` (the clips that probably hurt the model, with the evidence) and ``exclude`` (a
person's decision, recorded in the ledger)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from action_recognition.cli.common import Common, DatasetOpt, TrackingOpt, nested, step_command


@step_command()
def review(
    common: Common,
    dataset: Annotated[
        str, typer.Option("--dataset", help="A built keypoint or frames .npz: a path or s3:// URI.")
    ],
    folds: Annotated[int | None, typer.Option("--folds", help="k of the k-fold (review.folds).")] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Each fold's short schedule (review.epochs).")
    ] = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """List the clips of a built dataset that are probably mislabelled (cleanlab's confident learning on
    k-fold out-of-sample probabilities, with the family champion's recipe) or, for keypoints, badly posed;
    store the list (reviews/<dataset>/<sha>.json) and attach it to the champion's MLflow run. A frames
    dataset is reviewed once the RGB family has a champion."""
    from action_recognition.review import run_review

    def step() -> Any:
        cfg = common.load(nested(review__folds=folds, review__epochs=epochs, tracking__uri=tracking_uri))
        from action_recognition.storage import open_storage

        return run_review(cfg, dataset, open_storage(cfg.storage))

    def human(r: Any) -> str:
        lines = [
            f"{r.dataset} ({r.family}): {r.listed} of {r.clips} clips listed ({r.label_issues} probable "
            "label errors, "
            f"{r.poor_poses} poor poses; {r.folds} folds x {r.epochs} epochs of {r.arch}"
            + (", reused" if r.reused else "")
            + f") -> {r.review_uri or 'not stored'}"
            + (f"\nnote: {r.note}" if r.note else "")
        ]
        for label, items in r.per_class.items():
            for item in items:
                lines.append(f"  {label}: {item['clip_id']} ({item['split']}): {'; '.join(item['why'])}")
        return "\n".join(lines)

    common.run(step, summarise=lambda r: r.summary(), human=human)


@step_command()
def exclude(
    common: Common,
    clip_ids: Annotated[list[str], typer.Argument(help="Clip ids of the dataset (from its review list).")],
    dataset: DatasetOpt = None,
    reason: Annotated[str, typer.Option("--reason", help="Why: recorded with the exclusion.")] = "",
    by: Annotated[str | None, typer.Option("--by", help="Who decided (default: this user).")] = None,
) -> None:
    """Exclude clips from a dataset (ledger state `excluded`, with who, when and why): the next build leaves
    them out and the top-up replaces them with their class's next candidates."""
    from action_recognition.exclusions import exclude as do_exclude
    from action_recognition.storage import open_storage

    def step() -> Any:
        cfg = common.load(nested(plan__dataset=dataset))
        return do_exclude(open_storage(cfg.storage), cfg.plan.dataset, clip_ids, reason, by=by)

    def human(r: Any) -> str:
        done = f"{r.dataset}: excluded {len(r.excluded)} clip(s)" + (
            f", {len(r.already)} already excluded" if r.already else ""
        )
        return "\n".join([done, *(f"note: {n}" for n in r.notes)])

    common.run(step, summarise=lambda r: r.summary(), human=human)
