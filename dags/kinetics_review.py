"""
### kinetics_review: a person excludes the clips that probably hurt the model, and the retrain follows
Reviews the latest keypoint and frames datasets of `dataset` (the `review` step: k-fold out-of-sample scores
with each family champion's recipe, cleanlab's confident learning for probable label errors, the pose figures
for poor poses; frames once the RGB family has a champion), shows the listed clips with their evidence in a
human-in-the-loop form (Required Actions), and excludes the ids a person enters, with the reason (ledger state
`excluded`, with who and when). Then it rebuilds both datasets without them and publishes the dataset assets,
so `kinetics_retrain` starts by itself and trains on the new version. The next `kinetics_pipeline` run's
top-up replaces excluded clips with their class's next candidates, like clips lost for good. The same from the
command line: `action-recognition review --dataset FILE` and `action-recognition exclude --dataset D
CLIP_ID... --reason TEXT`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import HITLEntryOperator
from airflow.sdk import Param, dag, task
from ar_provider.defaults import (
    FRAMES_DATASET,
    KEYPOINT_DATASET,
    LOST_TRY_RETRY,
    check_params,
    common_params,
    exclusion_args,
    find_latest_dataset,
    pose_params,
    preflight,
    review_task,
    runner_kwargs,
)
from ar_provider.operators import StepOperator

#: What the person reads (markdown): each listed clip with its evidence, per class.
REVIEW_BODY = """
{% for task in ['review_keypoint_dataset', 'review_frames_dataset'] %}
{% set r = ti.xcom_pull(task_ids=task) %}{% if r %}
**{{ r.family }}: {{ r.listed }} of {{ r.clips }} clips of `{{ r.dataset }}` listed**:
{{ r.label_issues }} probable label errors, {{ r.poor_poses }} poor poses
({{ r.folds }}-fold out-of-sample scores of `{{ r.arch }}`).
{{ r.note }}
{% for label, items in r.per_class.items() %}
**{{ label }}**
{% for i in items %}- `{{ i.clip_id }}` ({{ i.split }}): {{ i.why | join("; ") }}
{% endfor %}{% endfor %}{% endif %}{% endfor %}
Enter the ids to exclude (one a line) and why; none: nothing changes. An excluded clip leaves both datasets.
"""


@dag(
    dag_id="kinetics_review",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=LOST_TRY_RETRY,
    is_paused_upon_creation=False,
    doc_md=__doc__,
    tags=["action-recognition", "curation"],
    params={**pose_params(), **common_params(recipe="champion")},
)
def kinetics_review() -> None:
    run = runner_kwargs()

    datasets = [find_latest_dataset(run, kind) for kind in ("keypoints", "frames")]
    checks = preflight(run, skip=("ffmpeg", "javascript", "yt-dlp", "pose-weights", "annotations"))
    reviews = [review_task(run, f"find_{kind}_dataset", kind) for kind in ("keypoint", "frames")]
    choose = HITLEntryOperator(
        task_id="choose_exclusions",
        subject="Exclude clips of {{ params.dataset }}?",
        body=REVIEW_BODY,
        params={
            "clip_ids": Param([], type="array", items={"type": "string"}, description="Clip ids to exclude."),
            "reason": Param("", type="string", maxLength=500, description="Why (recorded with each)."),
        },
        response_timeout=timedelta(days=7),
        trigger_rule="none_failed_min_one_success",  # no frames dataset yet: the keypoint list alone
        retries=0,  # a person's answer is not asked twice
    )
    answer = exclusion_args("choose_exclusions")
    exclude = StepOperator(**run, task_id="exclude_clips", step="exclude", args=answer)
    builds = [
        StepOperator(**run, task_id=f"build_{kind}_dataset", step="build-dataset", args=["--kind", kind])
        for kind in ("keypoints", "frames")
    ]

    @task(outlets=[KEYPOINT_DATASET, FRAMES_DATASET])
    def publish(**context: Any) -> dict[str, Any]:
        """The new dataset versions, announced: kinetics_retrain starts from the asset."""
        ti = context["ti"]
        return {kind: ti.xcom_pull(task_ids=f"build_{kind}_dataset") for kind in ("keypoints", "frames")}

    check_params() >> checks >> datasets
    for found, review in zip(datasets, reviews, strict=True):
        found >> review >> choose
    choose >> answer
    exclude >> builds >> publish()


kinetics_review()
