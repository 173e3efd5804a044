"""The one road to each service. Storage: :func:`storage_for` opens the configured store, inside Airflow with
a connection's keys handed to boto3 (never through the environment). MLflow: a client for an explicit tracking
URI, and the one place that points MLflow's fluent API (``start_run``, ``log_model``, ``load_model`` of a
``models:/`` URI: they take no client) at a URI.

Nothing else in the package sets MLflow's tracking URI: ``mlflow.set_tracking_uri`` writes a module global
and, in MLflow 3, the ``MLFLOW_TRACKING_URI`` environment variable too, which outlive the call (a stopped
server's URI once leaked from one test into the next this way). :func:`mlflow_tracking` points the fluent API
at a URI for one block and afterwards leaves the process exactly as it found it: the module's URI and the
environment variable, set or not.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from action_recognition.config import StorageConfig

if TYPE_CHECKING:
    from action_recognition.storage import Storage

#: The variable MLflow reads, and writes when its tracking URI is set.
TRACKING_ENV = "MLFLOW_TRACKING_URI"


@contextmanager
def environment(values: Mapping[str, str], *, defaults: Mapping[str, str] | None = None) -> Iterator[None]:
    """``values``, and ``defaults`` where the variable is unset, in ``os.environ`` for the block; every
    variable as it was afterwards. For a third-party library that takes its settings from the environment
    only (Ultralytics); nothing else in the package writes the environment."""
    wanted = {**{k: v for k, v in (defaults or {}).items() if k not in os.environ}, **values}
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        _restore(saved)


def _restore(saved: Mapping[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextmanager
def mlflow_tracking(uri: str | None) -> Iterator[None]:
    """MLflow's fluent API at ``uri`` inside the block; the process as it was after it. ``None``: whatever the
    process already uses (``MLFLOW_TRACKING_URI``, else MLflow's default), untouched."""
    if not uri:
        yield
        return
    from mlflow.tracking._tracking_service import utils

    saved_module, saved_env = utils._tracking_uri, os.environ.get(TRACKING_ENV)
    utils.set_tracking_uri(uri)
    try:
        yield
    finally:
        # None unsets the variable, which is put back below when it was set.
        utils.set_tracking_uri(saved_module)  # type: ignore[arg-type]
        _restore({TRACKING_ENV: saved_env})


def mlflow_client(uri: str | None = None) -> Any:
    """An ``MlflowClient`` for ``uri`` (``None``: the process's tracking URI)."""
    from mlflow import MlflowClient

    return MlflowClient(uri or None)


def experiment_id(name: str, uri: str | None = None) -> str:
    """The id of experiment ``name``, created when it does not exist yet (two racing creators both get it)."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client(uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def storage_for(target: str | StorageConfig, conn_id: str | None = None) -> Storage:
    """The store at ``target``. Inside an Airflow task, ``conn_id`` names the AWS connection whose keys,
    endpoint and region it uses; when that connection does not exist (or the store is a local folder), the
    store is opened as a step opens it: boto3's usual chain, from the environment the process started with."""
    config = target if isinstance(target, StorageConfig) else StorageConfig(uri=target)
    if conn_id is None or not config.uri.startswith("s3://"):
        return storage_with(config, None)
    from airflow.sdk.exceptions import AirflowNotFoundException

    from action_recognition.airflow_adapter import storage_env_from_connection

    try:
        return storage_with(config, storage_env_from_connection(conn_id))
    except AirflowNotFoundException:
        return storage_with(config, None)


def storage_with(config: StorageConfig, connection: Mapping[str, str] | None) -> Storage:
    """The store of ``config`` with a connection's settings (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
    ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, as :mod:`action_recognition.airflow_adapter` reads them)
    handed to boto3; ``None``: boto3's usual chain."""
    from action_recognition.storage import S3Keys, open_storage

    env = connection or {}
    update = {
        "endpoint_url": config.endpoint_url or env.get("AWS_ENDPOINT_URL"),
        "region": config.region or env.get("AWS_DEFAULT_REGION"),
    }
    keys = None
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        keys = S3Keys(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    return open_storage(config.model_copy(update=update), keys=keys)
