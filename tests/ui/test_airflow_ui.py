"""A person in front of the Airflow UI, in a real browser (Debian's Chromium driven by Playwright).

The deployment is Airflow as it runs in production, minus the containers: api-server, scheduler, dag-processor
and triggerer as separate processes with the LocalExecutor (tests/support/deployment.py). Its form defaults
are the demo dataset, served by a local "YouTube" (the bundled real videos and generated ones, one id
answering 404), with untrained pose and RGB weights (nothing can be downloaded here; every output says
untrained). The compose stack, with every step in a worker container, is tests/stack/.

What `airflow dags test` cannot show, and this does: the trigger form is submittable with its defaults, a bad
value is refused by the form itself, the approval is answered in the UI, the run goes through the scheduler
and the executor, and the retraining DAG is started by the scheduler alone from the asset the run published.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import (
    approve_in_the_ui,
    choose,
    chromium,
    exclude_in_the_ui,
    logged_in,
    open_trigger_form,
    refuse_a_bad_value,
    set_number,
    shot,
    switch_on,
)
from tests.support.deployment import AirflowDeployment
from tests.support.paths import VIDEOS, free_port

pytestmark = [pytest.mark.integration, pytest.mark.ui, pytest.mark.slow]

DATASET = "uidemo"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, migrated_airflow: Path) -> Iterator[dict[str, Any]]:
    from devtools.demo import make_demo_videos, write_demo_annotations
    from devtools.localserve import VideoServer

    work = tmp_path_factory.mktemp("ui")
    generated = make_demo_videos(work / "videos", 3)
    csv_path, routes = write_demo_annotations(work / "kinetics-600_demo.csv", generated, VIDEOS)
    tracking = f"sqlite:///{work / 'mlflow.db'}"
    with VideoServer(routes) as server:  # type: ignore[arg-type]
        # The deployment's own defaults: what the form shows (DAG Params read these at parse time).
        env = {
            "AR_DATASET": DATASET,
            "AR__STORAGE__URI": str(work / "storage"),
            "AR_ANNOTATIONS": str(csv_path),
            "AR_URL_TEMPLATE": server.url_template,
            "AR_POSE_UNTRAINED": "true",
            "AR_RGB_ALLOW_UNTRAINED": "true",
            "AR_PER_CLASS": "3",
            "AR_EPOCHS": "3",
            "AR_RUNNER": "local",
            # Every candidate cleanlab finds is listed (models of 3 epochs on 9 clips are never 10x sure):
            # what is tested here is the evidence reaching the page, not the list's precision (bench_curation).
            "AR__REVIEW__MIN_ODDS": "1",
            "MLFLOW_TRACKING_URI": tracking,
            "XDG_CACHE_HOME": str(work / "cache"),
        }
        home = work / "airflow"
        with AirflowDeployment(home, free_port(), migrated=migrated_airflow, **env) as airflow:
            yield {"airflow": airflow, "work": work, "tracking": tracking, "server": server}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Any, deployment: dict[str, Any]) -> Iterator[Any]:
    with logged_in(browser, deployment["airflow"]) as p:
        yield p


def test_a_bad_value_is_refused_by_the_form(page: Any, deployment: dict[str, Any]) -> None:
    refuse_a_bad_value(page, deployment["airflow"], "ui")


@pytest.mark.timeout(1500)  # two pipeline-sized runs and two retrains under the scheduler
def test_trigger_with_the_form_runs_through_the_scheduler_and_the_retrain_repeats_what_won(
    page: Any, deployment: dict[str, Any]
) -> None:
    """Trigger from the form as shown, with a non-default keypoint arch and epoch count chosen (approval
    switched on), approve in the UI; the run succeeds; both champions registered. Then the scheduler alone
    starts kinetics_retrain from the published asset: on unchanged data it repeats the champion's recipe and
    so adds no model version. Then a person excludes a clip in kinetics_review's form: the rebuilt datasets
    start the retrain again, which trains the champion's arch and epochs on the new version (without the
    clip), naming the champion's run as their source, and compares both models on its test set."""
    from mlflow import MlflowClient

    airflow: AirflowDeployment = deployment["airflow"]
    dialog = open_trigger_form(page)
    shot(page, "ui-trigger-form-defaults")
    switch_on(dialog, "require_approval")
    choose(dialog, "keypoint_arch", "stgcn")
    set_number(dialog, "epochs", 4)
    dialog.get_by_test_id("trigger-dag-submit").click()
    dialog.wait_for(state="hidden")
    runs = airflow.runs("kinetics_pipeline")
    assert len(runs) == 1 and runs[0]["run_type"] == "manual", runs
    run_id = runs[0]["dag_run_id"]
    conf = runs[0]["conf"]
    assert conf["require_approval"] is True and conf["classes"] is None, conf
    assert (conf["keypoint_arch"], conf["epochs"], conf["recipe"]) == ("stgcn", 4, "form"), conf
    approve_in_the_ui(page, airflow, run_id, "ui")
    run = airflow.wait_run("kinetics_pipeline", run_id, timeout=600)
    states = {t["task_id"]: t["state"] for t in airflow.task_instances("kinetics_pipeline", run_id)}
    page.goto(f"{airflow.url}/dags/kinetics_pipeline/runs/{run_id}")
    page.get_by_text("summarise").first.wait_for()
    page.wait_for_timeout(1500)
    shot(page, "ui-pipeline-run-grid")
    assert run["state"] == "success", f"{states}\n{airflow.log_tail('scheduler')}"
    assert states["approve_promotion"] == "success" and states["no_approval_needed"] == "skipped"

    checks = airflow.preflight_checks("kinetics_pipeline", run_id)
    assert checks.get("pool youtube_downloads") == "ok", f"the preflight checks the download pool: {checks}"

    client = MlflowClient(deployment["tracking"])
    versions = {}
    for family in ("keypoint", "rgb"):
        name = f"{DATASET}-{family}"
        champion = client.get_model_version_by_alias(name, "champion")
        assert champion.tags.get("ar.untrained") == "true", "untrained weights are named so"
        versions[name] = len(client.search_model_versions(f"name='{name}'"))
    won = client.get_model_version_by_alias(f"{DATASET}-keypoint", "champion")
    assert won.tags["ar.arch"] == "stgcn"

    # No trigger from here on: the scheduler sees the asset event and starts the (unpaused) retraining DAG.
    retrain = airflow.wait_first_run("kinetics_retrain", timeout=300)
    assert retrain["run_type"] == "asset_triggered", (
        f"only the asset starts it on a new deployment: {retrain}"
    )
    _finished(airflow, retrain["dag_run_id"])
    trained = airflow.xcom("kinetics_retrain", retrain["dag_run_id"], "train_keypoint")
    assert (trained["arch"], trained["recipe_source"], trained["recipe_champion_run"]) == (
        "stgcn",
        "champion",
        won.run_id,
    ), trained
    for name, count in versions.items():
        assert len(client.search_model_versions(f"name='{name}'")) == count, (
            f"{name}: unchanged data, the champion's own recipe, and yet a new version"
        )

    # A new dataset version: a person excludes a training clip in kinetics_review's form (the review list
    # beside it); the rebuilt datasets publish the asset, and the retrain it starts trains the champion's
    # recipe on them.
    reviewed = airflow.trigger("kinetics_review", {})
    latest = airflow.xcom("kinetics_retrain", retrain["dag_run_id"], "find_keypoint_dataset")
    victim = _a_train_clip(latest["dataset_uri"])
    exclude_in_the_ui(page, airflow, reviewed, victim, "the wrong dance", "ui")
    assert airflow.wait_run("kinetics_review", reviewed, timeout=600)["state"] == "success", (
        airflow.failure_report("kinetics_review", reviewed)
    )
    second = airflow.wait_next_run("kinetics_retrain", {retrain["dag_run_id"]}, timeout=300)
    assert second["run_type"] == "asset_triggered", second
    _finished(airflow, second["dag_run_id"])
    trained = airflow.xcom("kinetics_retrain", second["dag_run_id"], "train_keypoint")
    found = airflow.xcom("kinetics_retrain", second["dag_run_id"], "find_keypoint_dataset")
    assert victim not in _clip_ids(found["dataset_uri"]), "the retrain's dataset no longer holds the clip"
    challenger = client.get_run(trained["run_id"])
    assert trained["run_id"] != won.run_id and not trained["reused"], trained
    assert challenger.data.tags["ar.arch"] == "stgcn" and challenger.data.params["train.epochs"] == "4"
    assert challenger.data.tags["ar.recipe_champion_run"] == won.run_id, challenger.data.tags
    decided = airflow.xcom("kinetics_retrain", second["dag_run_id"], "promote_keypoint")
    # Compared on the new test set (the champion re-evaluated there when the test set changed), though the
    # untrained (pose) challenger is never promoted over a champion.
    assert decided["compared_on"] == "the same test set" or "re-evaluated" in decided["compared_on"], decided
    assert decided["report"]["recipe"]["champion_run"] == won.run_id, decided
    deployment["retrained"] = {"run_id": trained["run_id"], "excluded": victim}


def _clip_ids(dataset_uri: str) -> set[str]:
    from action_recognition.datasets import load_dataset

    return set(load_dataset(Path(dataset_uri)).clip_ids.tolist())


def _a_train_clip(dataset_uri: str) -> str:
    from action_recognition.datasets import load_dataset

    data = load_dataset(Path(dataset_uri))
    return str(data.clip_ids[data.split == "train"][0])


def _finished(airflow: AirflowDeployment, run_id: str) -> None:
    finished = airflow.wait_run("kinetics_retrain", run_id, timeout=600)
    assert finished["state"] == "success", airflow.failure_report("kinetics_retrain", run_id)


def test_the_pool_check_names_a_missing_pool_and_refused_credentials(deployment: dict[str, Any]) -> None:
    """The preflight's pool check against this real api-server: a pool that does not exist (its tasks would
    never be scheduled) and a wrong password each fail, named; the pool the DAG uses passes."""
    from action_recognition.doctor import check_pool

    airflow: AirflowDeployment = deployment["airflow"]
    assert check_pool(airflow.url, airflow.user, airflow.password, "youtube_downloads").status == "ok"
    missing = check_pool(airflow.url, airflow.user, airflow.password, "no_such_pool")
    assert missing.status == "fail" and "no pool 'no_such_pool'" in missing.detail, missing
    refused = check_pool(airflow.url, airflow.user, "wrong", "youtube_downloads")
    assert refused.status == "fail" and "refuses the credentials" in refused.detail, refused


def test_the_dataset_health_page_in_the_ui(page: Any, deployment: dict[str, Any]) -> None:
    """After the run above: Browse > Dataset health shows the dataset's classes and its one unavailable clip,
    with exactly the numbers of `action-recognition status --json`; the run's own tab links to the same page;
    an anonymous request is refused."""
    import json
    import subprocess
    import sys

    from tests.support.deployment import http_status

    airflow: AirflowDeployment = deployment["airflow"]
    for path in ("/dataset-health/", f"/dataset-health/api/{DATASET}"):
        assert http_status(airflow.url + path) == 401, f"{path} answers an anonymous request"
    status = subprocess.run(
        [
            sys.executable,
            "-m",
            "action_recognition",
            "status",
            "--storage",
            str(deployment["work"] / "storage"),
            "--dataset",
            DATASET,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    expected = json.loads(status.stdout.strip().splitlines()[-1])
    expected.pop("ok")
    health = airflow.api(
        "GET", f"/dataset-health/api/{DATASET}"
    )  # with the same bearer token as the REST API
    assert health["status"] == expected, "the page's numbers are status --json's"
    assert expected["states"].get("unavailable") == 1, expected

    page.goto(airflow.url)
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name="Dataset health").click()
    frame = page.frame_locator("iframe")
    frame.get_by_text(f"Dataset health: {DATASET}").wait_for(timeout=30_000)
    table = frame.locator("#classes")
    for label in expected["per_class"]:
        assert table.get_by_text(label, exact=True).count() == 1, label
    total = table.locator("tr").last.inner_text()
    assert f"{expected['rows']}" in total and "1 (" in total, (
        total
    )  # the one unavailable clip, with its share
    assert "HTTP 404" in frame.locator("#failures").inner_text(), "the reason behind the unavailable clip"
    page.wait_for_timeout(500)
    shot(page, "ui-dataset-health")
    frame.locator("#live").click()  # a run in progress: recomputed from the ledgers, the same numbers
    frame.get_by_text("now, from the ledgers").wait_for(timeout=30_000)
    assert f"{expected['rows']}" in frame.locator("#classes tr").last.inner_text()

    (run,) = [r for r in airflow.runs("kinetics_pipeline") if r["state"] == "success"][:1]
    page.goto(f"{airflow.url}/dags/kinetics_pipeline/runs/{run['dag_run_id']}")
    page.get_by_role("link", name="Dataset health").click()  # the run's own tab
    page.wait_for_url("**/plugin/dataset-health-run")
    run_frame = page.frame_locator("iframe")
    run_frame.get_by_text(f"Dataset health: {DATASET}").wait_for(timeout=30_000)
    # Written by this run's summarise, or since by the retrain it started (publish_health): the same dataset.
    assert re.search(r"clips planned: .*\bok \d+", run_frame.locator("body").inner_text())
    shot(page, "ui-dataset-health-run")

    # The retrain report and the review, where people look: both dataset versions, the recipe's source,
    # the decision, the clip lost to the exclusion; the review list's section.
    retrained = deployment.get("retrained")
    assert retrained, "the trigger test above ran first and retrained on the grown dataset"
    page.goto(airflow.url)
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name="Dataset health").click()
    frame = page.frame_locator("iframe")
    frame.get_by_text("Retrain report").wait_for(timeout=30_000)
    report = frame.locator(".retrain").first.inner_text()
    assert len(set(re.findall(r"[\w./-]+\.npz", report))) == 2, f"the old and the new dataset file: {report}"
    assert "champion run" in report and "stgcn" in report, report
    assert frame.locator(".retrain-keypoint").count() == 1
    assert "-1" in frame.locator(".retrain-keypoint").inner_text(), "the excluded clip: one fewer in a class"
    assert "Review: clips that probably hurt the model" in frame.locator("body").inner_text()
    frame.locator("h3").first.scroll_into_view_if_needed()
    shot(page, "ui-dataset-health-retrain-report")
    # Each listed clip's evidence: its frames with the skeleton, served from storage through the app.
    # Both families reviewed (the RGB champion exists, untrained: said so); the frames review's evidence is
    # the frames alone.
    for family in ("keypoint", "rgb"):
        thumbs = frame.locator(f"#review-{family} img.thumb")
        assert thumbs.count() >= 1, frame.locator("body").inner_text()
        thumbs.first.scroll_into_view_if_needed()
        thumbs.first.evaluate("img => img.decode()")
        assert thumbs.first.evaluate("img => img.naturalWidth") > 100, f"the {family} strip loaded"
        shot(page, f"ui-dataset-health-review-{family}")
    assert (
        "untrained: the fold models started from random backbone weights"
        in frame.locator("body").inner_text()
    )
