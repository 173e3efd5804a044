"""The console script: --help everywhere, --json as the last stdout line, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import KINETICS, ROOT

CLI = [sys.executable, "-m", "action_recognition"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


def _registered() -> list[str]:
    """Every command the app registers, sub-command groups as "group command" (walked, not listed by hand)."""
    from action_recognition.cli import app

    names = [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands]  # type: ignore[union-attr]
    for group in app.registered_groups:
        names += [f"{group.name} {c.name}" for c in group.typer_instance.registered_commands]  # type: ignore[union-attr]
    return names


def test_help_on_every_registered_command() -> None:
    """Every command answers --help; the app shows each; docs/cli.md's command list names exactly these. (The
    console script itself: test_console_script_is_installed; here in-process, one invocation a command.)"""
    from typer.testing import CliRunner

    from action_recognition.cli import app

    commands = _registered()
    assert len(commands) >= 20 and "plan" in commands and "weights pull" in commands, commands
    top = run_cli("--help")
    assert top.returncode == 0
    for command in commands:
        assert command.split()[0] in top.stdout, command
        result = CliRunner().invoke(app, [*command.split(), "--help"])
        assert result.exit_code == 0 and "Usage" in result.stdout, (command, result.output)
    reference = (ROOT / "docs" / "cli.md").read_text()
    listed = reference[reference.index("# The steps (CLI)") :].split("\n\n")[1]
    missing = [c for c in commands if f"`{c}`" not in listed]
    assert missing == [], f"docs/cli.md's command list lacks {missing}"


def test_plan_json_last_line(tmp_path: Path) -> None:
    result = run_cli(
        "plan",
        "--annotations",
        str(KINETICS / "kinetics-600_val.csv"),
        "--class-contains",
        "dancing",
        "--per-class",
        "50",
        "--seed",
        "0",
        "--dataset",
        "dance15",
        "--storage",
        str(tmp_path),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True
    assert summary["rows"] == 750
    assert summary["classes"] == 15
    assert summary["rejected"] == 0
    assert summary["manifest_uri"] == f"{tmp_path}/datasets/dance15/manifest.csv"
    again = json.loads(
        run_cli(
            "plan",
            "--annotations",
            str(KINETICS / "kinetics-600_val.csv"),
            "--class-contains",
            "dancing",
            "--per-class",
            "50",
            "--seed",
            "0",
            "--dataset",
            "dance15",
            "--storage",
            str(tmp_path),
            "--json",
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    assert again["written"] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--per-class", "0"], "valid range 1 <= value <= 1000000"),
        (["--set", "plan.bogus=1"], "plan.bogus: unknown key"),
        (["--classes", "tap dance"], "did you mean 'tap dancing'"),
        (["--classes", "a", "--all-classes"], "choose exactly one class selector"),
        (["--dataset", "../etc"], "plan.dataset"),
    ],
)
def test_plan_errors_exit_2_with_a_reason(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli(
        "plan", "--annotations", str(KINETICS / "kinetics-600_val.csv"), "--storage", str(tmp_path), *args
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).with_name("action-recognition")
    assert exe.exists()
    assert subprocess.run([str(exe), "version"], capture_output=True, text=True, check=True).stdout.strip()


def test_a_demo_that_cannot_start_exits_2_with_one_line(tmp_path: Path) -> None:
    """Outside a checkout (no bundled videos where it looks): one line saying what to do, no traceback."""
    argv = [sys.executable, "-m", "devtools", "demo", "--videos", str(tmp_path / "nowhere")]
    result = subprocess.run(
        [*argv, "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no demo.mp4 there" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_the_developer_tools_answer_help() -> None:
    """``python -m devtools``: the demo, the smoke run and the local "YouTube", outside the package."""
    from typer.testing import CliRunner

    from devtools.cli import app

    names = [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands]  # type: ignore[union-attr]
    assert sorted(names) == ["demo", "demo-site", "serve-videos", "smoke"], names
    for name in names:
        result = CliRunner().invoke(app, [name, "--help"])
        assert result.exit_code == 0 and "Usage" in result.stdout, (name, result.output)
    top = subprocess.run(
        [sys.executable, "-m", "devtools", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert top.returncode == 0 and "demo" in top.stdout, top.stderr


@pytest.mark.parametrize(
    ("tracking", "ui"),
    [
        ("sqlite:////w/mlflow.db", "mlflow ui --backend-store-uri sqlite:////w/mlflow.db --port 5000"),
        ("http://127.0.0.1:5000", "open http://127.0.0.1:5000"),
    ],
)
def test_the_demo_ends_with_next_steps_for_its_own_stores(tracking: str, ui: str) -> None:
    """The default demo (a local MLflow store) says how to open its UI; pointed at a server, the server. The run
    itself, with each step run as printed against the server: tests/integration/test_pipeline_dag.py."""
    from devtools.demo import DemoResult, demo_text

    summary = {
        "rows": 13,
        "states": {"ok": 12, "unavailable": 1},
        "models": {
            "demo-rgb": {
                "champion": "models:/demo-rgb@champion",
                "version": "1",
                "metrics": {"test_top1": 0.5},
                "untrained": True,
            }
        },
        "training": "short profile",
    }
    text = demo_text(DemoResult("/w", "/w/storage", tracking, summary), Path("/v/demo.mp4"))
    assert "models:/demo-rgb@champion (version 1, UNTRAINED): test top-1 0.500" in text
    steps = {line.split(":  ", 1)[0].strip(): line.split(":  ", 1)[1] for line in text.splitlines()[-3:]}
    assert steps["1. the runs and the registry"].split("   (")[0] == ui
    assert steps["2. predict with the champion"] == (
        f"action-recognition predict /v/demo.mp4 --model models:/demo-rgb@champion --tracking-uri {tracking}"
    )
    assert "status --storage /w/storage --dataset demo" in text
