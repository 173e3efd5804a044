"""The console script: --help everywhere, --json as the last stdout line, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import KINETICS

CLI = [sys.executable, "-m", "action_recognition"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


def test_help_on_every_command() -> None:
    top = run_cli("--help")
    assert top.returncode == 0
    commands = [
        "plan",
        "download",
        "clip",
        "status",
        "top-up",
        "pose",
        "build-dataset",
        "train",
        "evaluate",
        "register",
        "promote",
        "predict",
        "render",
        "version",
    ]
    for command in commands:
        assert command in top.stdout
        result = run_cli(command, "--help")
        assert result.returncode == 0, result.stderr
        assert "Usage" in result.stdout


def test_plan_json_last_line(tmp_path: Path) -> None:
    result = run_cli(
        "plan", "--annotations", str(KINETICS / "kinetics-600_val.csv"), "--class-contains", "dancing",
        "--per-class", "50", "--seed", "0", "--dataset", "dance15", "--storage", str(tmp_path), "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True
    assert summary["rows"] == 750
    assert summary["classes"] == 15
    assert summary["rejected"] == 0
    assert summary["manifest_uri"] == f"{tmp_path}/datasets/dance15/manifest.csv"
    again = json.loads(run_cli(
        "plan", "--annotations", str(KINETICS / "kinetics-600_val.csv"), "--class-contains", "dancing",
        "--per-class", "50", "--seed", "0", "--dataset", "dance15", "--storage", str(tmp_path), "--json",
    ).stdout.strip().splitlines()[-1])  # fmt: skip
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
    result = run_cli("plan", "--annotations", str(KINETICS / "kinetics-600_val.csv"), "--storage", str(tmp_path), *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).with_name("action-recognition")
    assert exe.exists()
    assert subprocess.run([str(exe), "version"], capture_output=True, text=True, check=True).stdout.strip()
