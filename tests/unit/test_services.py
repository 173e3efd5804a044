"""One road to each service, and no process globals: nothing in the package, the plugins or the DAGs sets
MLflow's tracking URI (every MLflow call gets its server as an argument), and only
:func:`action_recognition.services.environment` writes the environment, for Ultralytics (which reads its
settings from nowhere else), scoped and restored."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from action_recognition.config import StorageConfig
from action_recognition.services import environment, fetch_model, log_model, model_spec, storage_with
from action_recognition.storage import S3Storage
from tests.support.paths import ROOT

SERVICES = ROOT / "action_recognition" / "services.py"
ENV_WRITES = {"update", "setdefault", "pop", "popitem", "clear", "__setitem__", "__delitem__"}


def _global_writes(path: Path) -> list[str]:
    """``set_tracking_uri``/``set_experiment``/``set_registry_uri`` calls and writes to ``os.environ``."""
    return _global_writes_in(path.read_text(), path)


def _global_writes_in(source: str, path: Path) -> list[str]:
    found = []
    label = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    for node in ast.walk(ast.parse(source)):
        where = f"{label}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            if name in ("set_tracking_uri", "set_experiment", "set_registry_uri", "putenv", "unsetenv"):
                found.append(f"{where} {name}()")
            elif name in ENV_WRITES and ast.unparse(node.func.value) == "os.environ":
                found.append(f"{where} os.environ.{name}()")
        targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else []
        if isinstance(node, ast.AugAssign):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Subscript) and ast.unparse(target.value) == "os.environ":
                found.append(f"{where} os.environ[...] written")
    return found


@pytest.mark.check
def test_no_process_globals_outside_the_services_module() -> None:
    sources = [*(ROOT / "action_recognition").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]
    sources += [*(ROOT / "dags").rglob("*.py")]
    writes = [w for path in sorted(sources) if path != SERVICES for w in _global_writes(path)]
    assert writes == [], f"process globals written outside action_recognition/services.py: {writes}"
    # There, only the environment of the Ultralytics block, restored after: never a tracking URI.
    tree = ast.parse(SERVICES.read_text())
    writers = {
        f.name
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef) and _global_writes_in(ast.unparse(f), SERVICES)
    }
    assert writers <= {"environment", "_restore"}, writers
    assert not [w for w in _global_writes(SERVICES) if "()" in w and "os.environ" not in w]


@pytest.mark.check
def test_the_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The AST check above is not blind: each kind of write in a scratch module is found."""
    scratch = tmp_path / "scratch.py"
    scratch.write_text(
        "import os, mlflow\nmlflow.set_tracking_uri('x')\nos.environ['A'] = '1'\nos.environ.update(B='2')\n"
        "del os.environ['A']\nos.environ.setdefault('C', '3')\n"
    )
    assert len(_global_writes(scratch)) == 5


def test_a_model_logs_and_loads_through_its_server_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A logged model of a run, through an explicit client; found again by its ``models:/m-<id>`` URI, its
    ``runs:/`` path and a registered alias, each on the server given as an argument: MLflow's process-wide
    tracking URI and ``MLFLOW_TRACKING_URI`` are never set, before, during or after."""
    import mlflow.pyfunc
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.tracking._tracking_service import utils

    from tests.support.mlflow import sqlite_store

    class Doubler(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            return model_input * 2

    monkeypatch.setattr(utils, "_tracking_uri", None)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = sqlite_store(tmp_path / "m.db")
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("services", str(tmp_path / "artifacts")))
    client.log_metric(run.info.run_id, "test_top1", 0.75)
    client.log_metric(run.info.run_id, "epoch_val_acc", 0.5, step=3)

    def save(folder: Path, spec: object) -> None:
        mlflow.pyfunc.save_model(str(folder), python_model=Doubler(), mlflow_model=spec, metadata={"k": "v"})

    model_uri = log_model(client, run.info.run_id, "model", save)
    client.set_terminated(run.info.run_id)
    assert model_uri.startswith("models:/m-")
    logged = client.get_logged_model(model_uri[len("models:/") :])
    assert logged.status.to_proto() == 2 or str(logged.status).endswith("READY"), logged.status
    assert [o.model_id for o in client.get_run(run.info.run_id).outputs.model_outputs] == [logged.model_id]
    assert {m.key: m.value for m in logged.metrics or []} == {"test_top1": 0.75}, "final metrics, not curves"
    client.create_registered_model("svc")
    version = client.create_model_version(
        "svc", logged.artifact_location, run.info.run_id, model_id=logged.model_id
    )
    client.set_registered_model_alias("svc", "champion", version.version)
    for ref in (model_uri, "models:/svc@champion", f"models:/svc/{version.version}"):
        folder = fetch_model(ref, uri, tmp_path / ref.replace(":", "").replace("/", "_").replace("@", "_"))
        answer = mlflow.pyfunc.load_model(str(folder)).predict(pd.DataFrame({"x": [1.0, 2.0]}))
        assert answer["x"].tolist() == [2.0, 4.0], ref
        assert model_spec(ref, uri).metadata == {"k": "v"}, ref
    assert utils._tracking_uri is None and "MLFLOW_TRACKING_URI" not in os.environ


def test_environment_is_scoped_and_keeps_what_the_user_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AR_TEST_KEPT", "user")
    monkeypatch.delenv("AR_TEST_NEW", raising=False)
    monkeypatch.setenv("AR_TEST_FORCED", "user")
    with environment({"AR_TEST_FORCED": "ours"}, defaults={"AR_TEST_KEPT": "ours", "AR_TEST_NEW": "ours"}):
        assert (os.environ["AR_TEST_FORCED"], os.environ["AR_TEST_KEPT"], os.environ["AR_TEST_NEW"]) == (
            "ours",
            "user",
            "ours",
        )
    assert os.environ["AR_TEST_FORCED"] == "user" and os.environ["AR_TEST_KEPT"] == "user"
    assert "AR_TEST_NEW" not in os.environ


def test_a_connection_s_keys_reach_boto3_and_not_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    before = dict(os.environ)
    connection = {
        "AWS_ACCESS_KEY_ID": "conn-key",
        "AWS_SECRET_ACCESS_KEY": "conn-secret",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_DEFAULT_REGION": "eu-west-3",
    }
    storage = storage_with(StorageConfig(uri="s3://bucket/prefix"), connection)
    assert isinstance(storage, S3Storage)
    credentials = storage.client._request_signer._credentials
    assert (credentials.access_key, credentials.secret_key) == ("conn-key", "conn-secret")
    assert storage.client.meta.endpoint_url == "http://127.0.0.1:9"
    assert storage.client.meta.region_name == "eu-west-3"
    assert "conn-secret" not in repr(storage._keys)
    assert dict(os.environ) == before


def test_loading_the_pose_model_leaves_the_environment_alone(tmp_path: Path) -> None:
    from action_recognition.config import PoseConfig
    from action_recognition.pose.extract import load_pose_model

    def ours() -> dict[str, str]:  # importing torch, cv2 and ultralytics sets variables of their own
        return {k: v for k, v in os.environ.items() if k.startswith("YOLO_")}

    before = ours()
    model = load_pose_model(PoseConfig(untrained=True, config_dir=tmp_path / "ultralytics"))
    assert model.untrained
    assert ours() == before
