"""The dataset health page as HTML: one self-contained document (no scripts, no external assets) rendered from
a ``health/<dataset>.json`` (:mod:`action_recognition.health`). The Airflow plugin
(``plugins/ar_provider/health_app``) serves it; every value that came from data is escaped."""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

from action_recognition.ledger import PENDING, STATES

COLORS = {
    "ok": "#2e9d5b",
    "unavailable": "#c0392b",
    "private": "#8e44ad",
    "removed": "#7f3d1b",
    "geo_blocked": "#d35400",
    "rate_limited": "#e67e22",
    "bad_input": "#95a5a6",
    "bad_media": "#b7950b",
    "retries_exhausted": "#e74c3c",
    "no_person": "#5d6d7e",
    "excluded": "#1f618d",
    PENDING: "#d5d8dc",
}
STYLE = """
body{font-family:system-ui,sans-serif;margin:16px;color:#1b1f24;font-size:14px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:20px 0 6px}
table{border-collapse:collapse;margin:4px 0}
td,th{padding:3px 8px;border-bottom:1px solid #e5e8eb;text-align:right}
th{background:#f4f6f8}td.l,th.l{text-align:left}.muted{color:#5f6b76}
.bar{display:flex;width:260px;height:14px;border-radius:3px;overflow:hidden;background:#eee}
.bar span{display:block;height:100%}.legend span{display:inline-block;margin-right:10px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:3px;border-radius:2px}
nav a{margin-right:10px}
table.review td:last-child{min-width:280px}img.thumb{max-width:320px;object-fit:contain;display:block}
"""


def _pct(n: int, total: int) -> str:
    return f"{n} <span class=muted>({100 * n / total:.0f}%)</span>" if total else "0"


def _bar(counts: dict[str, int], total: int) -> str:
    parts = [
        f'<span style="width:{100 * counts[s] / total:.2f}%;background:{COLORS.get(s, "#999")}" '
        f'title="{escape(s)}: {counts[s]}"></span>'
        for s in (*STATES, PENDING)
        if counts.get(s) and total
    ]
    return (
        f'<div class=bar role=img aria-label="{escape(", ".join(f"{k} {v}" for k, v in counts.items()))}">'
        f"{''.join(parts)}</div>"
    )


def _states_in(tables: list[dict[str, dict[str, int]]]) -> list[str]:
    seen = {s for table in tables for counts in table.values() for s, n in counts.items() if n}
    return [s for s in (*STATES, PENDING) if s in seen]


def _class_table(health: dict[str, Any]) -> str:
    classes = health["classes"]
    states = _states_in([{c["class"]: c["states"] for c in classes}])
    families = sorted({f for c in classes for f in c.get("test_accuracy", {})})
    head = (
        "<tr><th class=l>class</th><th>target</th><th>planned</th><th>usable</th><th class=l>final state</th>"
        + "".join(f"<th>{escape(s)}</th>" for s in states)
        + "".join(f"<th>{escape(f)} champion<br>test accuracy</th>" for f in families)
        + "</tr>"
    )
    rows = []
    for c in classes:
        total = c["planned"]
        acc = [c["test_accuracy"].get(f) for f in families]
        rows.append(
            "<tr>" + f"<td class=l>{escape(c['class'])}</td><td>{c.get('target') or ''}</td><td>{total}</td>"
            f"<td>{_pct(c['usable'], c.get('target') or total)}</td><td "
            f"class=l>{_bar(c['states'], total)}</td>"
            + "".join(f"<td>{_pct(c['states'].get(s, 0), total)}</td>" for s in states)
            + "".join(f"<td>{'' if a is None else f'{a:.2f}'}</td>" for a in acc)
            + "</tr>"
        )
    status = health["status"]
    total = status["rows"]
    rows.append(
        "<tr><th class=l>total</th><th></th>" + f"<th>{total}</th><th>{status['states'].get('ok', 0)}</th>"
        f"<th class=l>{_bar(status['states'], total)}</th>"
        + "".join(f"<th>{_pct(status['states'].get(s, 0), total)}</th>" for s in states)
        + "".join("<th></th>" for _ in families)
        + "</tr>"
    )
    legend = "".join(f'<span><i style="background:{COLORS[s]}"></i>{escape(s)}</span>' for s in states)
    return f"<table id=classes>{head}{''.join(rows)}</table><div class=legend>{legend}</div>"


def _stage_tables(health: dict[str, Any]) -> str:
    out = []
    for stage in ("download", "clip", "pose"):
        table = health["stages"].get(stage) or {}
        if not table:
            continue
        states = _states_in([table])
        title = f"{stage} ({escape(health.get('pose_tag') or '')})" if stage == "pose" else stage
        head = "<tr><th class=l>class</th>" + "".join(f"<th>{escape(s)}</th>" for s in states) + "</tr>"
        rows = "".join(
            "<tr>"
            + f"<td class=l>{escape(label)}</td>"
            + "".join(f"<td>{_pct(counts.get(s, 0), sum(counts.values()))}</td>" for s in states)
            + "</tr>"
            for label, counts in table.items()
        )
        out.append(f"<h3>{title}</h3><table class=stage data-stage={escape(stage)}>{head}{rows}</table>")
    if out:
        out.insert(
            0, "<p class=muted>Each stage counts the clips that reached it (the stage before succeeded).</p>"
        )
    return "".join(out)


def _history(health: dict[str, Any]) -> str:
    rows = []
    for h in health["top_ups"]:
        what = (
            f"plan: {h.get('rows', '')} clips"
            if h["what"] == "plan"
            else "top-up: " + ", ".join(f"{escape(k)} +{v}" for k, v in (h.get("added") or {}).items())
            or "nothing to add"
        )
        sha = h.get("manifest_sha256", "")
        rows.append(
            f"<tr><td>{h['version']}</td><td class=l>{what}</td><td class=l><code>{escape(sha[:12])}"
            f"</code></td></tr>"
        )
    return (
        (
            "<table id=history><tr><th>version</th><th class=l>what</th><th class=l>manifest</th></tr>"
            + "".join(rows)
            + "</table>"
        )
        if rows
        else "<p class=muted>no plan recorded</p>"
    )


def _failures(health: dict[str, Any]) -> str:
    if not health["failures"]:
        return "<p class=muted>no failures</p>"
    rows = "".join(
        f"<tr><td class=l>{escape(state)}</td><td class=l>{escape(f['stage'])}</td>"
        f"<td class=l>{escape(f['class'])}</td><td class=l><code>{escape(f['clip_id'])}</code></td>"
        f"<td class=l>{escape(f['reason'])}</td></tr>"
        for state, samples in sorted(health["failures"].items())
        for f in samples
    )
    return (
        "<table id=failures><tr><th class=l>state</th><th class=l>stage</th><th class=l>class</th>"
        f"<th class=l>clip</th><th class=l>reason</th></tr>{rows}</table>"
    )


def _champions(health: dict[str, Any]) -> str:
    if not health.get("champions"):
        return "<p class=muted>no champion yet (or the registry could not be read when this was written)</p>"
    items = "".join(
        f"<li>{escape(f)}: <code>{escape(c['model'])}</code>, test top-1 "
        f"{c['test_top1'] if c.get('test_top1') is None else format(c['test_top1'], '.3f')}"
        f"{' <b>UNTRAINED weights</b>' if c.get('untrained') else ''}</li>"
        for f, c in sorted(health["champions"].items())
    )
    return f"<ul>{items}</ul>"


def _retrains(health: dict[str, Any]) -> str:
    """Each family's newest retrain report: datasets, recipe and its source, clips added or lost and both
    models' accuracy per class, the decision."""
    reports = health.get("retrains") or {}
    if not reports:
        return "<p class=muted>no retrain yet</p>"
    parts = []
    for family, r in sorted(reports.items()):
        parts.append(f"<h3>{escape(family)}: {escape(r['decision'])}</h3>")
        if "recipe" not in r:  # a challenger no promote step has decided on yet
            parts.append(f"<p class=muted>challenger version {escape(r['challenger']['version'])}</p>")
            continue
        old, new = r.get("champion") or {}, r["challenger"]
        recipe = r["recipe"]
        source = escape(recipe["source"]) + (
            f" (champion run <code>{escape(recipe['champion_run'])}</code>)" if recipe["champion_run"] else ""
        )
        parts.append(
            f"<p class=retrain>{escape(r['reason'])}. Champion v{escape(str(old.get('version', '-')))} on "
            f"<code>{escape(str(old.get('dataset_uri', '-')))}</code>; challenger v{escape(new['version'])} "
            f"on <code>{escape(new['dataset_uri'])}</code>, {escape(recipe['arch'])}, "
            f"{escape(str(new.get('epochs', '')))} epochs; recipe from {source}; compared on "
            f"{escape(r['compared_on'] or 'nothing (no champion)')}.</p>"
        )
        rows = "".join(
            f"<tr><td class=l>{escape(label)}</td><td>{c['champion']}</td><td>{c['challenger']}</td>"
            f"<td>{c['change']:+d}</td><td>{_acc(r['per_class'].get(label, {}).get('champion'))}</td>"
            f"<td>{_acc(r['per_class'].get(label, {}).get('challenger'))}</td></tr>"
            for label, c in r["clips"].items()
        )
        parts.append(
            f"<table class=retrain-{escape(family)}><tr><th class=l>class</th><th>clips (champion)</th>"
            "<th>clips (challenger)</th><th>change</th><th>champion accuracy</th>"
            f"<th>challenger accuracy</th></tr>{rows}</table>"
        )
    return "".join(parts)


def _review(health: dict[str, Any]) -> str:
    """Each family's review of its latest dataset: per class, each listed clip with its evidence, and how to
    exclude it. (A summary written before the RGB review had one keypoint ``review``.)"""
    reviews = health.get("reviews") or ({"keypoint": health["review"]} if health.get("review") else {})
    if not reviews:
        return "<p class=muted>not reviewed yet (the review step runs after training)</p>"
    return "".join(_family_review(family, reviews[family]) for family in sorted(reviews))


def _family_review(family: str, review: dict[str, Any]) -> str:
    how = (
        f"{review['folds']}-fold out-of-sample scores of {escape(review['arch'])}, {review['epochs']} epochs"
    )
    poses = f", {review['poor_poses']} poor poses" if family == "keypoint" else ""
    head = (
        f"<h3>{escape(family)}</h3><p class=muted>{review['listed']} of {review['clips']} clips listed: "
        f"{review['label_issues']} probable label errors (cleanlab, {how}){poses}; "
        f"<code>{escape(review['dataset_uri'])}</code>. {_sentence(review.get('note') or '')}Exclude with "
        f"<code>action-recognition exclude --dataset {escape(review['dataset'])} CLIP_ID --reason "
        "TEXT</code> or the kinetics_review DAG.</p>"
    )
    rows = "".join(_review_row(label, i) for label, items in review["per_class"].items() for i in items)
    if not rows:
        return head
    return head + (
        f"<table id=review-{escape(family)} class=review><tr><th class=l>class</th><th class=l>clip</th>"
        f"<th class=l>{'frames and skeleton' if family == 'keypoint' else 'frames'}</th>"
        "<th class=l>split</th><th class=l>suggested (p)</th>"
        "<th>p(given)</th><th>label quality</th><th>joints seen</th><th>confidence</th>"
        f"<th class=l>why</th></tr>{rows}</table>"
    )


def _review_row(label: str, i: dict[str, Any]) -> str:
    cells = [
        f"<td class=l>{escape(label)}</td><td class=l><code>{escape(i['clip_id'])}</code></td>",
        f"<td class=l>{_thumbnail(i)}</td>",
        f"<td class=l>{escape(i['split'])}</td>",
        f"<td class=l>{escape(i['suggested'])} ({i['suggested_prob']:.2f})</td>",
        f"<td>{i['given_prob']:.2f}</td>",
        f"<td>{i['label_quality']:.2f}</td><td>{_fmt(i.get('joints_seen'), '.0%')}</td>",
        f"<td>{_fmt(i.get('mean_conf'), '.2f')}</td>",
        f"<td class=l>{escape('; '.join(i['why']))}</td>",
    ]
    return f"<tr>{''.join(cells)}</tr>"


def _sentence(text: str) -> str:
    """``text`` escaped, ending in a full stop and a space (nothing when empty)."""
    text = text.strip()
    return f"{escape(text)}{'' if text.endswith('.') else '.'} " if text else ""


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _thumbnail(item: dict[str, Any]) -> str:
    """The clip's overlay strip, served by the health app from storage at its key (relative to the page)."""
    key = item.get("thumbnail") or ""
    if not key:
        return "<span class=muted>-</span>"
    alt = f"{item['clip_id']}: frames with the skeleton"
    return f'<img class=thumb src="{escape(key)}" alt="{escape(alt)}" loading=lazy height=60>'


def _acc(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def render_page(health: dict[str, Any] | None, datasets: list[str], *, note: str = "") -> str:
    """The whole page for one dataset's health (or only the dataset list and ``note`` when there is none)."""
    nav = "".join(f'<a href="?dataset={quote(d)}">{escape(d)}</a>' for d in datasets)
    parts = [
        f"<!doctype html><html><head><meta charset=utf-8><title>Dataset health</title><style>{STYLE}</style>"
        f"</head><body><nav class=muted>datasets: {nav or 'none yet'}</nav>"
    ]
    if note:
        parts.append(f"<p class=note>{escape(note)}</p>")
    if health is not None:
        status = health["status"]
        written = f" by run <code>{escape(health['run_id'])}</code>" if health.get("run_id") else ""
        if health.get("live"):
            written = " now, from the ledgers (champions as of the last run)"
        live = f"?dataset={quote(health['dataset'])}&live=true"
        fresh = f'<a id=live href="{live}">recompute from the ledgers now</a>'
        states = ", ".join(f"{escape(k)} {v}" for k, v in status["states"].items())
        parts += [
            f"<h1>Dataset health: {escape(health['dataset'])}</h1>",
            f"<p class=muted>{status['rows']} clips planned: {states}"
            f"; written {escape(health['generated_at'])}{written} (the same numbers as "
            f"<code>action-recognition status --dataset {escape(health['dataset'])} --json</code>); "
            f"{fresh}</p>",
            "<h2>Classes: planned, usable, and why the rest was lost</h2>",
            _class_table(health),
            "<h2>Champions</h2>",
            _champions(health),
            "<h2>Retrain report</h2>",
            _retrains(health),
            "<h2>Review: clips that probably hurt the model</h2>",
            _review(health),
            "<h2>Each stage</h2>",
            _stage_tables(health),
            "<h2>Why clips were lost (samples)</h2>",
            _failures(health),
            "<h2>Manifest versions</h2>",
            _history(health),
        ]
    parts.append("</body></html>")
    return "".join(parts)
