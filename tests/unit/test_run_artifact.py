"""``recipe.run_artifact``: a run's small JSON or text artifact, None when it is not there, and a missing one
is never asked for (behind MLflow's S3 artifact proxy that request was retried for about four minutes: every
first promotion in the compose stack waited that long)."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

from mlflow import MlflowClient

from action_recognition.recipe import run_artifact
from tests.support.mlflow import sqlite_store


def test_present_artifacts_are_read_and_missing_ones_never_downloaded(tmp_path: Path) -> None:
    client = MlflowClient(sqlite_store(tmp_path / "m.db"))
    experiment = client.create_experiment("artifacts", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    client.log_dict(run_id, {"epochs": 3}, "train_config.json")
    client.log_text(run_id, "class,accuracy\nsalsa,0.5\n", "reports/per_class.csv")

    with mock.patch.object(client, "download_artifacts", wraps=client.download_artifacts) as download:
        assert run_artifact(client, run_id, "train_config.json") == {"epochs": 3}
        assert run_artifact(client, run_id, "reports/per_class.csv", parse=False).startswith("class,")
        assert download.call_count == 2
        assert run_artifact(client, run_id, "retrain_report.json") is None
        assert run_artifact(client, run_id, "reports/missing.csv", parse=False) is None
        assert run_artifact(client, run_id, "nowhere/missing.json") is None
        assert download.call_count == 2, "a missing artifact is listed as missing, not downloaded"
