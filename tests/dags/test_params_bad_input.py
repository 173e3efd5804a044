"""Bad values from the trigger form: each refused with a reason naming the Param, before any task runs.

Two layers, the ones a real trigger goes through: Airflow validates the form against each Param's JSON schema (the
UI refuses to trigger), and what the schema cannot express is refused by the same validated config every step
loads (``config_from_params``), whose error names the config key. The same refusals in real `airflow dags test`
runs: tests/integration/test_params_in_a_run.py.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import pytest

from tests.support.airflow import ROOT
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
}  # fmt: skip


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
