"""Training tracked in a real MLflow server (SQLite backend, artifacts on the S3 test server), and the
registry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from action_recognition.config import RegistryConfig, TrainConfig
from action_recognition.datasets import load_dataset
from action_recognition.evaluate import evaluate_model
from action_recognition.registry import promote, register_run
from action_recognition.storage import LocalStorage
from action_recognition.train import train_model
from tests.support.reliability import Reliability

pytestmark = pytest.mark.integration


def _cfg(**kw: object) -> TrainConfig:
    # One model each (the early-stop recipe): the registry's flow is the subject; tests/model/test_recipe.py
    # logs and loads a refit's averaged model. 20 epochs: fewer leave ddnet at chance here, and then which of
    # two chance-level models "beats" the other is noise.
    return TrainConfig.model_validate(
        {
            "epochs": 20,
            "batch_size": 16,
            "recipe": "early_stop",
            "experiment": "it-registry",
            "system_metrics": True,
            **kw,
        }
    )


def test_run_registry_promotion_and_serving(
    mlflow_server: str, synthetic_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    store = LocalStorage(tmp_path / "store")
    manifest = {
        "uri": "s3://bucket/datasets/synth/manifest.csv",
        "sha256": "ab" * 32,
        "availability": {"ok": 180},
    }
    first = train_model(
        _cfg(arch="ddnet"),
        str(synthetic_dataset),
        storage=store,
        tracking_uri=mlflow_server,
        dataset_name="synth",
        manifest=manifest,
    )
    client = MlflowClient(mlflow_server)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.arch"] == "ddnet"
    assert run.data.params["train.epochs"] == "20"
    assert {
        "test_top1",
        "test_top5",
        "mean_class_acc",
        "macro_f1",
        "epoch_train_loss",
        "epoch_val_acc",
    } <= set(run.data.metrics)
    assert len(client.get_metric_history(first.run_id, "epoch_train_loss")) == first.epochs_run
    assert any(k.startswith("system/") for k in run.data.metrics), "system metrics are logged"
    assert run.data.tags["ar.untrained"] == "false"
    artifacts = {a.path for a in client.list_artifacts(first.run_id)}
    assert {
        "confusion_matrix.png",
        "confusion_matrix.csv",
        "per_class.csv",
        "model_card.md",
        "classes.json",
    } <= artifacts
    card = Path(client.download_artifacts(first.run_id, "model_card.md", str(tmp_path)))
    text = card.read_text()
    assert "SYNTHETIC DATA" in text and "s3://bucket/datasets/synth/manifest.csv" in text and "0.205" in text
    assert run.inputs.dataset_inputs[0].dataset.digest == load_dataset(synthetic_dataset).sha256[:16]
    assert store.exists(f"models/{first.fingerprint[:16]}/last.pt")
    ckpt = torch.load(store.path(f"models/{first.fingerprint[:16]}/last.pt"), weights_only=True)
    assert ckpt["config"]["epochs"] == 20 and ckpt["arch"] == "ddnet"

    # Registration: one version per run, alias challenger; the first promotion needs no contest.
    reg = RegistryConfig(backoff_s=0.1)
    v1 = register_run(first.run_id, "synth-keypoint", reg, tracking_uri=mlflow_server)
    assert v1.created and v1.aliases == ["challenger"]
    again = register_run(first.run_id, "synth-keypoint", reg, tracking_uri=mlflow_server)
    assert not again.created and again.version == v1.version
    assert len(client.search_model_versions("name='synth-keypoint'")) == 1
    p1 = promote("synth-keypoint", reg, tracking_uri=mlflow_server, actor="pytest")
    assert p1.promoted and p1.reason == "no champion yet"
    audit = json.loads(client.get_model_version("synth-keypoint", v1.version).tags["ar.promotion"])
    assert audit["by"] == "pytest" and audit["metric"] == "test_top1"
    assert not promote("synth-keypoint", reg, tracking_uri=mlflow_server).promoted  # idempotent

    # A weak challenger (1 epoch) on the same test set is refused; with a negative-free margin of 0 and a
    # better challenger it would win. Training the same config again reuses the finished run.
    weak = train_model(
        _cfg(arch="lstm", epochs=1),
        str(synthetic_dataset),
        storage=store,
        tracking_uri=mlflow_server,
        dataset_name="synth",
    )
    v2 = register_run(weak.run_id, "synth-keypoint", reg, tracking_uri=mlflow_server)
    refused = promote("synth-keypoint", RegistryConfig(promotion_margin=0.05), tracking_uri=mlflow_server)
    assert not refused.promoted and "does not beat" in refused.reason
    assert client.get_model_version_by_alias("synth-keypoint", "champion").version == v1.version
    assert client.get_model_version_by_alias("synth-keypoint", "challenger").version == v2.version
    strong = train_model(
        _cfg(arch="ddnet", epochs=30),
        str(synthetic_dataset),
        storage=store,
        tracking_uri=mlflow_server,
        dataset_name="synth",
    )
    v3 = register_run(strong.run_id, "synth-keypoint", reg, tracking_uri=mlflow_server)
    decision = promote("synth-keypoint", RegistryConfig(promotion_margin=0.0), tracking_uri=mlflow_server)
    assert decision.promoted == (strong.metrics["test_top1"] >= first.metrics["test_top1"]), decision
    reused = train_model(
        _cfg(arch="ddnet"),
        str(synthetic_dataset),
        storage=store,
        tracking_uri=mlflow_server,
        dataset_name="synth",
    )
    assert reused.reused and reused.run_id == first.run_id
    assert len(client.search_model_versions("name='synth-keypoint'")) == 3
    assert v3.version != v2.version

    # Serving: the champion loads from the registry and classifies a batch.
    import mlflow

    from action_recognition.services import fetch_model
    from action_recognition.serving import load_module

    data = load_dataset(synthetic_dataset)
    champion = fetch_model("models:/synth-keypoint@champion", mlflow_server, tmp_path / "champion")
    answered = mlflow.pyfunc.load_model(str(champion)).predict(data.data[:4])
    assert len(answered) == 4 and set(answered["label"]) <= set(data.classes), "labels, not logits"
    model = load_module(champion)  # the network itself, for logits
    with torch.inference_mode():
        logits = model(torch.from_numpy(data.data[:4]))
    assert logits.shape == (4, 6)
    assert [data.classes[i] for i in logits.argmax(1).tolist()] == list(answered["label"])
    metrics = evaluate_model(
        "models:/synth-keypoint@champion", str(synthetic_dataset), tracking_uri=mlflow_server
    )
    assert metrics.top1 == pytest.approx(
        max(first.metrics["test_top1"], strong.metrics["test_top1"])
        if decision.promoted
        else first.metrics["test_top1"],
        abs=1e-6,
    )
    assert np.isclose(metrics.confusion.sum(), (data.split == "test").sum())


def test_cli_train_register_promote_json(mlflow_server: str, synthetic_dataset: Path, tmp_path: Path) -> None:
    base = [sys.executable, "-m", "action_recognition"]

    def last_json(*args: str) -> dict[str, object]:
        out = subprocess.run([*base, *args], capture_output=True, text=True, timeout=600, check=False)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    trained = last_json(
        "train",
        "--dataset",
        str(synthetic_dataset),
        "--epochs",
        "3",
        "--seed",
        "7",
        "--name",
        "cli",
        "--tracking-uri",
        mlflow_server,
        "--storage",
        str(tmp_path / "s"),
        "--json",
        "--set",
        "train.experiment=it-cli",
        "--set",
        "train.system_metrics=false",
    )
    assert trained["arch"] == "ddnet", "no --arch: the default keypoint model"
    for key in ("test_top1", "test_top5", "mean_class_acc", "run_id", "model_uri"):
        assert key in trained
    registered = last_json(
        "register",
        "--run-id",
        str(trained["run_id"]),
        "--name",
        "cli-keypoint",
        "--tracking-uri",
        mlflow_server,
        "--json",
    )
    assert registered["aliases"] == ["challenger"]
    promoted = last_json("promote", "--name", "cli-keypoint", "--tracking-uri", mlflow_server, "--json")
    assert promoted["promoted"] is True
    evaluated = last_json(
        "evaluate",
        "--model",
        "models:/cli-keypoint@champion",
        "--dataset",
        str(synthetic_dataset),
        "--tracking-uri",
        mlflow_server,
        "--json",
    )
    assert evaluated["test_top1"] == pytest.approx(trained["test_top1"])
    bad = subprocess.run(
        [*base, "train", "--dataset", str(tmp_path / "nope.npz"), "--tracking-uri", mlflow_server],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_concurrent_registrations_leave_one_version(
    mlflow_server: str, synthetic_dataset: Path, tmp_path: Path, reliability: Reliability
) -> None:
    """Airflow runs a task at least once, maybe twice at the same time: the registry ends as after one run."""
    from concurrent.futures import ThreadPoolExecutor

    from mlflow import MlflowClient

    trained = train_model(
        _cfg(arch="ddnet", epochs=1, experiment="it-race"),
        str(synthetic_dataset),
        storage=LocalStorage(tmp_path / "s"),
        tracking_uri=mlflow_server,
        dataset_name="race",
    )
    reg = RegistryConfig(backoff_s=0.1)
    with reliability.fault("four registrations of one run at the same time"):
        with ThreadPoolExecutor(4) as pool:
            results = list(
                pool.map(
                    lambda _: register_run(trained.run_id, "race-keypoint", reg, tracking_uri=mlflow_server),
                    range(4),
                )
            )
        versions = MlflowClient(mlflow_server).search_model_versions("name='race-keypoint'")
        reliability.duplicates("model versions beyond one", len(versions) - 1)
        assert len(versions) == 1, [v.version for v in versions]
    assert {r.version for r in results} == {versions[0].version}
    alias = MlflowClient(mlflow_server).get_model_version_by_alias("race-keypoint", "challenger")
    assert alias.version == versions[0].version


def test_registration_survives_an_mlflow_restart(
    synthetic_dataset: Path, tmp_path: Path, reliability: Reliability
) -> None:
    """The MLflow server goes away while a task registers a model: the call is retried until it is back, and
    the registry ends with exactly one version (no duplicate from the retries)."""
    import threading
    import time

    from mlflow import MlflowClient

    from tests.support.mlflow import RestartableMlflow

    mlflow_srv = RestartableMlflow(tmp_path).start()
    uri = mlflow_srv.uri
    try:
        cfg = _cfg(arch="ddnet", epochs=1, experiment="it-restart", system_metrics=False)
        trained = train_model(
            cfg,
            str(synthetic_dataset),
            storage=LocalStorage(tmp_path / "s"),
            tracking_uri=uri,
            dataset_name="restart",
        )
        mlflow_srv.stop()

        def come_back() -> None:
            time.sleep(3)
            mlflow_srv.start()

        threading.Thread(target=come_back).start()
        with reliability.fault("the MLflow server down for 3 s during registration"):
            reg = register_run(
                trained.run_id,
                "restart-keypoint",
                RegistryConfig(max_attempts=10, backoff_s=0.5),
                tracking_uri=uri,
            )
            assert reg.created
            again = register_run(trained.run_id, "restart-keypoint", RegistryConfig(), tracking_uri=uri)
            assert again.version == reg.version
            versions = MlflowClient(uri).search_model_versions("name='restart-keypoint'")
            reliability.duplicates("model versions beyond one after the restart", len(versions) - 1)
            assert len(versions) == 1
    finally:
        mlflow_srv.stop()
