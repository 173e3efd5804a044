"""One road to each service, and no process globals: the package, the plugins and the DAGs never set MLflow's
tracking URI or write the environment except through :mod:`action_recognition.services`, whose scoped helpers
leave the process as they found it."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from action_recognition.config import StorageConfig
from action_recognition.services import environment, mlflow_tracking, storage_with
from action_recognition.storage import S3Storage
from tests.support.paths import ROOT

SERVICES = ROOT / "action_recognition" / "services.py"
ENV_WRITES = {"update", "setdefault", "pop", "popitem", "clear", "__setitem__", "__delitem__"}


def _global_writes(path: Path) -> list[str]:
    """``set_tracking_uri``/``set_experiment``/``set_registry_uri`` calls and writes to ``os.environ``."""
    found = []
    label = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    for node in ast.walk(ast.parse(path.read_text())):
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


@pytest.mark.check
def test_the_check_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The AST check above is not blind: each kind of write in a scratch module is found."""
    scratch = tmp_path / "scratch.py"
    scratch.write_text(
        "import os, mlflow\nmlflow.set_tracking_uri('x')\nos.environ['A'] = '1'\nos.environ.update(B='2')\n"
        "del os.environ['A']\nos.environ.setdefault('C', '3')\n"
    )
    assert len(_global_writes(scratch)) == 5


@pytest.mark.parametrize("before", [None, "http://earlier:5000"])
def test_mlflow_tracking_leaves_the_process_as_it_found_it(
    before: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow.tracking._tracking_service import utils

    monkeypatch.setattr(utils, "_tracking_uri", None)
    if before is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", before)
    with mlflow_tracking("http://inside:5000"):
        assert mlflow.get_tracking_uri() == "http://inside:5000"
    assert utils._tracking_uri is None
    assert os.environ.get("MLFLOW_TRACKING_URI") == before
    with mlflow_tracking(None):  # no URI: the process's own, untouched
        assert os.environ.get("MLFLOW_TRACKING_URI") == before


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
