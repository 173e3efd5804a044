"""The compose stack as a person runs it: `scripts/stack.sh up` (what `make stack-up` runs) with every image built
here, then the Airflow UI in a real browser.

docker-compose.yaml runs unchanged but for its images (docker/compose.local.yaml): Postgres, the S3 server with IAM
auth on (MinIO's stand-in) and its init job, MLflow behind basic auth, the Airflow api-server, scheduler,
dag-processor and triggerer (LocalExecutor on Postgres), and the Docker guard through which every step starts a
worker container. The form's defaults are the demo dataset on the local video server, untrained weights.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.support.airflow import ROOT
from tests.support.browser import (
    approve_in_the_ui,
    chromium,
    logged_in,
    open_trigger_form,
    refuse_a_bad_value,
    set_number,
    shot,
    switch_on,
)
from tests.support.deployment import AirflowAPI, http_status
from tests.support.stack import compose_stack

pytestmark = [pytest.mark.integration, pytest.mark.stack, pytest.mark.slow]

PROJECT = "ar-stack-test"
FIGURES = ROOT / ".stack-figures.json"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with compose_stack(tmp_path_factory.mktemp("stack"), PROJECT) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def test_a_bad_value_is_refused_by_the_form(browser: Any, stack: dict[str, Any]) -> None:
    with logged_in(browser, stack["airflow"]) as page:
        refuse_a_bad_value(page, stack["airflow"], "stack")


# A whole deployment plans, trains, registers (the video models too), is approved and retrains: 7-9 minutes on a
# loaded CI machine, near the suite's 600 s default (CI's run at b3e4710 passed it while registration retried
# presigned artifact downloads for minutes; the compose environment now downloads through the tracking server).
@pytest.mark.timeout(1200)
def test_a_person_trains_and_approves_from_the_ui(browser: Any, stack: dict[str, Any]) -> None:
    airflow: AirflowAPI = stack["airflow"]
    values = stack["values"]
    mlflow_auth = {"username": values["MLFLOW_ADMIN_USER"], "password": values["MLFLOW_ADMIN_PASSWORD"]}
    with logged_in(browser, airflow, http_credentials=mlflow_auth) as page:
        dialog = open_trigger_form(page)
        assert dialog.locator("#element_dataset").input_value() == "demo", "local mode: the demo dataset"
        # Typed as a person would; the deployment's own values, so the retrain (which trains with the deployment's
        # defaults) sees the same recipe on the same data and must add no model version.
        set_number(dialog, "per_class", int(values["AR_PER_CLASS"]))
        set_number(dialog, "epochs", int(values["AR_EPOCHS"]))
        switch_on(dialog, "require_approval")
        shot(page, "stack-trigger-form")
        dialog.get_by_test_id("trigger-dag-submit").click()
        dialog.wait_for(state="hidden")
        triggered = time.monotonic()
        (run,) = airflow.runs("kinetics_pipeline")
        run_id = run["dag_run_id"]
        assert run["conf"]["per_class"] == int(values["AR_PER_CLASS"]) and run["conf"]["runner"] == "docker", run[
            "conf"
        ]
        approve_in_the_ui(page, airflow, run_id, "stack", timeout=1200)
        finished = airflow.wait_run("kinetics_pipeline", run_id, timeout=900)
        trigger_to_champion_s = round(time.monotonic() - triggered)
        states = {t["task_id"]: t["state"] for t in airflow.task_instances("kinetics_pipeline", run_id)}
        page.goto(f"{airflow.url}/dags/kinetics_pipeline/runs/{run_id}")
        page.get_by_text("summarise").first.wait_for()
        page.wait_for_timeout(1500)
        shot(page, "stack-pipeline-run-grid")
        assert finished["state"] == "success", f"{states}\n{airflow.failure_report('kinetics_pipeline', run_id)}"
        checks = airflow.preflight_checks("kinetics_pipeline", run_id)
        assert checks.get("pool youtube_downloads") == "ok", f"the stack's ar_airflow_api connection works: {checks}"

        # The dataset health page, served by the api-server from MinIO through the ar_storage connection: the numbers
        # the run's summary computed, the page in the browser, nothing for an anonymous caller.
        summary = airflow.xcom("kinetics_pipeline", run_id, "summarise")
        health = airflow.api("GET", "/dataset-health/api/demo")
        assert (health["status"]["rows"], health["status"]["states"]) == (summary["rows"], summary["states"]), health
        assert http_status(f"{airflow.url}/dataset-health/api/demo") == 401
        page.goto(f"{airflow.url}/dags/kinetics_pipeline/runs/{run_id}/plugin/dataset-health-run")
        page.frame_locator("iframe").get_by_text("Dataset health: demo").wait_for(timeout=60_000)
        shot(page, "stack-dataset-health")

        # The MLflow extra link of train_keypoint, followed as a person would, shows that run.
        page.goto(f"{airflow.url}/dags/kinetics_pipeline/runs/{run_id}/tasks/train_keypoint/details")
        link = page.get_by_role("link", name="MLflow run")
        link.wait_for()
        href = link.get_attribute("href")
        run_uuid = href.rsplit("/", 1)[-1]
        assert href.startswith(f"http://localhost:{stack['ports']['MLFLOW_PORT']}/#/experiments/"), href

        # The scheduler alone: the asset the run published starts kinetics_retrain; unchanged data, no new version.
        # (Waited for before the MLflow UI is loaded: the retrain's containers make the machine its busiest.)
        retrain = airflow.wait_first_run("kinetics_retrain", timeout=300)
        assert retrain["run_type"] == "asset_triggered", retrain
        assert airflow.wait_run("kinetics_retrain", retrain["dag_run_id"], timeout=900)["state"] == "success"
        for family in ("keypoint", "rgb"):
            assert len(_versions(stack, f"demo-{family}")) == 1, f"demo-{family}: one version after the retrain"
        # MLflow's single-page UI sometimes renders "Something went wrong" under a loaded machine (seen in 2 of 4
        # runs, and 3 loads in a row once while model tests ran beside it, and 4 in a row in a CI run while the
        # retrain trained; never with an idle machine); a person reloads. Four loads at most, and the run id must
        # show; what the page met (HTTP errors, failed requests, console errors, its text) is in the failure message.
        met: list[str] = []
        page.on("response", lambda r: met.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
        page.on("pageerror", lambda e: met.append(f"page error: {str(e)[:300]}"))
        page.on("console", lambda m: met.append(f"console {m.type}: {m.text[:300]}") if m.type == "error" else None)
        page.on("requestfailed", lambda r: met.append(f"failed {r.url}: {r.failure}"))
        shown = False
        for _ in range(4):
            page.goto(href)
            try:
                page.wait_for_function("id => document.body.innerText.includes(id)", arg=run_uuid, timeout=60_000)
                shown = True
                break
            except PlaywrightTimeout:
                met.append(f"page text: {page.evaluate('document.body.innerText')[:200]!r}")
                page.evaluate("window.localStorage.clear(); window.sessionStorage.clear()")  # the UI's saved view state
                page.wait_for_timeout(5000)
        shot(page, "stack-mlflow-run")
        assert shown, f"the MLflow UI never showed run {run_uuid} at {href}; it met: {met[-20:]}"

    _the_registry_answers_with_auth(stack, run_uuid)
    _storage_keys_reach_only_their_bucket(stack)
    guarded = ["docker", "ps", "-aq", "--filter", f"label=ar.docker-guard.instance={PROJECT}"]
    leftovers = subprocess.run(guarded, capture_output=True, text=True, check=True).stdout.split()
    assert leftovers == [], "every step container is removed"
    FIGURES.write_text(json.dumps({"up_to_healthy_s": stack["up_to_healthy_s"],
                                   "trigger_to_champion_s": trigger_to_champion_s}))  # fmt: skip


def _mlflow_get(stack: dict[str, Any], path: str, auth: bool = True) -> tuple[int, Any]:
    req = urllib.request.Request(stack["mlflow"] + path)
    if auth:
        import base64

        v = stack["values"]
        token = base64.b64encode(f"{v['MLFLOW_ADMIN_USER']}:{v['MLFLOW_ADMIN_PASSWORD']}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


def _versions(stack: dict[str, Any], name: str) -> list[dict[str, Any]]:
    status, body = _mlflow_get(stack, f"/api/2.0/mlflow/model-versions/search?filter=name%3D%27{name}%27")
    assert status == 200, status
    return list(body.get("model_versions", []))


def _the_registry_answers_with_auth(stack: dict[str, Any], keypoint_run: str) -> None:
    for family in ("keypoint", "rgb"):
        path = f"/api/2.0/mlflow/registered-models/alias?name=demo-{family}&alias=champion"
        status, body = _mlflow_get(stack, path)
        assert status == 200, f"@champion of demo-{family}: {status}"
        version = body["model_version"]
        assert any(t["key"] == "ar.untrained" and t["value"] == "true" for t in version.get("tags", []))
        if family == "keypoint":
            assert version["run_id"] == keypoint_run, "the champion is the run the extra link showed"
        assert _mlflow_get(stack, path, auth=False)[0] == 401, "no password, no registry"


def _storage_keys_reach_only_their_bucket(stack: dict[str, Any]) -> None:
    import boto3
    from botocore.exceptions import ClientError

    v = stack["values"]

    def s3(key: str, secret: str) -> Any:
        return boto3.client("s3", endpoint_url=stack["s3"], aws_access_key_id=key, aws_secret_access_key=secret,
                            region_name="us-east-1")  # fmt: skip

    listed = s3(v["AR_S3_ACCESS_KEY"], v["AR_S3_SECRET_KEY"]).list_objects_v2(Bucket="action-recognition",
                                                                             Prefix="data/ledger/demo/")  # fmt: skip
    assert listed.get("KeyCount", 0) > 0, "the pipeline's key reads its ledger"
    with pytest.raises(ClientError, match="AccessDenied"):
        s3(v["MLFLOW_S3_ACCESS_KEY"], v["MLFLOW_S3_SECRET_KEY"]).list_objects_v2(Bucket="action-recognition")
