"""
### kinetics_pipeline: Kinetics annotations to registered action-recognition models

Plans a dataset from the official Kinetics CSVs (by default the 15 *dancing* classes of the original study),
downloads just the annotated 10 s of each video, clips and normalises it, extracts the main person's pose,
builds a keypoint and an RGB dataset, trains a model of each family, registers both in MLflow as `@challenger`
and promotes each to `@champion` when it beats the current one on the same test set (optionally after a person
approves).

Each step is one `action-recognition` CLI call: in the worker image (`runner=docker`, GPU for pose and
training) or as a local subprocess (`runner=local`). Download, clip and pose are mapped over shards of the
manifest (at most 64 tasks each); downloads share the `youtube_downloads` pool. XCom carries URIs, run ids and
counts only. Re-running a finished run creates no new object and no new model version.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param, dag, task
from ar_provider.defaults import (
    DEFAULT_ANNOTATIONS,
    DOWNLOAD_POOL,
    FRAMES_DATASET,
    KEYPOINT_DATASET,
    LOST_TRY_RETRY,
    MAX_SHARDS,
    NETWORK_RETRY,
    check_params,
    common_params,
    env_default,
    model_args,
    param_schema,
    pose_params,
    preflight,
    review_task,
    runner_kwargs,
    summarise,
    train_args,
    url_template_param,
)
from ar_provider.operators import StepOperator

from action_recognition.names import DEFAULT_PER_CLASS

#: What a person approving a promotion reads (markdown): each new challenger's test metrics and MLflow run.
APPROVAL_BODY = """
{% for family, task_id in [("Keypoint", "train_keypoint"), ("RGB", "train_rgb")] %}
{% set r = ti.xcom_pull(task_ids=task_id) %}{% if r %}
**{{ family }} challenger** `{{ r.arch }}`{{ " (UNTRAINED weights: a demo, not a model)" if r.untrained }}

| test top-1 | test top-5 | mean class accuracy | test clips | epochs | MLflow run |
|---|---|---|---|---|---|
| {{ "%.3f" % r.test_top1 }} | {{ "%.3f" % r.test_top5 }} | {{ "%.3f" % r.mean_class_acc }} \
| {{ r.test_samples | int }} | {{ r.epochs_run }}{% if r.refit_models %} \
+ {{ r.refit_models }} x {{ r.refit_epochs }} refit{% endif %} | `{{ r.run_id }}` |
{% endif %}{% endfor %}
Approving promotes each challenger that beats its current champion by `{{ params.promotion_margin }}`
(test top-1 on the same test set); rejecting keeps the champions.
"""


@dag(
    dag_id="kinetics_pipeline",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=LOST_TRY_RETRY,
    # No schedule: it runs only when someone triggers it. Paused (Airflow's default for a new DAG), a run
    # triggered through the REST API would wait in `queued` for ever; only the UI's trigger button unpauses.
    is_paused_upon_creation=False,
    doc_md=__doc__,
    tags=["action-recognition", "kinetics", "training"],
    render_template_as_native_obj=False,
    params={
        "annotations": Param(
            DEFAULT_ANNOTATIONS,
            type="array",
            minItems=1,
            maxItems=100,
            items={
                "type": "string",
                "minLength": 1,
                "maxLength": 2048,
                "pattern": "^(https?://|file://|[^:]*$)",
            },
            description="Kinetics annotation CSVs: paths or http(s) URLs.",
        ),
        # "null" in the type: the form shows these as optional, so its defaults can be submitted as they are.
        "classes": Param(
            None,
            type=["null", "array"],
            maxItems=1000,
            items={"type": "string", "maxLength": 200},
            description="Exact class names, one a line; they win over class_contains.",
        ),
        "class_contains": Param(
            "dancing",
            **param_schema(
                "class_contains",
                description="Every class whose name contains this word (used when classes is empty; both "
                "empty: all).",
            ),
        ),
        "per_class": Param(
            int(env_default("AR_PER_CLASS", str(DEFAULT_PER_CLASS))), **param_schema("per_class")
        ),
        "clips_per_shard": Param(
            25,
            type="integer",
            minimum=1,
            maximum=10000,
            description="Clips per mapped download/clip/pose task (at most 64 tasks).",
        ),
        "url_template": url_template_param(),
        **pose_params(),
        **common_params(recipe="form"),
    },
)
def kinetics_pipeline() -> None:
    run = runner_kwargs()
    plan = StepOperator(
        **run,
        **NETWORK_RETRY,
        task_id="plan_dataset",
        step="plan",
    )

    @task
    def shard_manifest(plan_result: dict[str, Any], **context: Any) -> list[list[str]]:
        """One argument list per shard of the manifest (references only: the rows stay in storage)."""
        from action_recognition.pipeline import shard_plan

        params = context["params"]
        # Based on the planned size, not today's rows: top-ups must not change the shard count of a dataset.
        shards = shard_plan(int(plan_result["planned"]), int(params["clips_per_shard"]), MAX_SHARDS)
        return [["--shard", s] for s in shards]  # dataset and storage: the validated Params (config_from)

    # The checks of `action-recognition doctor`, on the runner that will do the work (inside the worker image
    # for runner=docker): a missing JavaScript runtime, weights not in storage, a storage key that cannot
    # write, a wrong MLflow password or an annotation URL that moved fails here in seconds, every failure
    # named.
    checks = preflight(run, pools=(DOWNLOAD_POOL,))

    shards = shard_manifest(plan.output)
    fetch_kwargs = {**run, **NETWORK_RETRY, "step": "download", "pool": DOWNLOAD_POOL}
    download = StepOperator.partial(task_id="download_clips", **fetch_kwargs).expand(args=shards)
    clip = StepOperator.partial(**run, task_id="clip_videos", step="clip").expand(args=shards)
    top_up = StepOperator(**run, task_id="top_up_classes", step="top-up")
    download_more = StepOperator.partial(task_id="download_top_up", **fetch_kwargs).expand(args=shards)
    clip_more = StepOperator.partial(**run, task_id="clip_top_up", step="clip").expand(args=shards)
    pose = StepOperator.partial(**run, task_id="extract_pose", step="pose", gpu=True).expand(args=shards)
    build_keypoints = StepOperator(
        **run,
        task_id="build_keypoint_dataset",
        step="build-dataset",
        args=["--kind", "keypoints"],
    )
    build_frames = StepOperator(
        **run,
        task_id="build_frames_dataset",
        step="build-dataset",
        args=["--kind", "frames"],
    )
    train_keypoint = StepOperator(
        **run,
        task_id="train_keypoint",
        step="train",
        gpu=True,
        skip_unless="keypoint",
        args=train_args("{{ ti.xcom_pull(task_ids='build_keypoint_dataset')['dataset_uri'] }}"),
    )
    train_rgb = StepOperator(
        **run,
        task_id="train_rgb",
        step="train",
        gpu=True,
        skip_unless="rgb",
        args=train_args("{{ ti.xcom_pull(task_ids='build_frames_dataset')['dataset_uri'] }}"),
    )
    register_keypoint = StepOperator(
        **run,
        **NETWORK_RETRY,
        task_id="register_keypoint",
        step="register",
        args=[
            "--run-id",
            "{{ ti.xcom_pull(task_ids='train_keypoint')['run_id'] }}",
            *model_args("train_keypoint", "registered_model"),
        ],
    )
    register_rgb = StepOperator(
        **run,
        **NETWORK_RETRY,
        task_id="register_rgb",
        step="register",
        args=[
            "--run-id",
            "{{ ti.xcom_pull(task_ids='train_rgb')['run_id'] }}",
            *model_args("train_rgb", "registered_model"),
        ],
    )

    @task.branch(trigger_rule="none_failed_min_one_success")
    def choose_promotion_path(**context: Any) -> list[str]:
        """Straight to promotion, or through a person's approval first."""
        return ["approve_promotion" if context["params"]["require_approval"] else "no_approval_needed"]

    approve = ApprovalOperator(
        task_id="approve_promotion",
        subject="Promote the new challengers of {{ params.dataset }}?",
        body=APPROVAL_BODY,
        retries=0,  # a person's answer is not asked twice
    )
    no_approval = EmptyOperator(task_id="no_approval_needed")
    promote_kwargs = {
        **run,
        **NETWORK_RETRY,
        "step": "promote",
        "trigger_rule": "none_failed_min_one_success",
    }
    promote_keypoint = StepOperator(
        task_id="promote_keypoint",
        skip_unless="keypoint",
        args=model_args("register_keypoint", "name"),
        **promote_kwargs,
    )
    promote_rgb = StepOperator(
        task_id="promote_rgb",
        skip_unless="rgb",
        args=model_args("register_rgb", "name"),
        **promote_kwargs,
    )

    # The clips that probably hurt the model (label errors, poor poses), with each family champion's recipe:
    # the health page's Review section and an artifact of the champion's run; a person excludes from it.
    reviews = [
        review_task(run, f"build_{kind}_dataset", kind, trigger_rule="none_failed")
        for kind in ("keypoint", "frames")
    ]

    # The datasets are announced (the assets kinetics_retrain listens to) once this run has trained on them:
    # announced when built, the retrain would train the same data at the same time as this run, in a second
    # MLflow run. The summary: counts per ledger state, metrics, promoted or not; the health page published.
    steps, families = ("train", "register", "promote"), ("keypoint", "rgb")
    results = [f"{step}_{family}" for step in steps for family in families]
    done = summarise(run, results, trigger_rule="none_failed", outlets=[KEYPOINT_DATASET, FRAMES_DATASET])

    path = choose_promotion_path()
    check_params() >> checks >> plan
    download >> clip >> top_up >> download_more >> clip_more >> [pose, build_frames]
    pose >> build_keypoints >> train_keypoint >> register_keypoint
    build_frames >> train_rgb >> register_rgb
    [register_keypoint, register_rgb] >> path >> [approve, no_approval]
    [approve, no_approval] >> promote_keypoint
    [approve, no_approval] >> promote_rgb
    for review in reviews:
        [promote_keypoint, promote_rgb] >> review >> done


kinetics_pipeline()
