"""DAG Params and Airflow connections become the same validated config and environment as any other source."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from action_recognition.airflow_adapter import config_from_params, storage_env_from_fields
from action_recognition.errors import ConfigError


def test_params_become_config() -> None:
    cfg = config_from_params(
        {"classes": ["tap dancing"], "class_contains": "dancing", "per_class": 7, "storage_uri": "s3://bkt/x",
         "unrelated_param": True},
        environ={},
    )  # fmt: skip
    assert cfg.plan.classes == ["tap dancing"]
    assert cfg.plan.class_contains is None
    assert cfg.plan.per_class == 7
    assert cfg.storage.uri == "s3://bkt/x"


def test_empty_selectors_mean_all_classes() -> None:
    cfg = config_from_params({"classes": [], "class_contains": ""}, environ={})
    assert cfg.plan.all_classes
    assert config_from_params({"classes": [], "class_contains": "salsa"}, environ={}).plan.class_contains == "salsa"


def test_bad_params_are_named() -> None:
    with pytest.raises(ConfigError, match=r"plan.per_class = -1: out of range, valid range 1 <= value"):
        config_from_params({"per_class": -1}, environ={})


def test_connection_fields_to_env() -> None:
    env = storage_env_from_fields("AKIA", "secret", {"endpoint_url": "http://minio:9000", "region_name": "eu-1"})
    assert env == {
        "AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_ENDPOINT_URL": "http://minio:9000", "AWS_DEFAULT_REGION": "eu-1",
    }  # fmt: skip
    env = storage_env_from_fields(None, None, {"service_config": {"s3": {"endpoint_url": "http://x:1"}}})
    assert env == {"AWS_ENDPOINT_URL": "http://x:1"}


def test_real_airflow_connection_from_environment(tmp_path: Path) -> None:
    """A real Airflow connection (from an AIRFLOW_CONN_* variable, no database) gives the boto3 environment."""
    code = (
        "from action_recognition.airflow_adapter import storage_env_from_connection as f;"
        "import json; print(json.dumps(f('ar_storage')))"
    )
    env = dict(os.environ, AIRFLOW_HOME=str(tmp_path),
               AIRFLOW_CONN_AR_STORAGE='{"conn_type": "aws", "login": "key-id", "password": "key-secret", '
                                       '"extra": {"endpoint_url": "http://127.0.0.1:9"}}')  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60)
    assert '"AWS_SECRET_ACCESS_KEY": "key-secret"' in out.stdout.strip().splitlines()[-1]
    assert '"AWS_ENDPOINT_URL": "http://127.0.0.1:9"' in out.stdout
