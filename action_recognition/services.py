"""The one road to each service. Storage: :func:`storage_for` opens the configured store, inside Airflow with
a connection's keys handed to boto3 (never through the environment). MLflow: an ``MlflowClient`` for an
explicit tracking URI, and the two things MLflow's fluent API would otherwise do through a process-wide URI:
fetching a model (:func:`fetch_model`) and logging one into a run (:func:`log_model`).

Nothing in the package sets MLflow's tracking URI: ``mlflow.set_tracking_uri`` writes a module global and, in
MLflow 3, the ``MLFLOW_TRACKING_URI`` environment variable, which outlive the call (a stopped server's URI
once leaked from one test into the next this way). Every call here takes its server as an argument; ``None``
means the process's own (``MLFLOW_TRACKING_URI``, else MLflow's default), read and never written.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from action_recognition.config import StorageConfig

if TYPE_CHECKING:
    from action_recognition.storage import Storage


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


def model_location(client: Any, model_uri: str) -> str:
    """Where the files of ``model_uri`` are, resolved with ``client`` (its server, not the process's):
    ``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``models:/m-<id>`` (an MLflow 3 logged model)
    and ``runs:/<run>/<path>``; any other URI or path as it is."""
    if model_uri.startswith("runs:/"):
        run_id, _, path = model_uri[len("runs:/") :].partition("/")
        return f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{path}"
    if not model_uri.startswith("models:/"):
        return model_uri
    ref = model_uri[len("models:/") :].rstrip("/")
    name, at, alias = ref.partition("@")
    if at:
        return str(
            client.get_model_version_download_uri(
                name, client.get_model_version_by_alias(name, alias).version
            )
        )
    name, _, version = ref.partition("/")
    if not version:  # models:/m-<id>
        return str(client.get_logged_model(name).artifact_location)
    return str(client.get_model_version_download_uri(name, version))


def fetch_model(model_uri: str, tracking_uri: str | None, into: Path, path: str = "") -> Path:
    """``model_uri`` as a local folder under ``into`` that MLflow loads with no server (``load_model`` of a
    path), or only its file ``path`` (``MLmodel``: what the model is, without its weights); a local folder
    is used where it is."""
    if Path(model_uri).is_dir():
        return Path(model_uri) / path if path else Path(model_uri)
    from mlflow.artifacts import download_artifacts

    location = model_location(mlflow_client(tracking_uri), model_uri)
    if path:
        location = f"{location.rstrip('/')}/{path}"
    into.mkdir(parents=True, exist_ok=True)
    return Path(download_artifacts(artifact_uri=location, dst_path=str(into), tracking_uri=tracking_uri))


def model_spec(model_uri: str, tracking_uri: str | None) -> Any:
    """The ``MLmodel`` of ``model_uri`` (flavors, signature, metadata), read without fetching its weights."""
    from mlflow.models import Model

    with tempfile.TemporaryDirectory(prefix="ar-mlmodel-") as tmp:
        return Model.load(str(fetch_model(model_uri, tracking_uri, Path(tmp), "MLmodel")))


def log_model(client: Any, run_id: str, name: str, save: Callable[[Path, Any], None]) -> str:
    """An MLflow 3 logged model of run ``run_id`` (what ``mlflow.<flavor>.log_model`` makes for the active
    run), through ``client``: ``save(folder, mlflow_model)`` writes the flavor
    (``mlflow.pyfunc.save_model(..., mlflow_model=mlflow_model)``), the files are uploaded, the model is
    marked ready and linked to the run as its output. Its ``models:/m-<id>`` URI."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model

    run = client.get_run(run_id)
    logged = client.create_logged_model(
        experiment_id=run.info.experiment_id,
        name=name,
        source_run_id=run_id,
        params={k: str(v) for k, v in run.data.params.items()},
    )
    try:
        spec = Model(
            artifact_path=logged.artifact_location,
            model_uuid=logged.model_id,
            run_id=run_id,
            model_id=logged.model_id,
        )
        with tempfile.TemporaryDirectory(prefix="ar-model-") as tmp:
            folder = Path(tmp) / name
            save(folder, spec)
            client.log_model_artifacts(logged.model_id, str(folder))
    except BaseException:
        with contextlib.suppress(Exception):  # the server may be what failed: the first error is the one
            client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    _link_metrics(client, run, logged.model_id)
    return f"models:/{logged.model_id}"


def _link_metrics(client: Any, run: Any, model_id: str) -> None:
    """The run's final metrics (not its per-epoch curves or system samples) recorded against the logged model
    too, as ``log_model`` does: MLflow's model pages show them."""
    import re
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    final = {k: v for k, v in run.data.metrics.items() if not re.match(r"(epoch_|refit\d+_|system/)", k)}
    linked = [Metric(k, v, now, 0, run_id=run.info.run_id, model_id=model_id) for k, v in final.items()]
    if linked:
        client.log_batch(run.info.run_id, metrics=linked)


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
