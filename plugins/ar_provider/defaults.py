"""What both DAGs share: defaults read from the environment at parse time (no Variables, no I/O), the
trigger-form Params, and a factory for step tasks with the runner settings filled in."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import Asset, Param, task
from airflow.timetables.assets import AssetOrTimeSchedule
from airflow.timetables.trigger import CronTriggerTimetable

from action_recognition import names
from action_recognition.airflow_adapter import param_schema  # the Params' rules come from the config


def env_default(name: str, default: str) -> str:
    """A deployment default from the environment; unset and empty alike mean ``default`` (compose passes every
    optional setting through, empty when the deployment leaves it to the DAG)."""
    return os.environ.get(name) or default


KEYPOINT_DATASET = Asset("action_recognition_keypoint_dataset")
FRAMES_DATASET = Asset("action_recognition_frames_dataset")
#: When kinetics_retrain runs besides each new keypoint dataset: a cron in UTC (default Monday 04:00), or
#: ``none`` for the asset alone (the test deployments use it: a suite that crosses Monday 04:00 stays the
#: same).
RETRAIN_SCHEDULE = env_default("AR_RETRAIN_SCHEDULE", "0 4 * * 1")
DOWNLOAD_POOL = env_default("AR_DOWNLOAD_POOL", names.DOWNLOAD_POOL)
#: The Airflow AWS connection holding the storage keys (StepOperator's ``aws_conn_id`` default too).
STORAGE_CONN_ID = "ar_storage"
MAX_SHARDS = 64

#: The official Kinetics-700-2020 annotations (the original study used Kinetics-700 training clips).
K700 = "https://s3.amazonaws.com/kinetics/700_2020/annotations"
DEFAULT_ANNOTATIONS = [
    a for a in env_default("AR_ANNOTATIONS", f"{K700}/train.csv,{K700}/val.csv").split(",") if a
]


def retrain_schedule(cron: str = RETRAIN_SCHEDULE) -> Any:
    """kinetics_retrain's schedule: the keypoint asset, or the cron (UTC) as well. A new deployment waits for
    the next cron time (or the asset) instead of starting a retrain for the last one at once, before any
    dataset exists: ``run_immediately`` is a zero timedelta, because Airflow 3.1 reads ``False`` like ``None``
    (the last cron time still runs at once if it is less than a tenth of the period ago: up to 16.8 h after
    Monday 04:00)."""
    if cron.strip().lower() == "none":
        return KEYPOINT_DATASET
    timetable = CronTriggerTimetable(cron.strip(), timezone="UTC", run_immediately=timedelta(0))
    try:
        timetable.validate()
    except Exception as exc:  # AirflowTimetableInvalid: the DAG's import error names the setting
        raise ValueError(f"AR_RETRAIN_SCHEDULE={cron!r} is not a cron expression or 'none': {exc}") from exc
    return AssetOrTimeSchedule(timetable=timetable, assets=KEYPOINT_DATASET)


#: Retries with exponential backoff for steps that talk to the network (YouTube, S3, MLflow); none elsewhere.
NETWORK_RETRY: dict[str, Any] = {
    "retries": int(env_default("AR_NETWORK_RETRIES", "3")),
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=30),
}

#: Every other task (the DAGs' default_args): one more try when a try was lost rather than failed: its Celery
#: worker killed, its container OOM-killed, the api-server unreachable for longer than the heartbeat allows.
#: Steps are idempotent and a retry first removes the lost try's container; an error a step reports as not
#: retryable (bad configuration, bad input) still fails at once (AirflowFailException), so this never repeats
#: a real failure.
LOST_TRY_RETRY: dict[str, Any] = {"retries": 1, "retry_delay": timedelta(seconds=20)}


def preflight(run: dict[str, Any], *, skip: tuple[str, ...] = (), pools: tuple[str, ...] = ()) -> Any:
    """The ``preflight`` task every DAG starts with: ``doctor`` on the runner that does the work (``skip``:
    checks the DAG does not need) and the ``pools`` its tasks use, through Airflow's REST API
    (PreflightOperator). It gets the validated Params like every step (``train.allow_untrained`` included:
    the backbone check then allows random weights)."""
    from ar_provider.operators import PreflightOperator

    return PreflightOperator(
        **run,
        task_id="preflight",
        pools=pools,
        args=[
            "{{ '--gpu' if params.gpu_enabled else '' }}",
            *(a for name in skip for a in ("--skip", name)),
        ],
    )


def _mounts() -> list[Any]:
    """``AR_DOCKER_MOUNTS=/host/path:/container/path[:ro],...`` (e.g. a local storage folder for the docker
    runner)."""
    spec = env_default("AR_DOCKER_MOUNTS", "")
    if not spec:
        return []
    from docker.types import Mount

    mounts = []
    for item in spec.split(","):
        src, dst, *mode = item.split(":")
        mounts.append(Mount(target=dst, source=src, type="bind", read_only=mode == ["ro"]))
    return mounts


def step_threads() -> int | None:
    """``AR_STEP_THREADS``: torch's CPU threads in each step; unset or empty: every core. Where a host runs
    several steps at once (Celery worker concurrency, parallel tasks), its cores divided by that number."""
    raw = env_default("AR_STEP_THREADS", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(
            f"AR_STEP_THREADS must be a whole number of threads, at least 1 (or empty), got {raw!r}"
        )
    return int(raw)


def runner_kwargs() -> dict[str, Any]:
    """StepOperator arguments for the runner, image and Docker settings of this deployment."""
    return {
        "runner": "{{ params.runner }}",
        "gpu_enabled": "{{ params.gpu_enabled }}",
        "image": env_default("AR_WORKER_IMAGE", "action-recognition-worker:latest"),
        "docker_url": env_default("AR_DOCKER_URL", "unix://var/run/docker.sock"),
        "network_mode": os.environ.get("AR_DOCKER_NETWORK") or None,
        "mounts": _mounts(),
        "config_from": "check_params",
        "cpu_threads": step_threads(),
    }


def common_params(*, recipe: str) -> dict[str, Param]:
    """Params both DAGs show: where data lives, how steps run, what to train and promote. ``recipe``: the
    default of where training settings come from (champion: the retrain; form: the pipeline)."""
    return {
        "dataset": Param(
            env_default("AR_DATASET", "dance15"),
            **param_schema(
                "dataset", description="Dataset name: storage keys and registered model names derive from it."
            ),
        ),
        "storage_uri": Param(
            env_default("AR__STORAGE__URI", "./ar-data"),
            **param_schema(
                "storage_uri", description="Storage root: s3://bucket/prefix (MinIO) or a local folder."
            ),
        ),
        "runner": Param(
            env_default("AR_RUNNER", "local"),
            enum=["local", "docker"],
            description="docker: each step in the worker image (production); local: a subprocess.",
        ),
        "gpu_enabled": Param(
            env_default("AR_GPU", "false").lower() == "true",
            type="boolean",
            description="Request a GPU for pose and training containers (off where there is none).",
        ),
        "models": Param(
            list(names.FAMILIES),
            type="array",
            items={"enum": list(names.FAMILIES)},
            description="Which model families to train.",
        ),
        "keypoint_arch": Param(names.DEFAULT_KEYPOINT_ARCH, **param_schema("keypoint_arch")),
        "rgb_arch": Param(names.DEFAULT_RGB_ARCH, **param_schema("rgb_arch")),
        "recipe": Param(
            recipe,
            **param_schema(
                "recipe",
                description="Where the training settings come from. champion: the current champion's "
                "recipe (arch, epochs, learning rate, seeds... read from its MLflow run), except the fields "
                "below changed from their defaults in this trigger; form: this form's values and the "
                "deployment's defaults. No champion yet: the form's.",
            ),
        ),
        "epochs": Param(int(env_default("AR_EPOCHS", "80")), **param_schema("epochs")),
        "seed": Param(0, **param_schema("seed", description="Seed of the plan's sampling and of training.")),
        "rgb_allow_untrained": Param(
            env_default("AR_RGB_ALLOW_UNTRAINED", "false").lower() == "true",
            **param_schema(
                "rgb_allow_untrained", description="Train RGB from random weights if none can be had."
            ),
        ),
        "promotion_margin": Param(
            0.0,
            **param_schema(
                "promotion_margin",
                description="How much better (test top-1) a challenger must be to become champion.",
            ),
        ),
        "require_approval": Param(
            False, type="boolean", description="A person approves each promotion in the UI."
        ),
    }


def pose_params() -> dict[str, Param]:
    """The pose Params (the pose tag of the keypoints a build reads): the pipeline's and kinetics_review's."""
    return {
        "pose_weights": Param(
            os.environ.get("AR_POSE_WEIGHTS") or None,
            **param_schema(
                "pose_weights",
                type=["null", "string"],  # empty: the config's default
                description="YOLO pose weights in the worker (empty: the config's default, yolo11n-pose.pt).",
            ),
        ),
        "pose_untrained": Param(
            env_default("AR_POSE_UNTRAINED", "false").lower() == "true",
            **param_schema(
                "pose_untrained", description="Random pose weights: demos and tests only, tagged untrained."
            ),
        ),
    }


def url_template_param() -> Param:
    """Where videos come from (YouTube; a local server in tests and the demo)."""
    return Param(
        env_default("AR_URL_TEMPLATE", "https://www.youtube.com/watch?v={youtube_id}"),
        type="string",
        maxLength=2048,
        pattern="^https?://[^{}\\s]*[{]youtube_id[}][^{}\\s]*$",
        description="Where videos come from.",
    )


def train_args(dataset_xcom: str) -> list[str]:
    """Arguments of a train step: the dataset file, a template that renders the URI its build step returned.
    Everything else (the family's architecture, the epochs, random RGB weights allowed, the dataset's name) is
    the validated Params' (``--set`` from ``check_params``)."""
    return ["--dataset", dataset_xcom]


def model_args(source_task: str, key: str) -> list[str]:
    """``--name`` of a register or promote step: the registered model name as ``source_task`` returned it
    (the train step names it with :func:`action_recognition.names.model_name`; register passes it on)."""
    return ["--name", "{{ ti.xcom_pull(task_ids='" + source_task + "')['" + key + "'] }}"]


def bookkeeping(run: dict[str, Any]) -> dict[str, Any]:
    """StepOperator arguments of a bookkeeping step (find a dataset, summarise, publish the health page): a
    subprocess beside the scheduler's worker whatever the runner (a second of reading and writing small
    files, not worth a container), retried like every step that talks to storage and MLflow."""
    return {**run, **NETWORK_RETRY, "runner": "local", "mounts": []}


def find_latest_dataset(run: dict[str, Any], kind: str) -> Any:
    """``find_keypoint_dataset`` or ``find_frames_dataset``: the dataset file ``build-dataset`` last built
    (the ``latest-dataset`` step), skipped when none was built yet (e.g. the weekly retrain before the first
    kinetics_pipeline run). ``kind``: keypoints or frames."""
    from ar_provider.operators import StepOperator

    family = "keypoint" if kind == "keypoints" else kind
    return StepOperator(
        **bookkeeping(run),
        task_id=f"find_{family}_dataset",
        step="latest-dataset",
        args=["--kind", kind],
    )


def publish_health(run: dict[str, Any], **kwargs: Any) -> Any:
    """``publish_health``: the dataset health page after this run (the ``health --write`` step), skipped
    when the dataset was never planned."""
    from ar_provider.operators import StepOperator

    return StepOperator(
        **bookkeeping(run),
        **kwargs,
        task_id="publish_health",
        step="health",
        args=["--write", "--if-planned", *_run_ids()],
    )


def summarise(run: dict[str, Any], results: Sequence[str], **kwargs: Any) -> Any:
    """``summarise``: the run's summary from the JSON summaries of the ``results`` tasks (null when
    skipped), and the health page published (the ``summarise`` step)."""
    from ar_provider.operators import StepOperator

    pulled = ", ".join(f"'{t}': ti.xcom_pull(task_ids='{t}')" for t in results)
    return StepOperator(
        **bookkeeping(run),
        **kwargs,
        task_id="summarise",
        step="summarise",
        args=["--results", "{{ {" + pulled + "} | tojson }}", *_run_ids()],
    )


def _run_ids() -> list[str]:
    return ["--dag-id", "{{ ti.dag_id }}", "--run-id", "{{ ti.run_id }}"]


def review_task(run: dict[str, Any], dataset_task: str, kind: str = "keypoint", **kwargs: Any) -> Any:
    """The ``review`` step (``review_keypoint_dataset`` or ``review_frames_dataset``) on the dataset
    ``dataset_task`` returned (its ``dataset_uri``); the frames review only when the RGB family is trained."""
    from ar_provider.operators import StepOperator

    return StepOperator(
        **run,
        **kwargs,
        task_id=f"review_{kind}_dataset",
        skip_unless="rgb" if kind == "frames" else None,
        step="review",
        args=["--dataset", "{{ ti.xcom_pull(task_ids='" + dataset_task + "')['dataset_uri'] }}"],
    )


@task
def exclusion_args(answer_task: str, **context: Any) -> list[str]:
    """The ``exclude`` step's arguments from a person's answer to ``answer_task`` (a HITLEntryOperator with
    ``clip_ids`` and ``reason``): the ids, the reason and who answered. No id chosen: nothing to exclude, the
    rest of the run is skipped."""
    from airflow.sdk.exceptions import AirflowSkipException

    answer = context["ti"].xcom_pull(task_ids=answer_task) or {}
    given = answer.get("params_input") or {}
    ids = [str(i).strip() for i in given.get("clip_ids") or [] if str(i).strip()]
    if not ids:
        raise AirflowSkipException("no clip chosen: nothing excluded")
    who = answer.get("responded_by_user") or {}
    by = who.get("name") or who.get("id") or "airflow" if isinstance(who, dict) else str(who)
    return [*ids, "--reason", str(given.get("reason") or ""), "--by", str(by)]


@task
def check_params(**context: Any) -> dict[str, Any]:
    """Every Param through the one validated config before any work: a value the form's schema let through but
    the steps would refuse (a storage scheme, a weights path) fails here, named, instead of hours later."""
    from airflow.sdk.exceptions import AirflowFailException

    from action_recognition.airflow_adapter import (
        config_from_params,
        overrides_from_params,
        trigger_overrides,
    )
    from action_recognition.errors import ConfigError

    try:
        cfg = config_from_params(context["params"])
    except ConfigError as exc:  # the same Params fail the same way: no retry
        raise AirflowFailException(str(exc)) from exc
    # Steps receive exactly these overrides (StepOperator config_from): what was validated here is what runs.
    overrides = overrides_from_params(context["params"])
    # With recipe=champion, the train keys this run's trigger set keep their value (the rest: the champion's).
    conf = getattr(context.get("dag_run"), "conf", None) or {}
    overrides.setdefault("train", {})["recipe_overrides"] = trigger_overrides(conf, _param_defaults(context))
    return {"dataset": cfg.plan.dataset, "storage_uri": cfg.storage.uri, "overrides": overrides}


def _param_defaults(context: Any) -> dict[str, Any]:
    """The DAG's Param defaults (what the form shows before a person changes anything)."""
    params = getattr(context.get("dag"), "params", None)
    if params is None:
        return {}
    return {name: params.get_param(name).value for name in params}
