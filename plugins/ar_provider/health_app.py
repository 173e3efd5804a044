"""The dataset health page inside the Airflow UI: a FastAPI app the api-server serves under
``/dataset-health`` (``AirflowPlugin.fastapi_apps``), shown in the nav and as a tab of every DAG run
(``external_views``).

It reads ``health/<dataset>.json`` from the deployment's storage (``AR__STORAGE__URI``, keys from the
``ar_storage`` connection), never Airflow's metadata database, and renders it
(:mod:`action_recognition.health_page`). FastAPI plugin apps are not protected by Airflow: every route here
depends on Airflow's own ``get_user`` (the UI's token cookie or a bearer token), so an anonymous request gets
401.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.api_fastapi.core_api.security import get_user
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response

from action_recognition.config import DATASET_NAME_PATTERN as DATASET
from action_recognition.layout import THUMBNAIL_PART, thumbnail_key

STORAGE_CONN_ID = "ar_storage"

app = FastAPI(
    title="Dataset health", dependencies=[Depends(get_user)], docs_url=None, redoc_url=None, openapi_url=None
)


def _storage() -> Any:
    """The deployment's storage (the validated config's, from its ``AR__*`` settings), with the ar_storage
    connection's keys when it has one, handed to boto3: the api-server's environment is left alone."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    from action_recognition.airflow_adapter import storage_env_from_fields
    from action_recognition.config import load_config
    from action_recognition.services import storage_with

    config = load_config().storage
    if not config.uri.startswith("s3://"):
        return storage_with(config, None)
    try:
        conn = Connection.get_connection_from_secrets(STORAGE_CONN_ID)
    except AirflowNotFoundException:
        return storage_with(config, None)
    return storage_with(config, storage_env_from_fields(conn.login, conn.password, conn.extra_dejson))


def _run_dataset(request: Request, dag_id: str, run_id: str) -> str | None:
    """The dataset a DAG run worked on: its ``dataset`` Param, asked of Airflow's REST API with the caller's
    own token (so only a run the caller may read answers), else the deployment's default (``AR_DATASET``)."""
    import json
    import urllib.error
    import urllib.request
    from urllib.parse import quote, urlparse

    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.configuration import conf

    token = (
        request.cookies.get(COOKIE_NAME_JWT_TOKEN)
        or request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    )
    # This api-server's own listener (the Host the browser used, e.g. a published port, may not exist in
    # here).
    host = conf.get("api", "host", fallback="0.0.0.0")
    host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    prefix = urlparse(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
    base = f"http://{host}:{conf.get('api', 'port', fallback='8080')}{prefix}"
    url = f"{base}/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}"
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"}), timeout=10
        ) as resp:
            run = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return str((run.get("conf") or {}).get("dataset") or os.environ.get("AR_DATASET") or "") or None


def _choose(
    request: Request, storage: Any, dataset: str | None, dag_id: str | None, run_id: str | None
) -> tuple[str | None, str]:
    from action_recognition.health import datasets_with_health

    if dataset:
        return dataset, ""
    if run_id and dag_id:
        found = _run_dataset(request, dag_id, run_id)
        if found:
            return found, ""
        return None, f"run {run_id} of {dag_id} names no dataset; the datasets above have a health summary"
    names = datasets_with_health(storage)
    return (names[0], "") if names else (None, "no dataset health yet: it is written at the end of each run")


@app.get("/", response_class=HTMLResponse)
def page(
    request: Request,
    dataset: str | None = Query(None, pattern=DATASET),
    dag_id: str | None = Query(None, max_length=250),
    run_id: str | None = Query(None, max_length=250),
    live: bool = Query(False, description="Recompute from the ledgers now (a run in progress)."),
) -> HTMLResponse:
    """The health of ``dataset``, of the dataset a DAG run worked on (``dag_id`` + ``run_id``: the DAG-run
    tab), or of the first dataset with one; ``live``: computed now from the ledgers instead of the last run's
    summary."""
    from action_recognition.health import datasets_with_health, live_health, read_health
    from action_recognition.health_page import render_page
    from action_recognition.manifest import read_plan_info

    storage = _storage()
    name, note = _choose(request, storage, dataset, dag_id, run_id)
    health = read_health(storage, name) if name else None
    if name and live and read_plan_info(storage, name) is not None:
        health = live_health(storage, name, health)
    if name and health is None:
        note = (
            f"dataset {name!r} has no health summary yet (written at the end of each kinetics_pipeline run)"
        )
    return HTMLResponse(render_page(health, datasets_with_health(storage), note=note))


@app.get("/api/{dataset}")
def health_json(dataset: str) -> dict[str, Any]:
    """``health/<dataset>.json`` as written (its ``status`` is ``action-recognition status --json``)."""
    import re

    from action_recognition.health import read_health

    if not re.fullmatch(DATASET, dataset):
        raise HTTPException(422, f"{dataset!r} is not a dataset name")
    health = read_health(_storage(), dataset)
    if health is None:
        raise HTTPException(404, f"no health summary for dataset {dataset!r}")
    return health


@app.get("/thumbnails/{pose_tag}/{clip_id}.jpg")
def thumbnail(pose_tag: str, clip_id: str) -> Response:
    """A review thumbnail (``thumbnails/<pose_tag>/<clip_id>.jpg`` in storage, written by the review step);
    only that prefix can be read through here."""
    import re

    if not (re.fullmatch(THUMBNAIL_PART, pose_tag) and re.fullmatch(THUMBNAIL_PART, clip_id)):
        raise HTTPException(422, "not a pose tag and clip id")
    if ".." in pose_tag or ".." in clip_id:
        raise HTTPException(422, "not a pose tag and clip id")
    storage = _storage()
    key = thumbnail_key(pose_tag, clip_id)
    if not storage.exists(key):
        raise HTTPException(404, f"no thumbnail {key}")
    return Response(
        storage.get_bytes(key), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"}
    )
