"""Bad values from the trigger form: each refused with a reason naming the Param, before any task runs.

Two layers, the ones a real trigger goes through: Airflow validates the form against each Param's JSON schema
(the UI refuses to trigger), and what the schema cannot express is refused by the same validated config every
step loads (``config_from_params``), whose error names the config key. The ``dagrun`` tests do the same in
whole `airflow dags test` runs (a metadata DB each, 12-37 s apiece): `make test` runs them, `make test-fast`
leaves them out.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.airflow import ROOT, airflow_env, init_airflow, run_dag
from tests.support.reliability import Reliability

sys.path.insert(0, str(ROOT / "plugins"))

LONG = "x" * 5000
BAD: dict[str, tuple[str, Any, str]] = {
    # name: (param, value, words in the reason)
    "per_class below 1": ("per_class", 0, "per_class"),
    "per_class negative": ("per_class", -1, "per_class"),
    "per_class as text": ("per_class", "ten", "per_class"),
    "per_class huge": ("per_class", 10**9, "per_class"),
    "per_class fractional": ("per_class", 2.5, "per_class"),
    "epochs 0": ("epochs", 0, "epochs"),
    "epochs huge": ("epochs", 10**6, "epochs"),
    "seed negative": ("seed", -1, "seed"),
    "clips_per_shard 0": ("clips_per_shard", 0, "clips_per_shard"),
    "promotion_margin above 1": ("promotion_margin", 2, "promotion_margin"),
    "promotion_margin NaN text": ("promotion_margin", "nan", "promotion_margin"),
    "dataset with ..": ("dataset", "../etc", "dataset"),
    "dataset with a slash": ("dataset", "a/b", "dataset"),
    "dataset with $()": ("dataset", "$(id)", "dataset"),
    "dataset with quotes": ("dataset", "a'b\"c", "dataset"),
    "dataset upper case": ("dataset", "Dance", "dataset"),
    "dataset very long": ("dataset", "a" * 65, "dataset"),
    "dataset empty": ("dataset", "", "dataset"),
    "storage_uri empty": ("storage_uri", "", "storage_uri"),
    "storage_uri ftp": ("storage_uri", "ftp://host/x", "storage.uri"),
    "storage_uri s3 without bucket": ("storage_uri", "s3://", "storage.uri"),
    "storage_uri very long": ("storage_uri", "s3://bucket/" + LONG, "storage"),
    "url_template without the field": ("url_template", "https://example.org/watch", "url_template"),
    "url_template file scheme": ("url_template", "file:///etc/passwd?{youtube_id}", "url_template"),
    "url_template two fields": ("url_template", "https://x/{youtube_id}/{other}", "url_template"),
    "url_template with a shell": ("url_template", "https://x/$(id)/{youtube_id} ; rm", "url_template"),
    "annotations empty": ("annotations", [], "annotations"),
    "annotations not strings": ("annotations", [1, 2], "annotations"),
    "annotations ftp": ("annotations", ["ftp://host/k.csv"], "annotations"),
    "classes not a list": ("classes", "tap dancing", "classes"),
    "classes very long name": ("classes", [LONG], "classes"),
    "class_contains very long": ("class_contains", LONG, "class_contains"),
    "runner unknown": ("runner", "ssh", "runner"),
    "models unknown family": ("models", ["audio"], "models"),
    "keypoint_arch unknown": ("keypoint_arch", "resnet", "keypoint_arch"),
    "rgb_arch unknown": ("rgb_arch", "vit-huge", "rgb_arch"),
    "gpu_enabled as text": ("gpu_enabled", "yes", "gpu_enabled"),
    "pose_untrained as text": ("pose_untrained", "true", "pose_untrained"),
    "pose_weights with ..": ("pose_weights", "../../etc/passwd", "pose"),
}


class Rejected(Exception):
    """Either layer refused the value."""


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import os

    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow-home")))
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags")).dags["kinetics_pipeline"]


def trigger(dag: Any, conf: dict[str, Any]) -> Any:
    """What a trigger does with the form: the Params' schemas, then the one validated config."""
    from airflow.sdk.exceptions import ParamValidationError

    from action_recognition.airflow_adapter import config_from_params
    from action_recognition.errors import ConfigError

    params = copy.deepcopy(dag.params)
    try:
        for key, value in conf.items():
            params[key] = value
        resolved = params.validate()
        return config_from_params(resolved, environ={})
    except (ParamValidationError, ConfigError) as exc:
        raise Rejected(str(exc)) from exc


def test_the_defaults_are_accepted(pipeline: Any) -> None:
    cfg = trigger(pipeline, {})
    assert cfg.plan.per_class >= 1


@pytest.mark.parametrize("case", list(BAD))
def test_bad_params_are_refused_naming_the_param(case: str, pipeline: Any, reliability: Reliability) -> None:
    key, value, words = BAD[case]
    with reliability.bad_input(f"params: {case}", Rejected, match=words):
        trigger(pipeline, {key: value})


@pytest.mark.dagrun
def test_a_real_trigger_with_a_bad_param_runs_nothing(
    tmp_path: Path, migrated_airflow: Path, reliability: Reliability
) -> None:
    """`airflow dags test -c` with a bad value: refused before any task, naming the Param; no storage
    written."""
    env = airflow_env(tmp_path / "airflow")
    init_airflow(env, migrated_airflow)
    store = tmp_path / "store"
    returncode, out = run_dag(
        "kinetics_pipeline", {"per_class": -1, "storage_uri": str(store)}, env, tmp_path, 300
    )
    reason = next(
        (ln for ln in out.splitlines() if ln.startswith("airflow.sdk.exceptions.ParamValidationError")),
        None,
    )
    reliability.rejected("params: a real trigger with per_class -1", reason if returncode != 0 else None)
    assert reason is not None and "per_class: -1 is less than the minimum of 1" in reason
    assert not store.exists(), "no task ran"


@pytest.mark.dagrun
def test_a_value_past_the_schema_stops_at_check_params(
    tmp_path: Path, migrated_airflow: Path, reliability: Reliability
) -> None:
    """A storage scheme the schema cannot judge: the first task, check_params, fails naming it; plan never
    runs."""
    env = airflow_env(tmp_path / "airflow")
    init_airflow(env, migrated_airflow)
    returncode, out = run_dag("kinetics_pipeline", {"storage_uri": "ftp://host/data"}, env, tmp_path, 300)
    reason = next((ln for ln in out.splitlines() if "storage.uri = 'ftp://host/data'" in ln), None)
    reliability.rejected("params: storage_uri ftp:// in a real run", reason if returncode != 0 else None)
    assert reason is not None and "unsupported scheme 'ftp'" in out
    assert "[DAG TEST] starting task_id=check_params" in out
    assert "starting task_id=plan_dataset" not in out, "no work starts after a refused Param"


@pytest.mark.dagrun
def test_both_selectors_from_the_form_plan_what_check_params_validated(
    tmp_path: Path, migrated_airflow: Path
) -> None:
    """The form's default class_contains ("dancing") with classes filled in: the step plans the named classes,
    exactly what check_params validated (both were once passed to the step, which refused the pair)."""
    env = airflow_env(tmp_path / "airflow")
    init_airflow(env, migrated_airflow)
    store = tmp_path / "store"
    conf = {
        "classes": ["tap dancing", "salsa dancing"],
        "class_contains": "dancing",
        "per_class": 2,
        "annotations": [str(ROOT / "tests/fixtures/kinetics/kinetics-600_val.csv")],
        "storage_uri": str(store),
        "dataset": "selectors",
        "models": [],
        "pose_untrained": True,
    }
    _, out = run_dag(
        "kinetics_pipeline", conf, env, tmp_path, 300
    )  # later steps fail offline: not this test's
    assert '"class_names": ["salsa dancing", "tap dancing"]' in out, out[-4000:]
    assert "choose exactly one class selector" not in out


@pytest.mark.dagrun
def test_a_configuration_error_fails_at_once_without_retries(
    tmp_path: Path, migrated_airflow: Path, reliability: Reliability
) -> None:
    """A class no source has is a PlanError: no retry can change it, so the task fails on its first try even
    with network retries configured (they once took 4.5 minutes to fail such a run)."""
    env = airflow_env(tmp_path / "airflow", AR_NETWORK_RETRIES="3")
    init_airflow(env, migrated_airflow)
    conf = {
        "classes": ["no such class"],
        "annotations": [str(ROOT / "tests/fixtures/kinetics/kinetics-600_val.csv")],
        "storage_uri": str(tmp_path / "store"),
        "dataset": "nope",
        "pose_untrained": True,
    }
    returncode, out = run_dag("kinetics_pipeline", conf, env, tmp_path, 300)
    reason = next((ln for ln in out.splitlines() if "that no retry can fix" in ln), None)
    reliability.rejected("params: a class no source has, in a real run", reason if returncode != 0 else None)
    assert returncode != 0 and reason is not None and "no such class" in reason, out[-4000:]
    assert out.count("[DAG TEST] starting task_id=plan_dataset") == 1, "tried once, not retried"
    assert "up_for_retry" not in out.lower().replace(" ", "_")
