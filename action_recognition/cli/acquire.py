"""Acquisition and bookkeeping: ``plan``, ``download``, ``clip``, ``status``, ``health``, ``summarise``,
``top-up``."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from action_recognition.cli.common import (
    Common,
    DatasetOpt,
    ShardOpt,
    TrackingOpt,
    nested,
    progress_bar,
    shard_size,
    step_command,
)


@step_command()
def plan(
    common: Common,
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
) -> None:
    """Plan a dataset from Kinetics annotation CSVs: validate rows, select classes, cap, split, publish."""
    from action_recognition.kinetics import plan_dataset
    from action_recognition.names import class_selector
    from action_recognition.storage import open_storage

    given = classes is not None or class_contains is not None or all_classes
    # More than one selector given: the config refuses it, naming each (the one rule, in PlanConfig).
    selector = (
        class_selector(classes.split(",") if classes is not None else None, class_contains, all_classes)
        if given
        else {}
    )

    def step() -> Any:
        extra = nested(
            plan__annotations=annotations or None,
            plan__per_class=per_class,
            plan__seed=seed,
            plan__dataset=dataset,
            plan__allow_mixed_versions=allow_mixed_versions or None,
        )
        extra.setdefault("plan", {}).update(selector)
        cfg = common.load(extra)
        return plan_dataset(cfg.plan, open_storage(cfg.storage))

    common.run(
        step,
        summarise=lambda r: r.summary(),
        human=lambda r: (
            f"planned {r.dataset}: {r.rows} clips in {len(r.classes)} classes "
            f"(splits {r.splits}), {r.rejected} rejected, {r.candidates} spare candidates\n"
            f"manifest {r.manifest_uri} (version {r.manifest_sha256[:12]}); "
            f"{len(r.written)} file(s) written"
        ),
    )


@step_command()
def download(
    common: Common,
    dataset: DatasetOpt = None,
    shard: ShardOpt = "0/1",
    url_template: Annotated[
        str | None,
        typer.Option("--url-template", help="Video URL with {youtube_id}; default YouTube watch URL."),
    ] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Concurrent downloads.")] = None,
) -> None:
    """Download just the annotated segment of each clip of a shard into raw/; record each in the ledger."""
    from action_recognition.download import download_shard
    from action_recognition.ledger import parse_shard
    from action_recognition.storage import open_storage

    def step() -> Any:
        cfg = common.load(
            nested(
                plan__dataset=dataset,
                download__url_template=url_template,
                download__workers=workers,
            )
        )
        part = parse_shard(shard)
        with progress_bar(shard_size(cfg, cfg.plan.dataset, part), "download", not common.as_json) as bar:
            return download_shard(
                cfg.plan.dataset, open_storage(cfg.storage), cfg.download, part, progress=bar.update
            )

    common.run(
        step,
        summarise=lambda r: r.summary(),
        human=lambda r: (
            f"download {r.dataset} shard {r.shard[0]}/{r.shard[1]}: {r.counts}, "
            f"{r.downloaded} fetched ({r.bytes / 1e6:.1f} MB), {r.skipped} already done"
            + (" - circuit breaker OPEN, rerun later" if r.breaker_open else "")
        ),
    )


@step_command()
def clip(
    common: Common,
    dataset: DatasetOpt = None,
    shard: ShardOpt = "0/1",
) -> None:
    """Re-encode each downloaded segment of a shard to its exact window, behind a quality gate."""
    from action_recognition.clip import clip_shard
    from action_recognition.ledger import parse_shard
    from action_recognition.storage import open_storage

    def step() -> Any:
        cfg = common.load(nested(plan__dataset=dataset))
        part = parse_shard(shard)
        with progress_bar(shard_size(cfg, cfg.plan.dataset, part), "clip", not common.as_json) as bar:
            return clip_shard(
                cfg.plan.dataset, open_storage(cfg.storage), cfg.clip, part, progress=bar.update
            )

    common.run(
        step,
        summarise=lambda r: r.summary(),
        human=lambda r: (
            f"clip {r.dataset} shard {r.shard[0]}/{r.shard[1]} ({r.profile}): {r.counts}, "
            f"{r.skipped} already done, {r.waiting} not downloaded"
        ),
    )


@step_command(log_level="WARNING")
def status(
    common: Common,
    dataset: DatasetOpt = None,
) -> None:
    """Counts per ledger state and per class; rows in = sum of states."""
    from action_recognition.ledger import status as ledger_status
    from action_recognition.storage import open_storage

    def step() -> Any:
        cfg = common.load(nested(plan__dataset=dataset))
        return ledger_status(open_storage(cfg.storage), cfg.plan.dataset)

    common.run(step, summarise=lambda r: r.summary(), human=lambda r: r.table())


RunIdsOpt = Annotated[
    str, typer.Option(help="The Airflow DAG id or run id that writes it (shown on the health page).")
]


@step_command()
def health(
    common: Common,
    dataset: DatasetOpt = None,
    write: Annotated[
        bool, typer.Option("--write", help="Publish it for the Airflow UI page (health/<dataset>.json).")
    ] = False,
    if_planned: Annotated[
        bool, typer.Option("--if-planned", help="Nothing to do when the dataset was never planned.")
    ] = False,
    dag_id: RunIdsOpt = "",
    run_id: RunIdsOpt = "",
    tracking_uri: TrackingOpt = None,
) -> None:
    """A dataset's health: status per class and stage, failure reasons, top-ups, the champions' per-class
    accuracy, the newest retrain reports and the reviews of its latest dataset files."""
    from action_recognition.health import full_health, write_health
    from action_recognition.manifest import read_plan_info
    from action_recognition.storage import open_storage

    def step() -> Any:
        cfg = common.load(nested(plan__dataset=dataset))
        store = open_storage(cfg.storage)
        if if_planned and read_plan_info(store, cfg.plan.dataset) is None:
            return {"nothing_to_do": f"{cfg.plan.dataset} was never planned in {cfg.storage.uri}"}
        report = full_health(store, cfg.plan.dataset, tracking_uri or cfg.tracking.uri)
        uri = write_health(store, report, dag_id=dag_id, run_id=run_id) if write else ""
        return report, uri

    def human(result: Any) -> str:
        if isinstance(result, dict):
            return str(result["nothing_to_do"])
        report, uri = result
        lines = [
            f"{c['class']}: {c['usable']} usable of {c['planned']} planned (target {c['target']}), "
            f"{c['states']}"
            for c in report.classes
        ]
        lines += [f"{f}: {c['model']} test top-1 {c['test_top1']}" for f, c in report.champions.items()]
        return "\n".join(lines + ([f"written: {uri}"] if uri else []))

    def summarise(result: Any) -> dict[str, Any]:
        return result if isinstance(result, dict) else {**result[0].summary(), "written": result[1]}

    common.run(step, summarise=summarise, human=human)


@step_command("summarise")
def summarise_run(
    common: Common,
    results: Annotated[
        str,
        typer.Option(
            "--results",
            help="JSON object: task id -> that step's JSON summary (train_, register_, promote_<family>; "
            "null for a skipped one).",
        ),
    ],
    dataset: DatasetOpt = None,
    dag_id: RunIdsOpt = "",
    run_id: RunIdsOpt = "",
    tracking_uri: TrackingOpt = None,
) -> None:
    """A pipeline run's summary (rows per ledger state, each family's metrics, promoted or not), and the
    dataset's health published for the Airflow UI page."""
    from action_recognition.errors import ConfigError
    from action_recognition.health import publish_health
    from action_recognition.pipeline import pipeline_summary
    from action_recognition.storage import open_storage

    def step() -> dict[str, Any]:
        try:
            given = json.loads(results)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--results is not JSON ({exc}): {results[:200]!r}") from exc
        if not isinstance(given, dict):
            raise ConfigError(f"--results must be a JSON object of task id -> summary, got {results[:200]!r}")
        cfg = common.load(nested(plan__dataset=dataset))
        store = open_storage(cfg.storage)
        summary = pipeline_summary(store, cfg.plan.dataset, given)
        summary["health_uri"] = publish_health(
            store,
            cfg.plan.dataset,
            dag_id=dag_id,
            run_id=run_id,
            tracking_uri=tracking_uri or cfg.tracking.uri,
        )
        return summary

    def human(summary: dict[str, Any]) -> str:
        lines = [f"{summary['dataset']}: {summary['rows']} rows {summary['states']}"]
        for family, m in summary["models"].items():
            promoted = "promoted" if m.get("promoted") else f"not promoted ({m.get('promotion_reason')})"
            lines.append(f"{family}: {m.get('arch')} test top-1 {m.get('test_top1')}, {promoted}")
        return "\n".join([*lines, f"health: {summary['health_uri']}"])

    common.run(step, summarise=lambda s: s, human=human)


@step_command("top-up")
def top_up_cmd(
    common: Common,
    dataset: DatasetOpt = None,
) -> None:
    """Replace clips that failed for good with each class's next planned candidates (a new manifest
    version)."""
    from action_recognition.ledger import PERMANENT, final_states
    from action_recognition.storage import open_storage
    from action_recognition.topup import top_up

    def step() -> Any:
        cfg = common.load(nested(plan__dataset=dataset))
        store = open_storage(cfg.storage)
        return top_up(store, cfg.plan.dataset, final_states(store, cfg.plan.dataset), PERMANENT)

    def human(r: Any) -> str:
        exhausted = f"; candidates exhausted for {', '.join(r.exhausted)}" if r.exhausted else ""
        return (
            f"top-up {r.dataset}: added {r.added or 'nothing'}; manifest version "
            f"{r.previous_manifest_sha256[:12]} -> {r.manifest_sha256[:12]}{exhausted}"
        )

    common.run(step, summarise=lambda r: r.summary(), human=human)
