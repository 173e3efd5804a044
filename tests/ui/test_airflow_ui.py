"""A person in front of the Airflow UI, in a real browser (Debian's Chromium driven by Playwright).

The deployment is Airflow as it runs in production, minus the containers: api-server, scheduler, dag-processor and
triggerer as separate processes with the LocalExecutor (tests/support/deployment.py). Its form defaults are the
demo dataset, served by a local "YouTube" (the bundled real videos and generated ones, one id answering 404), with
untrained pose and RGB weights (nothing can be downloaded here; every output says untrained).

What `airflow dags test` cannot show, and this does: the trigger form is submittable with its defaults, a bad value
is refused by the form itself, the run goes through the scheduler and the executor, and the retraining DAG is
started by the scheduler alone from the asset the run published. Screenshots go to ``$AR_SCREENSHOTS`` (default
``.screenshots/`` in the checkout).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, VIDEOS, free_port
from tests.support.deployment import AirflowDeployment

pytestmark = [pytest.mark.integration, pytest.mark.ui, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(os.environ.get("AR_SCREENSHOTS", ROOT / ".screenshots"))
DATASET = "uidemo"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from action_recognition.demo import make_demo_videos, write_demo_annotations
    from action_recognition.localserve import VideoServer

    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install chromium)")
    work = tmp_path_factory.mktemp("ui")
    generated = make_demo_videos(work / "videos", 3)
    csv_path, routes = write_demo_annotations(work / "kinetics-600_demo.csv", generated, VIDEOS)
    tracking = f"sqlite:///{work / 'mlflow.db'}"
    with VideoServer(routes) as server:  # type: ignore[arg-type]
        # The deployment's own defaults: what the form shows (DAG Params read these at parse time).
        env = {
            "AR_DATASET": DATASET, "AR__STORAGE__URI": str(work / "storage"), "AR_ANNOTATIONS": str(csv_path),
            "AR_URL_TEMPLATE": server.url_template, "AR_POSE_UNTRAINED": "true", "AR_RGB_ALLOW_UNTRAINED": "true",
            "AR_PER_CLASS": "3", "AR_EPOCHS": "3", "AR_RUNNER": "local", "MLFLOW_TRACKING_URI": tracking,
            "XDG_CACHE_HOME": str(work / "cache"),
        }  # fmt: skip
        with AirflowDeployment(work / "airflow", free_port(), **env) as airflow:
            yield {"airflow": airflow, "work": work, "tracking": tracking, "server": server}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, deployment: dict[str, Any]) -> Iterator[Any]:
    """A logged-in page: the SimpleAuthManager login form, as a person fills it."""
    airflow: AirflowDeployment = deployment["airflow"]
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{airflow.url}/dags/kinetics_pipeline")
    page.fill("input[name=username]", airflow.user)
    page.fill("input[name=password]", airflow.password)
    page.click("button[type=submit]")
    page.wait_for_url("**/dags/kinetics_pipeline**")
    try:
        yield page
    finally:
        context.close()


def open_trigger_form(page: Any) -> Any:
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Run Parameters").wait_for()
    return dialog


def shot(page: Any, name: str, *, full_page: bool = False) -> Path:
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def test_a_bad_value_is_refused_by_the_form(page: Any, deployment: dict[str, Any]) -> None:
    """The form clamps numbers to their Param's range; a value breaking a Param's pattern is refused when submitted
    (the API validates the conf against the Params), the reason shown in the dialog. Nothing runs."""
    airflow: AirflowDeployment = deployment["airflow"]
    dialog = open_trigger_form(page)
    submit = dialog.get_by_test_id("trigger-dag-submit")
    assert submit.is_enabled(), "the defaults alone must be submittable"
    per_class = dialog.locator("#number-input\\:element_per_class\\:inc").locator("xpath=../..").locator("input")
    per_class.fill("0")
    per_class.blur()
    assert per_class.input_value() == "1", "per_class below its minimum is clamped to 1"
    name = dialog.locator("#element_dataset")
    name.fill("Bad Name!")
    name.blur()
    submit.click()
    error = dialog.get_by_text("does not match")
    error.first.wait_for()
    error.first.scroll_into_view_if_needed()
    shot(page, "trigger-form-refuses-bad-value")
    assert "Bad Name!" in dialog.inner_text()
    assert airflow.runs("kinetics_pipeline") == [], "a refused form triggers nothing"


def test_trigger_with_the_form_defaults_runs_through_the_scheduler(page: Any, deployment: dict[str, Any]) -> None:
    """Trigger with the defaults as shown; the run succeeds; both champions registered; then the scheduler alone
    starts kinetics_retrain from the published asset, which on unchanged data adds no model version."""
    from mlflow import MlflowClient

    airflow: AirflowDeployment = deployment["airflow"]
    dialog = open_trigger_form(page)
    shot(page, "trigger-form-defaults")
    approval = dialog.locator("input[name=element_require_approval]")
    approval.locator("xpath=..").click()  # the switch a person clicks; the input itself is visually hidden
    assert approval.is_checked()
    dialog.get_by_test_id("trigger-dag-submit").click()
    dialog.wait_for(state="hidden")
    runs = airflow.runs("kinetics_pipeline")
    assert len(runs) == 1 and runs[0]["run_type"] == "manual", runs
    run_id = runs[0]["dag_run_id"]
    assert runs[0]["conf"]["require_approval"] is True and runs[0]["conf"]["classes"] is None, runs[0]["conf"]
    approve_in_the_ui(page, airflow, run_id)
    run = airflow.wait_run("kinetics_pipeline", run_id, timeout=600)
    states = {t["task_id"]: t["state"] for t in airflow.task_instances("kinetics_pipeline", run["dag_run_id"])}
    page.goto(f"{airflow.url}/dags/kinetics_pipeline/runs/{run['dag_run_id']}")
    page.get_by_text("summarise").first.wait_for()
    page.wait_for_timeout(1500)
    shot(page, "pipeline-run-grid")
    assert run["state"] == "success", f"{states}\n{airflow.log_tail('scheduler')}"
    assert run["conf"].get("dataset", DATASET) == DATASET

    client = MlflowClient(deployment["tracking"])
    versions = {}
    for family in ("keypoint", "rgb"):
        name = f"{DATASET}-{family}"
        champion = client.get_model_version_by_alias(name, "champion")
        assert champion.tags.get("ar.untrained") == "true", "untrained weights are named so"
        versions[name] = len(client.search_model_versions(f"name='{name}'"))

    # No trigger from here on: the scheduler sees the asset event and starts the (unpaused) retraining DAG.
    retrain = wait_for_scheduled_run(airflow, "kinetics_retrain", timeout=300)
    assert retrain["run_type"] == "asset_triggered", f"only the asset starts it on a new deployment: {retrain}"
    finished = airflow.wait_run("kinetics_retrain", retrain["dag_run_id"], timeout=600)
    assert finished["state"] == "success", {
        t["task_id"]: t["state"] for t in airflow.task_instances("kinetics_retrain", retrain["dag_run_id"])
    }
    for name, count in versions.items():
        assert len(client.search_model_versions(f"name='{name}'")) == count, f"{name}: unchanged data, new version"


def approve_in_the_ui(page: Any, airflow: AirflowDeployment, run_id: str, timeout: float = 900) -> None:
    """Wait for the approval task to ask, then answer it the way a person does: its Required Action tab."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        states = {t["task_id"]: t["state"] for t in airflow.task_instances("kinetics_pipeline", run_id)}
        if states.get("approve_promotion") == "awaiting_input":
            break
        failed = [t for t, s in states.items() if s in ("failed", "upstream_failed")]
        assert not failed and time.monotonic() < deadline, f"no approval asked: {states}"
        time.sleep(3)
    page.goto(f"{airflow.url}/dags/kinetics_pipeline/runs/{run_id}/tasks/approve_promotion")
    page.get_by_text("Required Action").first.click()
    approve = page.get_by_role("button", name="Approve")
    approve.wait_for()
    assert "test top-1" in page.content(), "the approver sees each challenger's metrics"
    shot(page, "approval-required-action")
    approve.click()
    page.wait_for_selector("[data-testid=hitl-option-Approve][disabled]")  # answered: the options lock


def wait_for_scheduled_run(airflow: AirflowDeployment, dag_id: str, timeout: float) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = airflow.runs(dag_id)
        if runs:
            return runs[0]
        time.sleep(3)
    raise TimeoutError(f"the scheduler started no {dag_id} run in {timeout} s\n{airflow.log_tail('scheduler')}")
