"""DAG integrity: imports, nothing heavy or stateful at parse, the task graph, the Params, parse time, the
links."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.airflow import ROOT, airflow_env

sys.path.insert(0, str(ROOT / "plugins"))

pytestmark = pytest.mark.check  # `make check`: under a minute, before every commit


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import os

    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow-home")))
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_dags_import_cleanly(bag: Any) -> None:
    assert bag.import_errors == {}
    assert set(bag.dags) == {"kinetics_infer", "kinetics_pipeline", "kinetics_retrain", "kinetics_review"}
    for dag_id, dag in bag.dags.items():
        assert Path(dag.fileloc).stem == dag_id, "dag_id is the file stem"
        assert dag.doc_md and dag.tags


def test_parse_is_light_and_stateless(tmp_path: Path) -> None:
    """In a fresh process, with a database URL that cannot work: parsing needs no DB, no connection, no torch.
    (How long it takes is a benchmark's question, against a one-task DAG: ``python -m
    benchmarks.bench_parse``.)"""
    code = f"""
import json, sys
sys.path.insert(0, {str(ROOT / "plugins")!r})
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={str(ROOT / "dags")!r})
heavy = sorted(m for m in ("torch", "ultralytics", "mlflow", "yt_dlp", "cv2", "boto3", "pandas") if m in sys.modules)
print(json.dumps({{"errors": list(bag.import_errors), "dags": sorted(bag.dags), "heavy": heavy}}))
"""
    env = airflow_env(
        tmp_path,
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:////nonexistent/dir/airflow.db",
        AIRFLOW_CONN_AR_STORAGE="",
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["errors"] == [] and report["dags"] == [
        "kinetics_infer",
        "kinetics_pipeline",
        "kinetics_retrain",
        "kinetics_review",
    ]
    assert report["heavy"] == [], f"heavy modules imported at parse: {report['heavy']}"


def _upstream(dag: Any, task_id: str) -> set[str]:
    return set(dag.get_task(task_id).upstream_task_ids)


def test_infer_graph(bag: Any) -> None:
    dag = bag.dags["kinetics_infer"]
    assert _upstream(dag, "preflight") == {"check_params"}
    assert _upstream(dag, "plan_inference") == {"preflight"}
    assert _upstream(dag, "shard_downloads") == {"plan_inference"}
    assert _upstream(dag, "download_videos") == {"shard_downloads"}
    assert _upstream(dag, "clip_videos") == {"download_videos", "shard_downloads"}
    assert _upstream(dag, "shard_videos") == {"plan_inference", "clip_videos"}
    assert dag.get_task("shard_videos").trigger_rule == "none_failed", "a prefix skips download and clip"
    assert dag.get_task("download_videos").partial_kwargs["pool"] == "youtube_downloads"
    assert _upstream(dag, "infer_videos") == {"shard_videos"}
    assert type(dag.get_task("infer_videos")).__name__ == "MappedOperator", "mapped over shards of the videos"
    assert _upstream(dag, "collect_predictions") == {"infer_videos"}
    assert _upstream(dag, "summarise") == {"collect_predictions"}
    assert (
        not dag.get_task("plan_inference").args[-1]
        or "params.model" in dag.get_task("plan_inference").args[-1]
    )
    assert dag.params["model"] is None and dag.params["input_prefix"] == "incoming/"
    assert dag.is_paused_upon_creation is False, "triggered from the UI or the API, never left queued"


def test_pipeline_graph(bag: Any) -> None:
    dag = bag.dags["kinetics_pipeline"]
    assert _upstream(dag, "preflight") == {"check_params"}
    assert _upstream(dag, "plan_dataset") == {"preflight"}, "no work before the preflight checks pass"
    assert _upstream(dag, "shard_manifest") == {"plan_dataset"}
    assert _upstream(dag, "download_clips") == {"shard_manifest"}
    assert _upstream(dag, "clip_videos") == {"download_clips", "shard_manifest"}
    assert _upstream(dag, "top_up_classes") == {"clip_videos"}
    assert _upstream(dag, "extract_pose") == {"clip_top_up", "shard_manifest"}
    assert _upstream(dag, "build_keypoint_dataset") == {"extract_pose"}
    assert _upstream(dag, "build_frames_dataset") == {"clip_top_up"}
    assert _upstream(dag, "train_keypoint") == {"build_keypoint_dataset"}
    assert _upstream(dag, "train_rgb") == {"build_frames_dataset"}, "the two families train in parallel"
    assert _upstream(dag, "choose_promotion_path") == {"register_keypoint", "register_rgb"}
    assert _upstream(dag, "promote_keypoint") == {"approve_promotion", "no_approval_needed"}
    for review in ("review_keypoint_dataset", "review_frames_dataset"):
        assert _upstream(dag, review) == {"promote_keypoint", "promote_rgb"}
    assert _upstream(dag, "summarise") == {"review_keypoint_dataset", "review_frames_dataset"}, (
        "the health page gets both reviews"
    )
    assert dag.get_task("review_frames_dataset").skip_unless == "rgb"
    for task_id in ("download_clips", "clip_videos", "download_top_up", "clip_top_up", "extract_pose"):
        assert type(dag.get_task(task_id)).__name__ == "MappedOperator", (
            f"{task_id} is mapped over the shards"
        )
    download = dag.get_task("download_clips")
    assert download.partial_kwargs["pool"] == "youtube_downloads"
    assert download.partial_kwargs["retry_exponential_backoff"] is True
    train = dag.get_task("train_keypoint")
    assert (train.retries, train.retry_exponential_backoff) == (1, False), (
        "one more try for a lost try, no backoff"
    )
    assert dag.get_task("approve_promotion").retries == 0, "a person is not asked twice"
    assert dag.is_paused_upon_creation is False, (
        "a run triggered through the REST API must not wait in queued"
    )
    assert dag.get_task("plan_dataset").retry_exponential_backoff
    assert dag.get_task("extract_pose").partial_kwargs["gpu"] is True
    assert dag.get_task("train_rgb").gpu is True
    assert [a.name for a in dag.get_task("summarise").outlets] == [
        "action_recognition_keypoint_dataset",
        "action_recognition_frames_dataset",
    ], "announced after this run's own training, so the retrain never races it"
    assert not dag.get_task("build_keypoint_dataset").outlets


#: The tasks that are not steps, and why each may be one: Airflow-side wiring (the validated Params, a branch,
#: a person's answer, reshaping one step's XCom into the next one's mapped arguments, announcing assets).
#: Everything that reads or writes storage or MLflow is a StepOperator running an ``action-recognition`` step.
NOT_STEPS = {
    "check_params": "validates the Params into the overrides every step receives",
    "shard_manifest": "the plan step's size -> one argument list per shard",
    "shard_downloads": "the inference plan's download shards -> mapped arguments",
    "shard_videos": "the inference plan's shards -> mapped arguments",
    "summarise": "kinetics_infer: the plan's and the collect step's XComs, side by side",
    "choose_promotion_path": "a branch on the require_approval Param",
    "approve_promotion": "a person's approval (Required Actions)",
    "no_approval_needed": "the other branch",
    "choose_exclusions": "a person's answer (Required Actions)",
    "exclusion_args": "that answer -> the exclude step's arguments",
    "publish": "kinetics_review: announces the rebuilt datasets (the assets)",
}
#: What a non-step task's code must not touch: storage, the registry, the ledgers (a step's job).
STEP_WORK = (
    "storage_for",
    "open_storage",
    "mlflow",
    "MlflowClient",
    "action_recognition.services",
    "action_recognition.health",
    "action_recognition.manifest",
    "action_recognition.ledger",
)


def test_dags_only_wire_steps(bag: Any) -> None:
    """Every task that does work is a StepOperator (one CLI step, on either runner); the rest only wire."""
    import inspect

    from ar_provider.operators import StepOperator

    for dag_id, dag in bag.dags.items():
        for task in dag.tasks:
            operator = task.operator_class if hasattr(task, "operator_class") else type(task)
            if isinstance(operator, type) and issubclass(operator, StepOperator):
                continue
            assert task.task_id in NOT_STEPS, f"{dag_id}.{task.task_id} ({operator}) is not a StepOperator"
            callable_ = getattr(task, "python_callable", None)
            if callable_ is None and hasattr(task, "partial_kwargs"):
                callable_ = task.partial_kwargs.get("python_callable")
            if callable_ is not None:
                source = inspect.getsource(callable_)
                touched = [word for word in STEP_WORK if word in source]
                assert not touched, f"{dag_id}.{task.task_id} does a step's work ({touched}): make it a step"


def test_bookkeeping_steps_run_beside_the_scheduler(bag: Any) -> None:
    """Finding a dataset, summarising and publishing health are steps too, run as subprocesses on any
    runner (seconds of small reads and writes), retried like every step that talks to services."""
    checks = {
        "kinetics_pipeline": {"summarise": "summarise"},
        "kinetics_retrain": {
            "find_keypoint_dataset": "latest-dataset",
            "find_frames_dataset": "latest-dataset",
            "publish_health": "health",
        },
        "kinetics_review": {
            "find_keypoint_dataset": "latest-dataset",
            "find_frames_dataset": "latest-dataset",
        },
    }
    for dag_id, tasks in checks.items():
        for task_id, step in tasks.items():
            task = bag.dags[dag_id].get_task(task_id)
            assert (task.step, task.runner, task.retry_exponential_backoff) == (step, "local", True), task_id
    args = bag.dags["kinetics_pipeline"].get_task("summarise").args
    assert "ti.xcom_pull(task_ids='promote_rgb')" in args[1] and args[1].endswith("| tojson }}")


def test_retrain_is_scheduled_and_asset_triggered(bag: Any) -> None:
    dag = bag.dags["kinetics_retrain"]
    timetable = dag.timetable
    assert "AssetOrTimeSchedule" in type(timetable).__name__
    assert "0 4 * * 1" in timetable.summary or "0 4 * * 1" in str(timetable.description)
    assert _upstream(dag, "train_keypoint") == {"find_keypoint_dataset"}
    assert _upstream(dag, "find_keypoint_dataset") == {"preflight"}
    assert _upstream(dag, "promote_rgb") == {"register_rgb"}
    assert _upstream(dag, "review_frames_dataset") == {"promote_rgb"}, (
        "reviewed with the new champion's recipe"
    )
    assert _upstream(dag, "publish_health") == {"review_keypoint_dataset", "review_frames_dataset"}
    assert dag.is_paused_upon_creation is False, "a paused retrain DAG never starts on a fresh deployment"
    from airflow.timetables.base import TimeRestriction

    first = timetable.next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(earliest=None, latest=None, catchup=False),
    )
    now = datetime.now(UTC)
    assert first is not None and now < first.run_after <= now + timedelta(days=7), (
        f"the first scheduled retrain is the next Monday, not a missed one at once: {first}"
    )


def test_a_deployment_sets_its_own_retrain_schedule() -> None:
    """``AR_RETRAIN_SCHEDULE``: another cron, or ``none`` for the asset alone; a cron that is not one fails the
    parse (an import error in the UI) rather than never running."""
    from airflow.timetables.base import TimeRestriction
    from ar_provider.defaults import KEYPOINT_DATASET, retrain_schedule

    assert retrain_schedule(" None ") is KEYPOINT_DATASET
    daily = retrain_schedule("30 2 * * *")
    first = daily.next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(earliest=None, latest=None, catchup=False),
    )
    now = datetime.now(UTC)
    assert first is not None and now < first.run_after <= now + timedelta(days=1)
    assert (first.run_after.hour, first.run_after.minute) == (2, 30)
    with pytest.raises(ValueError, match="AR_RETRAIN_SCHEDULE='every monday' is not a cron"):
        retrain_schedule("every monday")


@pytest.mark.parametrize("dag_id", ["kinetics_pipeline", "kinetics_retrain"])
def test_the_form_can_be_submitted_with_its_defaults(bag: Any, dag_id: str) -> None:
    """Airflow's trigger form marks a Param required unless its type allows null; an empty default ("" or [])
    of a required Param keeps the Trigger button disabled. Every default must also pass its own schema."""
    params = bag.dags[dag_id].params
    for name in params:
        param = params.get_param(name)
        types = param.schema.get("type", [])
        types = [types] if isinstance(types, str) else types
        if param.value in ("", [], None):
            assert "null" in types, (
                f"{dag_id}.{name}: empty default {param.value!r} but the form requires a value"
            )
        param.resolve()  # raises ParamValidationError when the default breaks the schema


def test_params_default_to_the_original_study(bag: Any) -> None:
    from airflow.sdk import Param

    params = bag.dags["kinetics_pipeline"].params
    assert params["class_contains"] == "dancing"
    assert params["per_class"] == 200
    assert params["models"] == ["keypoint", "rgb"]
    assert params["runner"] in ("local", "docker")
    schema = params.get_param("per_class").schema
    assert schema["minimum"] == 1 and schema["type"] == "integer"
    with pytest.raises(Exception, match=r"less than the minimum|minimum"):
        Param(0, **schema).resolve()
    with pytest.raises(Exception, match=r"pattern|does not match"):
        Param("Bad Name", **params.get_param("dataset").schema).resolve()
    assert params.get_param("runner").schema["enum"] == ["local", "docker"]


def test_shards_stay_under_100_tasks() -> None:
    from action_recognition.pipeline import shard_plan

    assert len(shard_plan(1000, 25, 64)) == 40
    assert len(shard_plan(100_000, 25, 64)) == 64
    assert shard_plan(3, 25, 64) == ["0/1"]


def test_links(monkeypatch: pytest.MonkeyPatch) -> None:
    from ar_provider import links

    values = {"run_id": "abc", "experiment_id": "7", "dataset_uri": "s3://bkt/ar/datasets/d/keypoints-1.npz"}
    monkeypatch.setattr(links.XCom, "get_value", classmethod(lambda cls, ti_key, key: values))
    monkeypatch.setenv("AR_MLFLOW_UI_URL", "http://mlflow:5000")
    monkeypatch.setenv("AR_STORAGE_UI_URL", "http://minio:9001")
    assert links.MLflowRunLink().get_link(None, ti_key=None) == "http://mlflow:5000/#/experiments/7/runs/abc"
    assert (
        links.StoragePrefixLink().get_link(None, ti_key=None) == "http://minio:9001/browser/bkt/ar/datasets/d"
    )
    values.clear()
    assert links.MLflowRunLink().get_link(None, ti_key=None) == ""


def test_steps_get_the_params_once_through_check_params(bag: Any) -> None:
    """Config-bearing Params reach a step only as check_params' validated overrides (config_from), never again
    as Jinja arguments: the architectures, RGB from random weights and the dataset's name included (model names
    come from the train step's own result). What templates may still name: the runner and the GPU switch (how
    a step runs, not what it computes), and the inference DAG's own inputs (which videos, which model, how many
    per task)."""
    import re

    from action_recognition.airflow_adapter import PARAM_KEYS

    allowed = {
        "gpu_enabled",
        "runner",
        "input_prefix",
        "youtube_csv",
        "model",
        "videos_per_shard",
    }
    checked: list[str] = []
    for dag in bag.dags.values():
        for task in dag.tasks:
            mapped = hasattr(task, "partial_kwargs")
            if (task.partial_kwargs.get("step") if mapped else getattr(task, "step", None)) is None:
                continue  # not a step
            checked.append(task.task_id)
            args = task.partial_kwargs.get("args", ()) if mapped else task.args
            args = args if isinstance(args, list | tuple) else ()  # an upstream task's XCom: no Params
            config_from = task.partial_kwargs.get("config_from") if mapped else task.config_from
            assert config_from == "check_params", f"{dag.dag_id}.{task.task_id} skips the validated Params"
            named = set(re.findall(r"params\.(\w+)", " ".join(map(str, args or ()))))
            assert named <= allowed, f"{dag.dag_id}.{task.task_id} passes {named - allowed} a second way"
            assert not named & set(PARAM_KEYS), named
    assert {"download_clips", "extract_pose", "train_rgb", "preflight", "plan_dataset"} <= set(checked), (
        checked
    )


#: The rules a Param must share with the config field it sets (the DAG may add only what the form needs).
RULES = (
    "type",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "enum",
    "maxItems",
    "items",
)


@pytest.mark.parametrize("dag_id", ["kinetics_pipeline", "kinetics_retrain", "kinetics_infer"])
def test_every_param_agrees_with_its_config_field(bag: Any, dag_id: str) -> None:
    """Each Param that sets a config key (airflow_adapter.PARAM_KEYS) states the field's rules, the same
    values: bounds, lengths, pattern, choices, item rules. A nullable Param may add "null" to the field's
    type."""
    from action_recognition.airflow_adapter import PARAM_KEYS, field_schema

    params = bag.dags[dag_id].params
    checked = 0
    for name, keys in PARAM_KEYS.items():
        if name not in params:
            continue
        schema = params.get_param(name).schema
        for key in (keys,) if isinstance(keys, str) else keys:
            field = field_schema(key)
            for rule in RULES:
                if rule not in field:
                    continue
                got, want = schema.get(rule), field[rule]
                if rule == "items" and isinstance(
                    got, dict
                ):  # the form may add an item rule, never change one
                    got = {k: v for k, v in got.items() if k in want}
                if rule == "type" and isinstance(got, list):
                    got = [t for t in got if t != "null"]
                    want = [t for t in (want if isinstance(want, list) else [want]) if t != "null"]
                    got, want = got[0] if len(got) == 1 else got, want[0] if len(want) == 1 else want
                assert got == want, (
                    f"{dag_id} Param {name!r}: {rule} {got!r}, but config field {key} says {want!r}"
                )
            checked += 1
    assert checked >= 3, f"{dag_id}: only {checked} Params checked"


def test_a_param_cannot_restate_its_fields_rules() -> None:
    from action_recognition.airflow_adapter import param_schema

    assert param_schema("per_class") == {
        "type": "integer",
        "minimum": 1,
        "maximum": 1_000_000,
        "description": "Clips per class at most.",
    }
    with pytest.raises(ValueError, match="config field's to say"):
        param_schema("per_class", maximum=100_000)


def test_the_review_dag_excludes_only_what_a_person_chose(bag: Any) -> None:
    """kinetics_review: review, then a person's answer, then exclude, rebuild both datasets, publish the assets
    (the retrain follows); nothing after the form runs before the person answered."""
    dag = bag.dags["kinetics_review"]
    assert _upstream(dag, "choose_exclusions") == {"review_keypoint_dataset", "review_frames_dataset"}
    assert _upstream(dag, "review_frames_dataset") == {"find_frames_dataset"}
    assert dag.get_task("choose_exclusions").trigger_rule == "none_failed_min_one_success"
    assert _upstream(dag, "exclusion_args") == {"choose_exclusions"}
    assert _upstream(dag, "exclude_clips") == {"exclusion_args"}
    assert (
        _upstream(dag, "build_keypoints_dataset")
        == _upstream(dag, "build_frames_dataset")
        == {"exclude_clips"}
    )
    outlets = {a.name for a in dag.get_task("publish").outlets}
    assert outlets == {"action_recognition_keypoint_dataset", "action_recognition_frames_dataset"}
    assert type(dag.get_task("choose_exclusions")).__name__ == "HITLEntryOperator"
