"""A failed step fails its task at once when no retry can help, and stays retryable otherwise."""

from __future__ import annotations

import json
import sys

import pytest

from tests.support.airflow import ROOT

sys.path.insert(0, str(ROOT / "plugins"))


@pytest.mark.parametrize(
    ("error_type", "retryable", "fails_at_once"),
    [
        ("ConfigError", False, True),
        ("PlanError", False, True),
        ("DatasetError", False, True),
        ("StorageError", True, False),
        ("RegistryError", True, False),
    ],
)
def test_the_summary_decides_whether_airflow_retries(
    error_type: str, retryable: bool, fails_at_once: bool
) -> None:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
    from ar_provider.operators import step_failure

    summary = json.dumps(
        {"ok": False, "error": "what went wrong", "error_type": error_type, "retryable": retryable}
    )
    exc = step_failure("plan", "exited with status 2", summary)
    assert isinstance(exc, AirflowFailException) is fails_at_once
    assert isinstance(exc, AirflowException) and "what went wrong" in str(exc)


@pytest.mark.parametrize("summary", ["", "not json", '{"ok": false}', "[1, 2]"])
def test_a_crash_without_a_summary_stays_retryable(summary: str) -> None:
    """A killed process or an unexpected traceback says nothing about retrying: Airflow's retries decide."""
    from airflow.sdk.exceptions import AirflowFailException
    from ar_provider.operators import step_failure

    assert not isinstance(step_failure("download", "exited with status -9", summary), AirflowFailException)


def test_every_error_says_whether_it_is_retryable() -> None:
    """The CLI puts ``retryable`` in its JSON line: bad configuration and bad input are not, services are."""
    from action_recognition.datasets import DatasetError
    from action_recognition.errors import ConfigError, PlanError, StorageError, WorkspaceFullError
    from action_recognition.predict import PredictError
    from action_recognition.registry import RegistryError
    from action_recognition.train import TrainError

    assert [e.retryable for e in (ConfigError, PlanError, DatasetError, PredictError)] == [False] * 4
    assert [e.retryable for e in (StorageError, RegistryError, TrainError, WorkspaceFullError)] == [True] * 4
