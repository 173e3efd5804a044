"""Operator extra links: from a training task to its MLflow run, from any step to its storage prefix."""

from __future__ import annotations

import os
import urllib.parse
from typing import Any

from airflow.sdk import BaseOperatorLink
from airflow.sdk.bases.xcom import BaseXCom as XCom

# The keys of a step's JSON summary that name where its output went, most specific first.
STORAGE_KEYS = (
    "dataset_uri",
    "keypoints_prefix",
    "clips_prefix",
    "manifest_uri",
    "ledger_uri",
    "checkpoint_uri",
)


def _result(ti_key: Any) -> dict[str, Any]:
    value = XCom.get_value(ti_key=ti_key, key="return_value")
    return value if isinstance(value, dict) else {}


class MLflowRunLink(BaseOperatorLink):
    """``MLflow run``: the run a ``train`` step logged (UI base from ``AR_MLFLOW_UI_URL``)."""

    name = "MLflow run"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        result = _result(ti_key)
        run_id = result.get("run_id")
        if not run_id:
            return ""
        base = os.environ.get("AR_MLFLOW_UI_URL", "http://localhost:5000").rstrip("/")
        return f"{base}/#/experiments/{result.get('experiment_id', '0')}/runs/{run_id}"


class StoragePrefixLink(BaseOperatorLink):
    """``Storage``: the folder a step wrote to; S3 URIs open in the MinIO console (``AR_STORAGE_UI_URL``)."""

    name = "Storage"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        result = _result(ti_key)
        uri = next((str(result[k]) for k in STORAGE_KEYS if result.get(k)), "")
        if not uri:
            return ""
        prefix = uri.rsplit("/", 1)[0] if "." in uri.rsplit("/", 1)[-1] else uri
        if prefix.startswith("s3://"):
            base = os.environ.get("AR_STORAGE_UI_URL", "http://localhost:9001").rstrip("/")
            return f"{base}/browser/{urllib.parse.quote(prefix[5:])}"
        return f"file://{urllib.parse.quote(prefix)}"
