"""What a retrain changed, said once where people look: in the challenger's MLflow run and on the dataset
health page.

:func:`retrain_report` is written by the promote step after its decision: the dataset versions (the old
champion's and the challenger's: file, sha256), the clips per class each was trained and tested on (added,
lost), the challenger's recipe and where each key came from (the champion's run, the trigger, the defaults),
both models per class on the same test set (the champion re-evaluated on the challenger's when they differ),
and the decision. It goes to the challenger's run as ``retrain_report.json`` and ``retrain_report.md``;
:func:`latest_reports` reads the newest one of each family back for the health page (a challenger whose
promotion waits for a person's approval has none yet, and is shown as waiting).
"""

from __future__ import annotations

import csv
import io
from typing import Any

from action_recognition.names import FAMILIES, model_name
from action_recognition.recipe import (
    CLASS_COUNTS_ARTIFACT,
    RECIPE_SOURCES_ARTIFACT,
    TRAIN_CONFIG_ARTIFACT,
    run_artifact,
)

REPORT_ARTIFACT = "retrain_report.json"


def retrain_report(client: Any, promotion: Any) -> dict[str, Any]:
    """The report of ``promotion`` (a :class:`~action_recognition.registry.Promotion`), from the two
    versions' runs."""
    name = promotion.name
    challenger = _side(client, name, promotion.challenger_version)
    champion = _side(client, name, promotion.champion_version) if promotion.champion_version else None
    report: dict[str, Any] = {
        "model": name,
        "decision": "promoted" if promotion.promoted else "kept the champion",
        "reason": promotion.reason,
        "metric": promotion.metric,
        "challenger": {k: v for k, v in challenger.items() if not k.startswith("_")},
        "champion": {k: v for k, v in champion.items() if not k.startswith("_")} if champion else None,
        "compared_on": promotion.compared_on,
        "scores": {"challenger": promotion.challenger_score, "champion": promotion.champion_score},
        "recipe": {
            "source": challenger["_tags"].get("ar.recipe_source", "form"),
            "champion_run": challenger["_tags"].get("ar.recipe_champion_run", ""),
            "keys": (challenger["_sources"] or {}).get("keys", {}),
            "train": (challenger["_train"] or {}).get("train", {}),
            "arch": challenger["arch"],
        },
        "clips": _clip_changes(champion["_counts"] if champion else None, challenger["_counts"]),
        "per_class": _per_class(promotion, champion, challenger),
    }
    return report


def log_report(client: Any, report: dict[str, Any]) -> dict[str, Any]:
    """The report into the challenger's run, as JSON and as Markdown, and what the run now holds. A promote
    that repeats an earlier decision (a re-run: the challenger already is the champion) keeps the report
    that decision wrote, and an unchanged report is not written again."""
    from action_recognition.registry import ALREADY_CHAMPION

    run_id = report["challenger"]["run_id"]
    existing = run_artifact(client, run_id, REPORT_ARTIFACT)
    if existing is not None and (existing == report or report["reason"] == ALREADY_CHAMPION):
        return dict(existing)
    client.log_dict(run_id, report, REPORT_ARTIFACT)
    client.log_text(run_id, report_markdown(report), "retrain_report.md")
    return report


def report_markdown(report: dict[str, Any]) -> str:
    champion, challenger, scores = report["champion"] or {}, report["challenger"], report["scores"]
    rows = [
        ("version", champion.get("version"), challenger["version"]),
        ("dataset", champion.get("dataset_uri"), challenger["dataset_uri"]),
        ("dataset sha256", _short(champion, "dataset_sha256"), _short(challenger, "dataset_sha256")),
        ("arch", champion.get("arch"), challenger["arch"]),
        ("epochs", champion.get("epochs"), challenger.get("epochs")),
        (report["metric"], _num(scores["champion"]), _num(scores["challenger"])),
    ]
    recipe = report["recipe"]
    source = recipe["source"] + (
        f" (champion run {recipe['champion_run']})" if recipe["champion_run"] else ""
    )
    lines = [
        f"# Retrain report: {report['model']}",
        "",
        f"**Decision:** {report['decision']} ({report['reason']}).",
        "",
        "| | champion | challenger |",
        "|---|---|---|",
        *(f"| {what} | {old or '-'} | {new or '-'} |" for what, old, new in rows),
        "",
        f"Compared on {report['compared_on'] or 'nothing (no champion)'}. **Recipe:** {source}.",
        "",
        "| class | clips (champion) | clips (challenger) | change | acc. champion | acc. challenger |",
        "|---|---|---|---|---|---|",
    ]
    for label, row in report["clips"].items():
        acc = report["per_class"].get(label, {})
        lines.append(
            f"| {label} | {row['champion']} | {row['challenger']} | {row['change']:+d} | "
            f"{_num(acc.get('champion'))} | {_num(acc.get('challenger'))} |"
        )
    return "\n".join(lines) + "\n"


def latest_reports(client: Any, dataset: str) -> dict[str, dict[str, Any]]:
    """family -> the newest model version's retrain report (as :func:`retrain_report` wrote it), or
    ``{"decision": "waiting", ...}`` for a challenger that no promote step has decided on yet (a person's
    approval pending). Families with no version are left out."""
    from mlflow.exceptions import MlflowException

    out: dict[str, dict[str, Any]] = {}
    for family in FAMILIES:
        name = model_name(dataset, family)
        try:
            versions = client.search_model_versions(f"name='{name}'")
        except MlflowException:
            continue
        if not versions:
            continue
        newest = max(versions, key=lambda v: int(v.version))
        report = run_artifact(client, newest.run_id, REPORT_ARTIFACT)
        if report is None:
            waiting = "champion" not in (newest.aliases or [])
            report = {
                "model": name,
                "decision": "waiting for promotion or approval" if waiting else "promoted",
                "challenger": {"version": str(newest.version), "run_id": newest.run_id},
            }
        out[family] = report
    return out


def _side(client: Any, name: str, version: str) -> dict[str, Any]:
    """One model version's side of the report (``_``-keys: raw material, not reported as such)."""
    mv = client.get_model_version(name, version)
    run = client.get_run(mv.run_id)
    return {
        "version": str(mv.version),
        "run_id": mv.run_id,
        "arch": run.data.tags.get("ar.arch", ""),
        "dataset_uri": run.data.params.get("dataset_uri", ""),
        "dataset_sha256": run.data.tags.get("ar.dataset_sha256", ""),
        "test_set_sha256": run.data.tags.get("ar.test_set_sha256", ""),
        "epochs": run.data.params.get("train.epochs", ""),
        "_tags": run.data.tags,
        "_counts": run_artifact(client, mv.run_id, CLASS_COUNTS_ARTIFACT),
        "_sources": run_artifact(client, mv.run_id, RECIPE_SOURCES_ARTIFACT),
        "_train": run_artifact(client, mv.run_id, TRAIN_CONFIG_ARTIFACT),
        "_per_class": _per_class_csv(client, mv.run_id),
    }


def _clip_changes(
    old: dict[str, dict[str, int]] | None, new: dict[str, dict[str, int]] | None
) -> dict[str, dict[str, int]]:
    """class -> clips (all splits) in the champion's dataset, the challenger's, and the change."""

    def totals(counts: dict[str, dict[str, int]] | None) -> dict[str, int]:
        out: dict[str, int] = {}
        for per_class in (counts or {}).values():
            for label, n in per_class.items():
                out[label] = out.get(label, 0) + int(n)
        return out

    before, after = totals(old), totals(new)
    return {
        label: {
            "champion": before.get(label, 0),
            "challenger": after.get(label, 0),
            "change": after.get(label, 0) - before.get(label, 0),
        }
        for label in sorted(set(before) | set(after))
    }


def _per_class(promotion: Any, champion: dict[str, Any] | None, challenger: dict[str, Any]) -> dict[str, Any]:
    """class -> each model's accuracy on the challenger's test set (the champion's own when the test sets
    are the same, its re-evaluation when they differ; nothing when it was not compared)."""
    theirs = promotion.champion_per_class
    if theirs is None and champion and champion["test_set_sha256"] == challenger["test_set_sha256"]:
        theirs = champion["_per_class"]
    mine = challenger["_per_class"] or {}
    return {
        label: {"challenger": mine.get(label), "champion": (theirs or {}).get(label)}
        for label in sorted(set(mine) | set(theirs or {}))
    }


def _per_class_csv(client: Any, run_id: str) -> dict[str, float] | None:
    text = run_artifact(client, run_id, "per_class.csv", parse=False)
    if text is None:
        return None
    rows = csv.DictReader(io.StringIO(text))
    return {r["class"]: float(r["accuracy"]) for r in rows if r.get("accuracy")}


def _short(side: dict[str, Any] | None, key: str) -> str:
    return str(side[key])[:12] if side and side.get(key) else "-"


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"
