"""
### kinetics_infer: label new videos with a registered video model

Classifies every video under a storage prefix (`input_prefix`, in the storage of `storage_uri`), or the clips
of a CSV of YouTube ids (`youtube_csv`, fetched first by the pipeline's own download and clip steps), with the
video model `model` (default `models:/<dataset>-video@champion`: the registered champion with its own pose
weights and clip settings). The alias is resolved once, by `plan_inference`: every shard uses that version,
and the output and the run's summary name it. `infer_videos` is mapped over shards of the videos (at most 64
tasks; GPU for the pose model when `gpu_enabled`); a file that is not a readable video ends in the ledger as
`bad_media` with the reason, like anywhere else. `collect_predictions` writes one CSV,
`inference/<dataset>/<key>/predictions.csv`: per video its state, label, probability, top-5 labels and
probabilities, and the model version (and an overlay mp4 per video with `overlays`). The same videos with the
same model version are the same `<key>`: a re-run redoes nothing.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from airflow.sdk import Param, dag, task
from ar_provider.defaults import (
    DOWNLOAD_POOL,
    LOST_TRY_RETRY,
    MAX_SHARDS,
    NETWORK_RETRY,
    check_params,
    common_params,
    preflight,
    runner_kwargs,
    url_template_param,
)
from ar_provider.operators import StepOperator

SHARED = ("dataset", "storage_uri", "runner", "gpu_enabled")
MODEL_URI = r"^models:/[A-Za-z0-9_.-]+(@[A-Za-z0-9_-]+|/\d+)$"


@dag(
    dag_id="kinetics_infer",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    default_args=LOST_TRY_RETRY,
    # Triggered by people and scripts only: a paused DAG would queue them for ever.
    is_paused_upon_creation=False,
    doc_md=__doc__,
    tags=["action-recognition", "inference"],
    params={
        "input_prefix": Param(
            "incoming/",
            type="string",
            minLength=1,
            maxLength=1024,
            pattern=r"^[A-Za-z0-9_./-]+$",
            description="Storage prefix of the videos to label (mp4, mkv, webm, avi, mov).",
        ),
        "youtube_csv": Param(
            None,
            type=["null", "string"],
            maxLength=2048,
            pattern="^(https?://|[^:]*$)",
            description="Or a CSV of youtube_id,time_start,time_end[,label] (a path or an http(s) "
            "URL): downloaded and clipped first, like the pipeline's clips.",
        ),
        "url_template": url_template_param(),
        "model": Param(
            None,
            type=["null", "string"],
            maxLength=300,
            pattern=MODEL_URI,
            description="Empty: models:/<dataset>-video@champion. Or models:/NAME@ALIAS, models:/NAME/N.",
        ),
        "videos_per_shard": Param(
            25,
            type="integer",
            minimum=1,
            maximum=10000,
            description="Videos per mapped infer task (at most 64 tasks).",
        ),
        "overlays": Param(False, type="boolean", description="Also write a labelled overlay mp4 per video."),
        **{name: param for name, param in common_params(recipe="form").items() if name in SHARED},
    },
)
def kinetics_infer() -> None:
    run = runner_kwargs()
    # Inference needs ffmpeg, storage and MLflow; the video model carries its own pose weights.
    checks = preflight(run, skip=("pose-weights", "backbone-weights", "annotations"), pools=(DOWNLOAD_POOL,))
    plan = StepOperator(
        **run,
        **NETWORK_RETRY,
        task_id="plan_inference",
        step="infer-plan",
        args=[
            "{{ '--youtube-csv' if params.youtube_csv else '--prefix' }}",
            "{{ params.youtube_csv or params.input_prefix }}",
            "--videos-per-shard",
            "{{ params.videos_per_shard }}",
            "{{ '--model' if params.model else '' }}",
            "{{ params.model or '' }}",
        ],
    )

    @task
    def shard_downloads(plan_result: dict[str, Any]) -> list[list[str]]:
        """YouTube ids: the pipeline's own download and clip steps over these shards of their manifest (none
        for a storage prefix: an empty mapping skips both)."""
        return list(plan_result["download_shards"])[:MAX_SHARDS]

    fetch = shard_downloads(plan.output)
    download = StepOperator.partial(
        **run, **NETWORK_RETRY, task_id="download_videos", step="download", pool=DOWNLOAD_POOL
    ).expand(args=fetch)
    clip = StepOperator.partial(**run, task_id="clip_videos", step="clip").expand(args=fetch)

    @task(trigger_rule="none_failed")
    def shard_videos(plan_result: dict[str, Any], **context: Any) -> list[list[str]]:
        """One argument list per shard (the model version resolved by plan_inference, the same for every
        shard)."""
        overlays = ["--overlays"] if context["params"]["overlays"] else []
        return [[*args, *overlays] for args in plan_result["shards"][:MAX_SHARDS]]

    shards = shard_videos(plan.output)
    infer = StepOperator.partial(
        **run, **NETWORK_RETRY, task_id="infer_videos", step="infer", gpu=True
    ).expand(args=shards)
    collect = StepOperator(
        **run,
        **NETWORK_RETRY,
        task_id="collect_predictions",
        step="infer-collect",
        args=["--key", "{{ ti.xcom_pull(task_ids='plan_inference')['key'] }}"],
    )

    @task
    def summarise(**context: Any) -> dict[str, Any]:
        """The model version, the videos per state and where the CSV is."""
        ti = context["ti"]
        planned, collected = (
            ti.xcom_pull(task_ids="plan_inference"),
            ti.xcom_pull(task_ids="collect_predictions"),
        )
        summary = {
            "model_uri": planned["model_uri"],
            "model_version": planned["model_version"],
            "videos": collected["videos"],
            "counts": collected["counts"],
            "predictions_uri": collected["predictions_uri"],
        }
        print(json.dumps(summary, sort_keys=True))
        return summary

    check_params() >> checks >> plan
    download >> clip >> shards
    infer >> collect >> summarise()


kinetics_infer()
