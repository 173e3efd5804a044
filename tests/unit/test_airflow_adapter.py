"""DAG Params and Airflow connections become the same validated config and environment as any other source."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from action_recognition.airflow_adapter import (
    config_from_params,
    overrides_from_params,
    set_pairs,
    storage_env_from_fields,
)
from action_recognition.config import load_config
from action_recognition.errors import ConfigError


def test_params_become_config() -> None:
    cfg = config_from_params(
        {
            "classes": ["tap dancing"],
            "class_contains": "dancing",
            "per_class": 7,
            "storage_uri": "s3://bkt/x",
            "unrelated_param": True,
        },
        environ={},
    )
    assert cfg.plan.classes == ["tap dancing"]
    assert cfg.plan.class_contains is None
    assert cfg.plan.per_class == 7
    assert cfg.storage.uri == "s3://bkt/x"


def test_empty_selectors_mean_all_classes() -> None:
    cfg = config_from_params({"classes": [], "class_contains": ""}, environ={})
    assert cfg.plan.all_classes
    assert (
        config_from_params({"classes": [], "class_contains": "salsa"}, environ={}).plan.class_contains
        == "salsa"
    )


def test_null_selectors_from_the_form_mean_the_substring() -> None:
    """The form sends null for an optional Param left empty."""
    cfg = config_from_params({"classes": None, "class_contains": "dancing", "pose_weights": None}, environ={})
    assert cfg.plan.class_contains == "dancing" and cfg.plan.classes == [] and not cfg.plan.all_classes
    assert cfg.pose.weights == "yolo11n-pose.pt"


@pytest.mark.parametrize(
    "params",
    [
        {
            "classes": ["massaging person's head", "passing American football (in game)"],
            "class_contains": "dancing",
        },
        {"classes": None, "class_contains": "dancing", "per_class": 3, "promotion_margin": 1e-05},
        {"classes": [], "class_contains": None, "storage_uri": "s3://bkt/a b: c", "dataset": "d-1"},
        {
            "annotations": ["/data/k.csv", "https://h/x.csv?a=1&b=#2"],
            "url_template": "http://127.0.0.1:9/{youtube_id}",
        },
        {"pose_weights": "models/yolo11n-pose.pt", "pose_untrained": True, "epochs": 2, "seed": 0},
        {"class_contains": "123", "per_class": 1},
    ],
)
def test_validated_params_reach_a_step_unchanged(params: dict[str, object]) -> None:
    """check_params validates the Params; steps get them back through ``--set`` and load the same config."""
    overrides = overrides_from_params(params)
    pairs = set_pairs(overrides)
    assert pairs[::2] == ["--set"] * (len(pairs) // 2)
    assert load_config(overrides=pairs[1::2], environ={}) == config_from_params(params, environ={})


def test_bad_params_are_named() -> None:
    with pytest.raises(ConfigError, match=r"plan.per_class = -1: out of range, valid range 1 <= value"):
        config_from_params({"per_class": -1}, environ={})


def test_connection_fields_to_env() -> None:
    env = storage_env_from_fields(
        "AKIA", "secret", {"endpoint_url": "http://minio:9000", "region_name": "eu-1"}
    )
    assert env == {
        "AWS_ACCESS_KEY_ID": "AKIA",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_ENDPOINT_URL": "http://minio:9000",
        "AWS_DEFAULT_REGION": "eu-1",
    }
    env = storage_env_from_fields(None, None, {"service_config": {"s3": {"endpoint_url": "http://x:1"}}})
    assert env == {"AWS_ENDPOINT_URL": "http://x:1"}


def test_real_airflow_connection_from_environment(tmp_path: Path) -> None:
    """A real Airflow connection (from an AIRFLOW_CONN_* variable, no database) gives the boto3
    environment."""
    code = (
        "from action_recognition.airflow_adapter import storage_env_from_connection as f;"
        "import json; print(json.dumps(f('ar_storage')))"
    )
    env = dict(
        os.environ,
        AIRFLOW_HOME=str(tmp_path),
        AIRFLOW_CONN_AR_STORAGE='{"conn_type": "aws", "login": "key-id", "password": "key-secret", '
        '"extra": {"endpoint_url": "http://127.0.0.1:9"}}',
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    assert '"AWS_SECRET_ACCESS_KEY": "key-secret"' in out.stdout.strip().splitlines()[-1]
    assert '"AWS_ENDPOINT_URL": "http://127.0.0.1:9"' in out.stdout


def test_the_trigger_s_own_train_keys_override_a_champion_s_recipe() -> None:
    """With recipe=champion, the train keys a trigger changed from the DAG's defaults keep the trigger's value;
    the form sends every field, so one left at its default is no override; non-train Params never are."""
    from action_recognition.airflow_adapter import trigger_overrides

    defaults = {"epochs": 80, "keypoint_arch": "ddnet", "seed": 0, "per_class": 200, "recipe": "champion"}
    form = {**defaults, "epochs": 120, "per_class": 300}
    assert trigger_overrides(form, defaults) == ["epochs"]
    assert trigger_overrides({"seed": 3, "keypoint_arch": "stgcn"}, defaults) == ["keypoint_arch", "seed"]
    assert trigger_overrides({}, defaults) == []  # the asset or the schedule: the champion's recipe whole
    assert trigger_overrides({"recipe": "form", "dataset": "x"}, defaults) == []
    cfg = config_from_params({"recipe": "champion"})
    assert cfg.train.recipe_source == "champion"
    with pytest.raises(ConfigError, match="not train settings: colour"):
        load_config(overrides=["train.recipe_overrides=[epochs, colour]"], environ={})
