"""No secret in the code, the DAGs, the images or compose: secrets come from the environment or Airflow
connections, and .env.example holds only empty values."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support.reliability import Reliability

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = (
    "action_recognition/",
    "dags/",
    "plugins/",
    "docker/",
    "scripts/",
    "benchmarks/",
    "docker-compose.yaml",
    "Makefile",
    "pyproject.toml",
    ".ci/",
)
PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "password or secret literal": re.compile(
        # key = "literal", key: "literal" or "key": "literal"; not a psql variable (PASSWORD :'name')
        r"(?i)\b(password|passwd|secret|secret_key|token|api_key)\b[\"']?\s*(=|(?<!\s):)\s*[\"'][^\"'${}<>\s]{6,}[\"']"
    ),
    "credentials in a URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@${}]+:[^/\s@${}]{6,}@"),
}


def _shipped_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", *SHIPPED], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / p for p in out.stdout.split()]


def test_no_secret_in_shipped_files(reliability: Reliability) -> None:
    files = _shipped_files()
    assert len(files) > 30
    with reliability.probe("secrets: none in the code, DAGs, images, compose or scripts"):
        found = [
            f"{p.relative_to(ROOT)}:{n}: {name}"
            for p in files
            for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
            for name, pattern in PATTERNS.items()
            if pattern.search(line)
        ]
        assert found == []


def test_env_example_holds_no_values_for_secrets(reliability: Reliability) -> None:
    with reliability.probe("secrets: .env.example leaves every secret empty"):
        values = dict(
            line.split("=", 1)
            for line in (ROOT / ".env.example").read_text().splitlines()
            if line and not line.startswith("#")
        )
        secret_names = [k for k in values if re.search(r"PASSWORD|SECRET|FERNET|_KEY$", k)]
        assert len(secret_names) >= 10
        assert {k: values[k] for k in secret_names if values[k].strip()} == {}
    assert (ROOT / ".env").exists() is False or ".env" in (ROOT / ".gitignore").read_text()
