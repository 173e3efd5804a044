"""Bad values from the trigger form in real `airflow dags test` runs (a metadata DB each, the whole DAG): refused
before any task, or by check_params, or failing at once without retries. The schema-level refusals of each Param
are tests/dags/test_params_bad_input.py (the fast tier).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.airflow import ROOT, airflow_env, init_airflow, run_dag
from tests.support.reliability import Reliability

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_real_trigger_with_a_bad_param_runs_nothing(tmp_path: Path, reliability: Reliability) -> None:
    """`airflow dags test -c` with a bad value: refused before any task, naming the Param; no storage written."""
    env = airflow_env(tmp_path / "airflow")
    init_airflow(env)
    store = tmp_path / "store"
    returncode, out = run_dag("kinetics_pipeline", {"per_class": -1, "storage_uri": str(store)}, env, tmp_path, 300)
    reason = next(
        (ln for ln in out.splitlines() if ln.startswith("airflow.sdk.exceptions.ParamValidationError")),
        None,
    )
    reliability.rejected("params: a real trigger with per_class -1", reason if returncode != 0 else None)
    assert reason is not None and "per_class: -1 is less than the minimum of 1" in reason
    assert not store.exists(), "no task ran"


def test_a_value_past_the_schema_stops_at_check_params(tmp_path: Path, reliability: Reliability) -> None:
    """A storage scheme the schema cannot judge: the first task, check_params, fails naming it; plan never runs."""
    env = airflow_env(tmp_path / "airflow")
    init_airflow(env)
    returncode, out = run_dag("kinetics_pipeline", {"storage_uri": "ftp://host/data"}, env, tmp_path, 300)
    reason = next((ln for ln in out.splitlines() if "storage.uri = 'ftp://host/data'" in ln), None)
    reliability.rejected("params: storage_uri ftp:// in a real run", reason if returncode != 0 else None)
    assert reason is not None and "unsupported scheme 'ftp'" in out
    assert "[DAG TEST] starting task_id=check_params" in out
    assert "starting task_id=plan_dataset" not in out, "no work starts after a refused Param"


def test_both_selectors_from_the_form_plan_what_check_params_validated(tmp_path: Path) -> None:
    """The form's default class_contains ("dancing") with classes filled in: the step plans the named classes,
    exactly what check_params validated (both were once passed to the step, which refused the pair)."""
    env = airflow_env(tmp_path / "airflow")
    init_airflow(env)
    store = tmp_path / "store"
    conf = {"classes": ["tap dancing", "salsa dancing"], "class_contains": "dancing", "per_class": 2,
            "annotations": [str(ROOT / "tests/fixtures/kinetics/kinetics-600_val.csv")], "storage_uri": str(store),
            "dataset": "selectors", "models": [], "pose_untrained": True}  # fmt: skip
    _, out = run_dag("kinetics_pipeline", conf, env, tmp_path, 300)  # later steps fail offline: not this test's
    assert '"class_names": ["salsa dancing", "tap dancing"]' in out, out[-4000:]
    assert "choose exactly one class selector" not in out


def test_a_configuration_error_fails_at_once_without_retries(tmp_path: Path, reliability: Reliability) -> None:
    """A class no source has is a PlanError: no retry can change it, so the task fails on its first try even with
    network retries configured (they once took 4.5 minutes to fail such a run)."""
    env = airflow_env(tmp_path / "airflow", AR_NETWORK_RETRIES="3")
    init_airflow(env)
    conf = {"classes": ["no such class"], "annotations": [str(ROOT / "tests/fixtures/kinetics/kinetics-600_val.csv")],
            "storage_uri": str(tmp_path / "store"), "dataset": "nope", "pose_untrained": True}  # fmt: skip
    returncode, out = run_dag("kinetics_pipeline", conf, env, tmp_path, 300)
    reason = next((ln for ln in out.splitlines() if "that no retry can fix" in ln), None)
    reliability.rejected("params: a class no source has, in a real run", reason if returncode != 0 else None)
    assert returncode != 0 and reason is not None and "no such class" in reason, out[-4000:]
    assert out.count("[DAG TEST] starting task_id=plan_dataset") == 1, "tried once, not retried"
    assert "up_for_retry" not in out.lower().replace(" ", "_")
