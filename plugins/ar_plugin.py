"""Registers with Airflow what the UI shows of action-recognition: the operator links (MLflow run, storage
prefix) and the dataset health page (a FastAPI app under /dataset-health, in the nav and as a tab of every DAG
run)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from ar_provider.health_app import app as health_app
from ar_provider.links import MLflowRunLink, StoragePrefixLink


class ActionRecognitionPlugin(AirflowPlugin):
    name = "action_recognition"
    # AirflowPlugin's own (mutable) class attributes.
    operator_extra_links = [MLflowRunLink(), StoragePrefixLink()]  # noqa: RUF012
    fastapi_apps = [  # noqa: RUF012
        {"app": health_app, "url_prefix": "/dataset-health", "name": "Dataset health"}
    ]
    external_views = [  # noqa: RUF012 - hrefs relative to the UI's base URL, as Airflow wants them
        {
            "name": "Dataset health",
            "href": "dataset-health/",
            "destination": "nav",
            "category": "browse",
            "url_route": "dataset-health",
        },
        {
            "name": "Dataset health",
            "href": "dataset-health/?dag_id={DAG_ID}&run_id={RUN_ID}",
            "destination": "dag_run",
            "url_route": "dataset-health-run",
        },
    ]
