"""The compose stack as a person runs it, started once: `scripts/stack.sh up` (what `make stack-up
CELERY_WORKERS=2` runs) with every image built here, the Airflow UI in a real browser, and the deployed
shape's faults in the same run.

docker-compose.yaml runs unchanged but for its images (docker/compose.local.yaml): Postgres, the S3 server
with IAM auth on (MinIO's stand-in) and its init job, MLflow behind basic auth, the Airflow api-server,
scheduler, dag-processor and triggerer, the ``celery`` profile's Redis and two Celery workers
(CeleryExecutor), and the Docker guard through which every step starts a worker container. The form's defaults
are the demo dataset on the local video server, untrained weights, the short training profile.

One story: a bad value is refused by the form; a person triggers the run from the form (approval switched on).
While it runs, the worker running an `extract_pose` task is SIGKILLed (no goodbye: the scheduler notices the
missing heartbeat and the task is retried on the surviving worker, which removes the lost try's step container
first), the scheduler is restarted, then the api-server and Postgres. The person approves in the Required
Action tab; the run succeeds with its mapped steps on both workers, every manifest row in exactly one ledger
state, no object that is not a ledger row's and one model version per family. Then the dataset health page,
the MLflow extra link, the assets the run published (kinetics_retrain is paused here: the retrain the scheduler
starts from them is tests/ui's story, and on S3 with the MLflow server tests/integration/test_pipeline_dag.py's),
the MLflow UI, the registry's auth and the storage keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from action_recognition.profiles import SHORT_TRAINING
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
from tests.support.reliability import Reliability
from tests.support.stack import compose_containers, compose_stack

pytestmark = [pytest.mark.integration, pytest.mark.stack, pytest.mark.slow]

PROJECT = "ar-stack-test"
DAG = "kinetics_pipeline"
RETRAIN = "kinetics_retrain"
FIGURES = ROOT / ".stack-figures.json"
#: Mapped steps, which the two workers share.
STEPS = {"download_clips", "clip_videos", "extract_pose", "download_top_up", "clip_top_up"}
#: Seconds without a heartbeat before the scheduler fails a task whose worker vanished (Airflow's default is
#: 300): short, so the killed worker's task is retried soon, but longer than the api-server's restart below
#: takes on a busy machine, or the tasks running through it lose a try too (seen with 40 s: a retried task
#: lost its last try).
HEARTBEAT_TIMEOUT_S = 90
#: 12 planned clips (+1 top-up) in 3-4 shards: several tasks a mapped stage, for both workers.
CLIPS_PER_SHARD = 4


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    settings = {
        "AIRFLOW_TASK_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_S),
        "AIRFLOW_CELERY_WORKER_CONCURRENCY": "2",
        # Every step container's share of the cores beside the other lane of `make test` (tests/conftest.py).
        "AR_STEP_THREADS": os.environ.get("OMP_NUM_THREADS", ""),
    }
    with compose_stack(
        tmp_path_factory.mktemp("stack"), PROJECT, celery_workers=2, settings=settings
    ) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def test_a_bad_value_is_refused_by_the_form(browser: Any, stack: dict[str, Any]) -> None:
    with logged_in(browser, stack["airflow"]) as page:
        refuse_a_bad_value(page, stack["airflow"], "stack")


# A whole deployment plans, trains, registers (the video models too), rides out four faults (a 90 s heartbeat
# timeout among them) and is approved: 12 minutes beside the other lane of `make test` (e342fcd's fresh-clone
# run; 21 minutes in 4fd0f51's, which retrained too, with MLflow checking the password on every request); the
# limit leaves room above that.
@pytest.mark.timeout(2400)
def test_a_person_trains_and_approves_from_the_ui_through_four_faults(
    browser: Any, stack: dict[str, Any], reliability: Reliability, monkeypatch: pytest.MonkeyPatch
) -> None:
    airflow: AirflowAPI = stack["airflow"]
    values = stack["values"]
    workers = compose_containers(PROJECT, "airflow-celery-worker")
    assert len(workers) == 2, f"two Celery workers: {workers}"
    mlflow_auth = {"username": values["MLFLOW_ADMIN_USER"], "password": values["MLFLOW_ADMIN_PASSWORD"]}
    _pause(airflow, RETRAIN)  # before anything publishes: no retrain competes with the checks below
    with logged_in(browser, airflow, http_credentials=mlflow_auth) as page:
        run_id, triggered = _trigger_from_the_form(page, airflow, values)
        map_index = _four_faults(airflow, run_id, workers, reliability)
        approve_in_the_ui(page, airflow, run_id, "stack", timeout=1200)
        finished = airflow.wait_run(DAG, run_id, timeout=1200)
        trigger_to_champion_s = round(time.monotonic() - triggered)
        tis = airflow.task_instances(DAG, run_id)
        timings = {DAG: airflow.task_seconds(DAG, run_id)}
        print(f"where the run's time went: {json.dumps(timings[DAG])}")
        print(f"the slow tasks' logs:\n{airflow.slow_task_logs(DAG, run_id)}")
        page.goto(f"{airflow.url}/dags/{DAG}/runs/{run_id}")
        page.get_by_text("summarise").first.wait_for()
        page.wait_for_timeout(1500)
        shot(page, "stack-pipeline-run-grid")
        states = {
            (t["task_id"], t["map_index"]): (t["state"], t["try_number"], t.get("hostname")) for t in tis
        }
        assert finished["state"] == "success", f"{states}\n{airflow.failure_report(DAG, run_id)}"
        hosts = {t["hostname"] for t in tis if t["task_id"] in STEPS and t["state"] == "success"}
        assert hosts == set(workers), f"the mapped steps ran on both workers: {hosts} of {set(workers)}"
        checks = airflow.preflight_checks(DAG, run_id)
        assert checks.get("pool youtube_downloads") == "ok", (
            f"the stack's ar_airflow_api connection works: {checks}"
        )
        _nothing_lost_or_doubled(stack, reliability, monkeypatch)
        _the_health_page(page, airflow, run_id)
        run_uuid, href = _the_mlflow_link(page, airflow, stack, run_id)

        _the_run_published_its_assets(airflow, run_id)
        for family in ("keypoint", "rgb"):
            count = len(_versions(stack, f"demo-{family}"))
            reliability.duplicates(f"celery stack: demo-{family} versions beyond one", count - 1)
            assert count == 1, f"demo-{family}: one version after the faults, not {count}"
        _the_mlflow_ui_shows(page, href, run_uuid)

    _the_lost_try_container_is_gone(run_id, map_index, reliability)
    _the_registry_answers_with_auth(stack, run_uuid)
    _storage_keys_reach_only_their_bucket(stack)
    guarded = ["docker", "ps", "-aq", "--filter", f"label=ar.docker-guard.instance={PROJECT}"]
    leftovers = subprocess.run(guarded, capture_output=True, text=True, check=True).stdout.split()
    assert leftovers == [], "every step container is removed"
    FIGURES.write_text(
        json.dumps(
            {
                "up_to_healthy_s": stack["up_to_healthy_s"],
                "trigger_to_champion_s": trigger_to_champion_s,
                "tasks": timings,
            }
        )
    )


def _trigger_from_the_form(page: Any, airflow: AirflowAPI, values: dict[str, str]) -> tuple[str, float]:
    """The form as the deployment fills it (its clips a class), with the suite's short training (fewer epochs
    than the demo stack's; its fold models in the review train as many), four clips a shard (three mapped tasks
    a stage: more than one worker takes at once, half the step containers of two a shard) and approval on;
    submitted. The run id and when it was triggered."""
    dialog = open_trigger_form(page)
    assert dialog.locator("#element_dataset").input_value() == "demo", "local mode: the demo dataset"
    set_number(dialog, "epochs", int(SHORT_TRAINING["epochs"]))
    set_number(dialog, "clips_per_shard", CLIPS_PER_SHARD)
    switch_on(dialog, "require_approval")
    shot(page, "stack-trigger-form")
    dialog.get_by_test_id("trigger-dag-submit").click()
    dialog.wait_for(state="hidden")
    triggered = time.monotonic()
    (run,) = airflow.runs(DAG)
    conf = run["conf"]
    assert conf["per_class"] == int(values["AR_PER_CLASS"]) and conf["runner"] == "docker", conf
    assert (conf["clips_per_shard"], conf["epochs"]) == (CLIPS_PER_SHARD, SHORT_TRAINING["epochs"]), conf
    return str(run["dag_run_id"]), triggered


def _four_faults(airflow: AirflowAPI, run_id: str, workers: dict[str, str], reliability: Reliability) -> int:
    """A worker SIGKILLed while it runs extract_pose, the scheduler restarted at once; the retry on the
    survivor; then the api-server and Postgres restarted mid-run. Returns the killed task's map index."""
    faults = ExitStack()
    faults.enter_context(reliability.fault("celery: a worker SIGKILLed mid-task, the task retried elsewhere"))
    faults.enter_context(reliability.fault("celery stack: the scheduler restarted mid-run"))
    faults.enter_context(reliability.fault("celery stack: the api-server restarted mid-run"))
    faults.enter_context(reliability.fault("celery stack: Postgres restarted mid-run"))
    with faults:
        victim = _running_on(airflow, run_id, "extract_pose", set(workers), timeout=900)
        dead, survivor = victim["hostname"], next(h for h in workers if h != victim["hostname"])
        _docker("kill", "--signal", "KILL", workers[dead])
        _docker("restart", "--time", "20", _one("airflow-scheduler"))
        assert _docker("inspect", "-f", "{{.State.Running}}", workers[dead]) == "false"

        # The lost try: failed by the scheduler after the heartbeat timeout, tried again on the survivor.
        map_index = int(victim["map_index"])
        deadline = time.monotonic() + HEARTBEAT_TIMEOUT_S + 300
        while True:
            (ti,) = [
                t
                for t in airflow.task_instances(DAG, run_id)
                if t["task_id"] == "extract_pose" and t["map_index"] == map_index
            ]
            if ti["try_number"] >= 2 and ti["state"] in ("running", "success"):
                break
            assert time.monotonic() < deadline, f"extract_pose[{map_index}] was not retried: {ti}"
            time.sleep(2)
        assert ti["hostname"] == survivor, f"the retry ran on {ti['hostname']}, not the surviving {survivor}"

        _still_running(airflow, run_id)
        api = _one("airflow-apiserver")
        outages = {"api-server": _restart(api, lambda: airflow.api("GET", "/api/v2/version"))}
        _wait_healthy(api)
        _still_running(airflow, run_id)
        postgres = _one("postgres")
        outages["Postgres"] = _restart(postgres, lambda: _wait_healthy(postgres))
        print(f"outages (s): {outages}")  # in the report of a later failure
    return map_index


def _pause(airflow: AirflowAPI, dag_id: str, timeout: float = 180) -> None:
    """Pause ``dag_id`` as a person would (the DAGs list's toggle is this call), once the dag-processor has
    parsed it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            paused = airflow.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": True})
            assert paused["is_paused"] is True, paused
            return
        except urllib.error.HTTPError as exc:
            assert exc.code == 404 and time.monotonic() < deadline, f"pausing {dag_id}: HTTP {exc.code}"
            time.sleep(2)


def _the_run_published_its_assets(airflow: AirflowAPI, run_id: str) -> None:
    """The run's summarise task published both dataset assets (what starts kinetics_retrain), and the paused
    retrain was not started by them."""
    from ar_provider.defaults import FRAMES_DATASET, KEYPOINT_DATASET

    query = urllib.parse.urlencode({"source_dag_id": DAG, "source_run_id": run_id})  # "+" in the run id
    events = airflow.api("GET", f"/api/v2/assets/events?{query}")
    published = {(e["name"], e["source_task_id"]) for e in events["asset_events"]}
    wanted = {(asset.name, "summarise") for asset in (KEYPOINT_DATASET, FRAMES_DATASET)}
    assert wanted <= published, f"the run's asset events: {events['asset_events']}"
    assert airflow.runs(RETRAIN) == [], "kinetics_retrain is paused in this story"


def _docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True, timeout=120
    ).stdout.strip()


def _one(service: str) -> str:
    (cid,) = compose_containers(PROJECT, service).values()
    return cid


def _wait_healthy(cid: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while _docker("inspect", "-f", "{{.State.Health.Status}}", cid) != "healthy":
        assert time.monotonic() < deadline, f"{cid} not healthy {timeout} s after its restart"
        time.sleep(2)


def _restart(cid: str, back: Callable[[], object]) -> float:
    """Restart a container (20 s to stop); the seconds until ``back`` returns: the outage running tasks
    outlived."""
    start = time.monotonic()
    _docker("restart", "--time", "20", cid)
    back()
    return time.monotonic() - start


def _running_on(
    airflow: AirflowAPI, run_id: str, task_id: str, hosts: set[str], timeout: float
) -> dict[str, Any]:
    """The first task instance of ``task_id`` seen running on one of ``hosts``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tis = airflow.task_instances(DAG, run_id)
        for ti in tis:
            if ti["task_id"] == task_id and ti["state"] == "running" and ti.get("hostname") in hosts:
                return ti
        failed = {t["task_id"] for t in tis if t["state"] in ("failed", "upstream_failed")}
        assert not failed, f"{failed} failed before {task_id} ran"
        time.sleep(0.5)
    raise TimeoutError(f"{task_id} never ran on {hosts} within {timeout} s")


def _still_running(airflow: AirflowAPI, run_id: str) -> None:
    run = airflow.api("GET", f"/api/v2/dags/{DAG}/dagRuns/{run_id}")
    assert run["state"] == "running", f"the fault must land mid-run, but the run is {run['state']}"


def _the_health_page(page: Any, airflow: AirflowAPI, run_id: str) -> None:
    """Served by the api-server from MinIO through the ar_storage connection: the numbers the run's summary
    computed, the page in the browser, nothing for an anonymous caller."""
    summary = airflow.xcom(DAG, run_id, "summarise")
    health = airflow.api("GET", "/dataset-health/api/demo")
    assert (health["status"]["rows"], health["status"]["states"]) == (summary["rows"], summary["states"]), (
        health
    )
    assert http_status(f"{airflow.url}/dataset-health/api/demo") == 401
    page.goto(f"{airflow.url}/dags/{DAG}/runs/{run_id}/plugin/dataset-health-run")
    page.frame_locator("iframe").get_by_text("Dataset health: demo").wait_for(timeout=60_000)
    shot(page, "stack-dataset-health")


def _the_mlflow_link(page: Any, airflow: AirflowAPI, stack: dict[str, Any], run_id: str) -> tuple[str, str]:
    """The MLflow extra link of train_keypoint, as a person finds it; the MLflow run id it names and its
    address."""
    page.goto(f"{airflow.url}/dags/{DAG}/runs/{run_id}/tasks/train_keypoint/details")
    link = page.get_by_role("link", name="MLflow run")
    link.wait_for()
    href = str(link.get_attribute("href"))
    assert href.startswith(f"http://localhost:{stack['ports']['MLFLOW_PORT']}/#/experiments/"), href
    return href.rsplit("/", 1)[-1], href


def _the_mlflow_ui_shows(page: Any, href: str, run_uuid: str) -> None:
    """MLflow's single-page UI sometimes renders "Something went wrong" under a loaded machine (seen in 2 of 4
    runs, and 4 loads in a row in a CI run while a retrain trained; never with an idle machine); a person
    reloads. Four loads at most, and the run id must show; what the page met (HTTP errors, failed requests,
    console errors, its text) is in the failure message."""
    met: list[str] = []
    page.on("response", lambda r: met.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
    page.on("pageerror", lambda e: met.append(f"page error: {str(e)[:300]}"))
    page.on(
        "console", lambda m: met.append(f"console {m.type}: {m.text[:300]}") if m.type == "error" else None
    )
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
            page.evaluate(
                "window.localStorage.clear(); window.sessionStorage.clear()"
            )  # the UI's saved view state
            page.wait_for_timeout(5000)
    shot(page, "stack-mlflow-run")
    assert shown, f"the MLflow UI never showed run {run_uuid} at {href}; it met: {met[-20:]}"


def _the_lost_try_container_is_gone(run_id: str, map_index: int, reliability: Reliability) -> None:
    """The lost try's container (named per task instance, as StepOperator names it) was removed by the
    retry."""
    raw = f"{DAG}-extract_pose-{map_index}-{run_id}"
    name = f"ar-extract_pose-{hashlib.sha256(raw.encode()).hexdigest()[:10]}"
    leftovers = _docker("ps", "-aq", "--filter", f"name=^{name}$").split()
    reliability.leftovers("celery: the lost try's step container", temp_files=0, containers=len(leftovers))
    assert leftovers == [], f"the lost try's step container {name} outlived its retry"


def _nothing_lost_or_doubled(
    stack: dict[str, Any], reliability: Reliability, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    from action_recognition.config import StorageConfig
    from action_recognition.ledger import read_stage, status
    from action_recognition.storage import open_storage

    v = stack["values"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", v["AR_S3_ACCESS_KEY"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", v["AR_S3_SECRET_KEY"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    storage = open_storage(StorageConfig(uri="s3://action-recognition/data", endpoint_url=stack["s3"]))
    report = status(storage, "demo")
    reliability.rows("celery stack: the ledger after four faults", report.rows, report.states)
    assert "pending" not in report.states, f"rows without a final state: {report.states}"

    s3 = boto3.client(
        "s3",
        endpoint_url=stack["s3"],
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="action-recognition", Prefix="data/")
        for o in page.get("Contents", [])
    ]
    ok = {
        stage: {c for c, r in read_stage(storage, "demo", stage).items() if r.state == "ok"}
        for stage in ("download", "clip")
    }
    layers = {
        "raw": ("data/raw/", ok["download"]),
        "clips": ("data/clips/", ok["clip"]),
        "keypoints": ("data/keypoints/", ok["clip"]),
    }
    extra = []
    for prefix, wanted in layers.values():
        ids = [k.rsplit("/", 1)[-1].rsplit(".", 1)[0] for k in keys if k.startswith(prefix)]
        extra += [i for i in ids if i not in wanted]
        extra += [i for i in set(ids) if ids.count(i) > 1]
    extra += [k for k in keys if ".tmp" in k or k.endswith(".part")]
    reliability.duplicates("celery stack: objects that are no ledger row's", len(extra))
    assert extra == [], extra
    assert len([k for k in keys if k.startswith("data/clips/")]) == len(ok["clip"]) > 0


def _mlflow_get(stack: dict[str, Any], path: str, auth: bool = True) -> tuple[int, Any]:
    req = urllib.request.Request(stack["mlflow"] + path)
    if auth:
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
        return boto3.client(
            "s3",
            endpoint_url=stack["s3"],
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            region_name="us-east-1",
        )

    listed = s3(v["AR_S3_ACCESS_KEY"], v["AR_S3_SECRET_KEY"]).list_objects_v2(
        Bucket="action-recognition", Prefix="data/ledger/demo/"
    )
    assert listed.get("KeyCount", 0) > 0, "the pipeline's key reads its ledger"
    with pytest.raises(ClientError, match="AccessDenied"):
        s3(v["MLFLOW_S3_ACCESS_KEY"], v["MLFLOW_S3_SECRET_KEY"]).list_objects_v2(Bucket="action-recognition")
