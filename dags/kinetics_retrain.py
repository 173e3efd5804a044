"""
### kinetics_retrain: retrain, register and promote from the latest dataset

Runs weekly (Monday 04:00 UTC; a deployment sets its own cron, or `none`, in `AR_RETRAIN_SCHEDULE`) and
whenever `kinetics_pipeline` publishes a new keypoint dataset (the Airflow asset
`action_recognition_keypoint_dataset`). It finds the latest keypoint and frames datasets of the dataset
named in its Params, trains a model of each family, registers both as `@challenger` and promotes each to
`@champion` only when it beats the current champion on the same test set by the margin. A retrain on unchanged
data reuses the finished MLflow runs: no new run, no new model version.
"""

from __future__ import annotations

from airflow.sdk import dag
from ar_provider.defaults import (
    LOST_TRY_RETRY,
    NETWORK_RETRY,
    check_params,
    common_params,
    find_latest_dataset,
    model_args,
    preflight,
    publish_health,
    retrain_schedule,
    review_task,
    runner_kwargs,
    train_args,
)
from ar_provider.operators import StepOperator


@dag(
    dag_id="kinetics_retrain",
    schedule=retrain_schedule(),
    catchup=False,
    max_active_runs=1,
    default_args=LOST_TRY_RETRY,
    # Airflow pauses new DAGs by default: then neither the schedule nor the asset would ever start a retrain
    # on a fresh deployment. It only acts on data kinetics_pipeline publishes, so it is safe to run from the
    # start.
    is_paused_upon_creation=False,
    doc_md=__doc__,
    tags=["action-recognition", "training", "retraining"],
    params=common_params(recipe="champion"),
)
def kinetics_retrain() -> None:
    run = runner_kwargs()

    keypoints, frames = (find_latest_dataset(run, kind) for kind in ("keypoints", "frames"))
    # Retraining needs no downloads, pose or annotations: the training side of `doctor` only.
    checks = preflight(run, skip=("ffmpeg", "javascript", "yt-dlp", "pose-weights", "annotations"))
    check_params() >> checks >> [keypoints, frames]
    promote_kwargs = {**run, **NETWORK_RETRY, "step": "promote"}

    # The dataset health page's champions after this retrain (skipped when the dataset was never planned).
    health = publish_health(run, trigger_rule="none_failed")
    for family, found in (("keypoint", keypoints), ("rgb", frames)):
        source = f"find_{'keypoint' if family == 'keypoint' else 'frames'}_dataset"
        train = StepOperator(
            **run,
            task_id=f"train_{family}",
            step="train",
            gpu=True,
            skip_unless=family,
            args=train_args("{{ ti.xcom_pull(task_ids='" + source + "')['dataset_uri'] }}"),
        )
        register = StepOperator(
            **run,
            **NETWORK_RETRY,
            task_id=f"register_{family}",
            step="register",
            args=[
                "--run-id",
                "{{ ti.xcom_pull(task_ids='train_" + family + "')['run_id'] }}",
                *model_args(f"train_{family}", "registered_model"),
            ],
        )
        promote = StepOperator(
            task_id=f"promote_{family}",
            skip_unless=family,
            **promote_kwargs,
            args=model_args(f"register_{family}", "name"),
        )
        # The review of the dataset it trained on (reused when that file was reviewed before).
        review = review_task(run, source, source.removeprefix("find_").removesuffix("_dataset"))
        found >> train >> register >> promote >> review >> health


kinetics_retrain()
