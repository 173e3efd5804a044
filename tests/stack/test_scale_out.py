"""Scale-out and the deployed shape's faults: the compose stack's ``celery`` profile (`make stack-up CELERY_WORKERS=2`)
with two Celery workers on the one Docker engine, then one run through four faults.

The run's mapped tasks land on both workers (hostnames from the task instances). While `extract_pose` runs, its
worker's container is SIGKILLed (`docker kill`): no goodbye, no task-failure report; the scheduler notices the missing
heartbeat, the task is retried on the surviving worker, and the retry removes the lost try's step container before
starting its own. The scheduler is restarted right after the kill, the api-server and Postgres later in the same
run. The run must succeed with every manifest row in exactly one ledger state, no object that is not a ledger row's,
and one model version per family.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from tests.support.deployment import AirflowAPI
from tests.support.reliability import Reliability
from tests.support.stack import compose_containers, compose_stack

pytestmark = [pytest.mark.integration, pytest.mark.stack, pytest.mark.slow]

PROJECT = "ar-celery-test"
DAG = "kinetics_pipeline"
STEPS = {"download_clips", "clip_videos", "extract_pose", "download_top_up", "clip_top_up"}
#: Seconds without a heartbeat before the scheduler fails a task whose worker vanished (Airflow's default is 300):
#: short, so the killed worker's task is retried soon, but longer than the api-server's restart below takes on a busy
#: machine, or the tasks running through it lose a try too (seen with 40 s: a retried task lost its last try).
HEARTBEAT_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    settings = {"AIRFLOW_TASK_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_S),
                "AIRFLOW_CELERY_WORKER_CONCURRENCY": "2"}  # fmt: skip
    with compose_stack(tmp_path_factory.mktemp("celery"), PROJECT, celery_workers=2, settings=settings) as running:
        yield running


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=120).stdout.strip()


def _one(service: str) -> str:
    (cid,) = compose_containers(PROJECT, service).values()
    return cid


def _wait_healthy(cid: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while _docker("inspect", "-f", "{{.State.Health.Status}}", cid) != "healthy":
        assert time.monotonic() < deadline, f"{cid} not healthy {timeout} s after its restart"
        time.sleep(2)


def _restart(cid: str, back: Callable[[], object]) -> float:
    """Restart a container (20 s to stop); the seconds until ``back`` returns: the outage running tasks outlived."""
    start = time.monotonic()
    _docker("restart", "--time", "20", cid)
    back()
    return time.monotonic() - start


def _running_on(airflow: AirflowAPI, run_id: str, task_id: str, hosts: set[str], timeout: float) -> dict[str, Any]:
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


@pytest.mark.timeout(1200)  # a whole run through four faults, a 90 s heartbeat timeout among them
def test_two_celery_workers_share_a_run_and_it_survives_four_faults(
    stack: dict[str, Any], reliability: Reliability, monkeypatch: pytest.MonkeyPatch
) -> None:
    airflow: AirflowAPI = stack["airflow"]
    workers = compose_containers(PROJECT, "airflow-celery-worker")
    assert len(workers) == 2, f"two Celery workers: {workers}"
    # Two clips a shard: several mapped tasks a stage, more than one worker takes at once (concurrency 2 each).
    run = airflow.api("POST", f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": None, "conf": {"clips_per_shard": 2}})
    run_id = run["dag_run_id"]
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
        map_index = victim["map_index"]
        deadline = time.monotonic() + HEARTBEAT_TIMEOUT_S + 300
        while True:
            (ti,) = [t for t in airflow.task_instances(DAG, run_id)
                     if t["task_id"] == "extract_pose" and t["map_index"] == map_index]  # fmt: skip
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

        finished = airflow.wait_run(DAG, run_id, timeout=1500)
        tis = airflow.task_instances(DAG, run_id)
        states = {(t["task_id"], t["map_index"]): (t["state"], t["try_number"], t.get("hostname")) for t in tis}
        report = f"{states}\noutages (s): {outages}\n{airflow.failure_report(DAG, run_id)}"
        assert finished["state"] == "success", report
        hosts = {t["hostname"] for t in tis if t["task_id"] in STEPS and t["state"] == "success"}
        assert hosts == set(workers), f"the mapped steps ran on both workers: {hosts} of {set(workers)}"

        _nothing_lost_or_doubled(stack, reliability, monkeypatch)
    # The lost try's container (named per task instance, as StepOperator names it) was removed by the retry. Other
    # step containers may be running now: the asset this run published has started kinetics_retrain.
    raw = f"{DAG}-extract_pose-{map_index}-{run_id}"
    name = f"ar-extract_pose-{hashlib.sha256(raw.encode()).hexdigest()[:10]}"
    leftovers = _docker("ps", "-aq", "--filter", f"name=^{name}$").split()
    reliability.leftovers("celery: the lost try's step container", temp_files=0, containers=len(leftovers))
    assert leftovers == [], f"the lost try's step container {name} outlived its retry"


def _nothing_lost_or_doubled(stack: dict[str, Any], reliability: Reliability, monkeypatch: pytest.MonkeyPatch) -> None:
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

    s3 = boto3.client("s3", endpoint_url=stack["s3"], aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")  # fmt: skip
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="action-recognition",
                                                                            Prefix="data/")
            for o in page.get("Contents", [])]  # fmt: skip
    ok = {stage: {c for c, r in read_stage(storage, "demo", stage).items() if r.state == "ok"}
          for stage in ("download", "clip")}  # fmt: skip
    layers = {"raw": ("data/raw/", ok["download"]), "clips": ("data/clips/", ok["clip"]),
              "keypoints": ("data/keypoints/", ok["clip"])}  # fmt: skip
    extra = []
    for prefix, wanted in layers.values():
        ids = [k.rsplit("/", 1)[-1].rsplit(".", 1)[0] for k in keys if k.startswith(prefix)]
        extra += [i for i in ids if i not in wanted]
        extra += [i for i in set(ids) if ids.count(i) > 1]
    extra += [k for k in keys if ".tmp" in k or k.endswith(".part")]
    reliability.duplicates("celery stack: objects that are no ledger row's", len(extra))
    assert extra == [], extra
    assert len([k for k in keys if k.startswith("data/clips/")]) == len(ok["clip"]) > 0

    import base64
    import json
    import urllib.request

    token = base64.b64encode(f"{v['MLFLOW_ADMIN_USER']}:{v['MLFLOW_ADMIN_PASSWORD']}".encode()).decode()
    for family in ("keypoint", "rgb"):
        req = urllib.request.Request(
            f"{stack['mlflow']}/api/2.0/mlflow/model-versions/search?filter=name%3D%27demo-{family}%27",
            headers={"Authorization": f"Basic {token}"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            versions = json.loads(resp.read()).get("model_versions", [])
        reliability.duplicates(f"celery stack: demo-{family} versions beyond one", len(versions) - 1)
        assert len(versions) == 1, f"demo-{family}: {len(versions)} versions"
