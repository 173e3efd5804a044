"""A person at the Airflow UI: Debian's Chromium driven by Playwright (its own browser download cannot work
here).

Screenshots go to ``$AR_SCREENSHOTS`` (default ``.screenshots/`` in the checkout); the README shows chosen
ones.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.airflow import ROOT
from tests.support.deployment import AirflowAPI

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(os.environ.get("AR_SCREENSHOTS", ROOT / ".screenshots"))


@contextmanager
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install chromium)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def logged_in(browser: Any, airflow: AirflowAPI, **context_args: Any) -> Iterator[Any]:
    """A page logged in through the SimpleAuthManager form, on kinetics_pipeline."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, **context_args)
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


def shot(page: Any, name: str) -> Path:
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def open_trigger_form(page: Any) -> Any:
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Run Parameters").wait_for()
    return dialog


def set_number(dialog: Any, param: str, value: int) -> Any:
    """Type into a number Param's field and leave it (the form clamps to the Param's range on blur)."""
    field = dialog.locator(f"#number-input\\:element_{param}\\:inc").locator("xpath=../..").locator("input")
    field.fill(str(value))
    field.blur()
    return field


def choose(dialog: Any, param: str, value: str) -> None:
    """Pick ``value`` in an enum Param's dropdown (react-select: type to filter, Enter to take it)."""
    box = dialog.locator(f"#element_{param}").locator("input[role=combobox]")
    box.click()
    box.fill(value)
    box.press("Enter")
    chosen = dialog.locator(f"input[name=element_{param}]").input_value()
    assert chosen == value, f"{param}: {chosen!r} chosen, not {value!r}"


def switch_on(dialog: Any, param: str) -> None:
    box = dialog.locator(f"input[name=element_{param}]")
    if not box.is_checked():
        box.locator("xpath=..").click()  # the switch a person clicks; the input itself is visually hidden
    assert box.is_checked(), param


def refuse_a_bad_value(page: Any, airflow: AirflowAPI, prefix: str) -> None:
    """A number below its minimum is clamped; a dataset name breaking the Param's pattern is refused on submit
    (the API validates the conf against the Params) with the reason in the dialog, and nothing runs."""
    dialog = open_trigger_form(page)
    submit = dialog.get_by_test_id("trigger-dag-submit")
    assert submit.is_enabled(), "the defaults alone must be submittable"
    assert set_number(dialog, "per_class", 0).input_value() == "1", (
        "per_class below its minimum is clamped to 1"
    )
    name = dialog.locator("#element_dataset")
    name.fill("Bad Name!")
    name.blur()
    submit.click()
    error = dialog.get_by_text("does not match")
    error.first.wait_for()
    error.first.scroll_into_view_if_needed()
    shot(page, f"{prefix}-trigger-form-refuses-bad-value")
    assert airflow.runs("kinetics_pipeline") == [], "a refused form triggers nothing"
    dialog.get_by_role("button", name="Close").first.click()


def approve_in_the_ui(page: Any, airflow: AirflowAPI, run_id: str, prefix: str, timeout: float = 900) -> None:
    """Wait for the approval task to ask, then answer it the way a person does: its Required Action tab."""
    airflow.wait_task_state("kinetics_pipeline", run_id, "approve_promotion", "awaiting_input", timeout)
    # Airflow 3.3.2 race, seen here: an answer within a second or two of the task parking puts it back to
    # queued before the scheduler has processed the parking worker's exit, and the scheduler then fails the
    # queued try as "finished externally" (scheduler_job_runner.process_executor_events handles the resume
    # only while the task is still scheduled). A person takes longer than the scheduler's loop; so does this
    # test.
    time.sleep(6)
    page.goto(f"{airflow.url}/dags/kinetics_pipeline/runs/{run_id}/tasks/approve_promotion")
    page.get_by_text("Required Action").first.click()
    approve = page.get_by_role("button", name="Approve")
    approve.wait_for()
    assert "test top-1" in page.content(), "the approver sees each challenger's metrics"
    shot(page, f"{prefix}-approval")
    approve.click()
    page.wait_for_selector("[data-testid=hitl-option-Approve][disabled]")  # answered: the options lock


def exclude_in_the_ui(
    page: Any, airflow: AirflowAPI, run_id: str, clip_id: str, reason: str, prefix: str, timeout: float = 600
) -> None:
    """Answer kinetics_review's form as a person does (its Required Action tab): the clip id, the reason, OK."""
    airflow.wait_task_state("kinetics_review", run_id, "choose_exclusions", "awaiting_input", timeout)
    time.sleep(6)  # the same scheduler race as approve_in_the_ui
    page.goto(f"{airflow.url}/dags/kinetics_review/runs/{run_id}/tasks/choose_exclusions")
    page.get_by_text("Required Action").first.click()
    ok = page.get_by_role("button", name="OK")
    ok.wait_for()
    assert "clips of" in page.content() and "listed" in page.content(), "the person sees the review list"
    page.locator("textarea[name=element_clip_ids]").fill(clip_id)
    page.locator("input[name=element_reason]").fill(reason)
    shot(page, f"{prefix}-review-exclusion")
    ok.click()
    page.wait_for_selector("[data-testid=hitl-option-OK][disabled]")  # answered: the options lock
