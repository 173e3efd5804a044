"""Shared fixtures: paths to the real data, and real services started on 127.0.0.1 for the tests."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.mlflow import MLFLOW_SERVER_ENV, keep_template_in
from tests.support.paths import KINETICS, free_port
from tests.support.reliability import Reliability, export_records, merge_records, write_report


@pytest.fixture(autouse=True, scope="session")
def _quiet_environment(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep every test off the user's caches and telemetry."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    keep_template_in(tmp_path_factory.getbasetemp())  # tests.support.mlflow.sqlite_store copies from there
    for name in [n for n in os.environ if n.startswith("AR__")]:
        del os.environ[name]


def _healthy(url: str) -> bool:
    """True when ``url`` answers 200 (a server that is not up yet refuses the connection: an OSError)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3-compatible server (moto) on 127.0.0.1; yields its endpoint URL.

    Credentials are test values put in the environment, the way production passes real ones.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID="test-access-key",
        AWS_SECRET_ACCESS_KEY="test-secret-key",
        AWS_ENDPOINT_URL=endpoint,
        AWS_DEFAULT_REGION="us-east-1",
    )
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_server: str, request: pytest.FixtureRequest) -> str:
    """A fresh bucket per test; returns ``s3://<bucket>``."""
    import boto3

    name = "t-" + "".join(ch if ch.isalnum() else "-" for ch in request.node.name.lower())[:50].strip("-")
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(params=["local", "s3"])
def storage_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each storage test runs against a local folder and the real S3 test server."""
    if request.param == "local":
        return str(tmp_path / "store")
    bucket = request.getfixturevalue("s3_bucket")
    return f"{bucket}/some/prefix"


@pytest.fixture
def k600_val(tmp_path: Path) -> Path:
    """The real Kinetics-600 validation CSV (a copy, so tests may not touch the fixture)."""
    dest = tmp_path / "kinetics-600_val.csv"
    shutil.copyfile(KINETICS / "kinetics-600_val.csv", dest)
    return dest


@pytest.fixture(scope="session")
def mlflow_server(s3_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server (SQLite backend) whose artifacts go to the S3 test server; yields its
    URI."""
    import subprocess
    import sys
    import time

    import boto3

    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="mlflow-artifacts")
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    env = dict(os.environ, MLFLOW_S3_ENDPOINT_URL=s3_server, **MLFLOW_SERVER_ENV)
    log_file = (root / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{root}/mlflow.db",
            "--artifacts-destination",
            "s3://mlflow-artifacts/",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while not _healthy(f"{uri}/health"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"MLflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log_file.close()
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated keypoint dataset with a learnable signal (6 classes, COCO-17)."""
    from action_recognition.datasets import save_dataset, synthetic_skeletons

    path = tmp_path_factory.mktemp("synthetic") / "synth6-keypoints.npz"
    return save_dataset(path, **synthetic_skeletons(num_classes=6, per_class=30, frames=32, seed=0))


@pytest.fixture(scope="session")
def migrated_airflow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Airflow home whose database was migrated once (with the download pool): a deployment or a DAG run
    starts from a copy of it (``init_airflow(env, migrated)``) instead of migrating again (10-20 s each)."""
    from tests.support.airflow import airflow_env, init_airflow

    home = tmp_path_factory.mktemp("airflow-migrated")
    init_airflow(airflow_env(home))
    return home


@pytest.fixture(scope="session")
def worker_image() -> str:
    """The locally built CI worker image, on the Docker engine that `make test` starts."""
    from tests.support.docker import build_worker_image

    return build_worker_image()


@pytest.fixture
def reliability(request: pytest.FixtureRequest) -> Reliability:
    """Record fault, bad-input and security outcomes for the reliability report
    (tests/support/reliability.py)."""
    return Reliability(request.node.nodeid.split("::", 1)[-1])


#: Test tiers that use real services, a real browser or the compose stack: each test there says so (its
#: marker).
MARKED_TIERS = {"integration": "integration", "stack": "stack", "ui": "ui"}

#: `make test` runs the suite in two lanes, one pytest-xdist worker each (``-n 2``, scheduled by
#: :func:`pytest_xdist_make_scheduler`): what drives the Docker engine (the compose stack, the docker runner, the
#: guard; their leftover checks count every container on the engine, so they never overlap), and the rest. Most
#: of the suite waits on servers, subprocesses and containers (one process kept 2 cores under half busy), so the
#: lanes share the cores. A lane runs its tests in collection order, so a module's module-scoped fixtures (a DAG
#: run, a stack) start once.
ENGINE_LANE = (
    "tests/stack/",
    "tests/integration/test_docker_runner.py",
    "tests/integration/test_docker_guard.py",
)


#: Tests that need no engine, in the engine lane to even the lanes: 31d2a4d's fresh-clone run ended the host lane
#: at 31 min, the engine lane at 23 (the fault tests take about 4 min; they come after the docker tests). Once the
#: stack no longer retrained (b3ba09b), the host lane took 1527 s and the engine lane 1146 s; the architectures'
#: learning tests (153 s, no shared fixture) moved too. With MLflow's credential cache in the stack (0845a88): host
#: 1513 s, engine 1188 s; the serving tests (126 s; the engine lane starts the S3 and MLflow servers anyway) moved.
EVENS_THE_LANES = (
    "tests/integration/test_faults.py",
    "tests/model/test_architectures.py",
    "tests/integration/test_serving.py",
)


def lane_of(nodeid: str) -> str:
    """The lane a test runs in: ``engine`` or ``host``."""
    return "engine" if nodeid.startswith(ENGINE_LANE + EVENS_THE_LANES) else "host"


def pytest_configure(config: pytest.Config) -> None:
    """On the controller of a run in lanes (``-n N``): each lane's share of the cores for torch,
    ``OMP_NUM_THREADS`` = cores / N unless set, inherited by the workers and all they start (Airflow, local
    steps; the stack passes it to its step containers as ``AR_STEP_THREADS``). Torch threads that outnumber the
    cores wait for each other: a model test beside a second one took 142 s with 2 threads each on 2 cores, 57 s
    with 1 (37 s alone)."""
    lanes = getattr(config.option, "numprocesses", None)
    if isinstance(lanes, int) and lanes > 1 and not hasattr(config, "workerinput"):
        from action_recognition.threads import usable_cores

        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, usable_cores() // lanes)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist's scope scheduling with two scopes, the lanes: each lane wholly on one worker, in order.
    (Its ``loadgroup`` marks do not group under pytest 9.2, which no longer reads the node id it rewrites.)"""
    from xdist.scheduler import LoadScopeScheduling

    class Lanes(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return lane_of(nodeid)

    return Lanes(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that records into the reliability report is in `make reliability` (``-m reliability``); a
    test in an integration, stack or UI folder without its tier's marker stops the collection, named (``-m``
    would miss it)."""
    unmarked = []
    for item in items:
        if "reliability" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.reliability)
        tier = MARKED_TIERS.get(item.path.parent.name)
        if tier and item.get_closest_marker(tier) is None:
            unmarked.append(f"{item.nodeid} (no pytest.mark.{tier})")
    if unmarked:
        raise pytest.UsageError("tests outside their tier's marker:\n  " + "\n  ".join(unmarked))


#: This process's lanes: the tests it ran in each and when it started (a worker runs one lane).
LANE_TESTS: dict[str, int] = {}
STARTED = time.monotonic()
#: On the controller: each worker's lanes, tests and seconds, for the summary.
LANE_TIMES: list[dict[str, Any]] = []
#: On the controller: each test module's seconds (setup, call and teardown of its tests), for the summary.
MODULE_SECONDS: dict[str, float] = {}
#: The modules the summary names under each lane, slowest first.
MODULES_SHOWN = 6


def pytest_runtest_logstart(nodeid: str, location: object) -> None:
    lane = lane_of(nodeid)
    LANE_TESTS[lane] = LANE_TESTS.get(lane, 0) + 1


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    module = report.nodeid.split("::", 1)[0]
    MODULE_SECONDS[module] = MODULE_SECONDS.get(module, 0.0) + report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On a pytest-xdist worker: its reliability records and its lane's time go to the controller with the
    worker's output."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["reliability"] = export_records()
        workeroutput["lanes"] = {"tests": LANE_TESTS, "seconds": round(time.monotonic() - STARTED)}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """On the controller: a worker finished; its records join the block, its lane's time the summary."""
    output = getattr(node, "workeroutput", {})
    if output.get("reliability"):
        merge_records(output["reliability"])
    if output.get("lanes"):
        LANE_TIMES.append(output["lanes"])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if hasattr(terminalreporter.config, "workerinput"):
        return  # a worker: the controller prints the block for the whole run
    if LANE_TIMES:  # which lane is the long one: the next change to balance them starts here
        terminalreporter.section("lanes")
        for lanes in sorted(LANE_TIMES, key=lambda x: -int(x["seconds"])):
            tests = ", ".join(f"{lane} ({n} tests)" for lane, n in sorted(lanes["tests"].items()))
            terminalreporter.write_line(f"{lanes['seconds']:>6} s  {tests or 'no tests'}")
            in_lane = [m for m in MODULE_SECONDS if lane_of(m) in lanes["tests"]]
            for module in sorted(in_lane, key=lambda m: -MODULE_SECONDS[m])[:MODULES_SHOWN]:
                terminalreporter.write_line(f"{MODULE_SECONDS[module]:>14.0f} s  {module}")
    block = write_report()
    if block:
        terminalreporter.section("reliability report")
        terminalreporter.write_line(block)
