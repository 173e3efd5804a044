"""What MLflow's basic auth costs a step, with and without the credential cache the compose stack turns on.

The stack's MLflow runs ``--app-name basic-auth``: every request a step makes (a metric, a tag, an artifact
listing, a registry call) carries the password, and the server checks it against its scrypt hash, deliberately
slow. With ``auth_cache_ttl_seconds`` (compose: ``MLFLOW_AUTH_CACHE_TTL_S``, 60) a server worker checks each
credential once per TTL. Two servers in turn, the same except for that setting (SQLite backend, one worker),
get the same client workload: one run, ``--metrics`` metrics logged one request each, searches and tags.
Printed: milliseconds per request and the server's CPU seconds, the cache's ratio against the uncached server
measured in the same run.

Run: ``python -m benchmarks.bench_mlflow_auth [--metrics 100] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.paths import free_port

USER, PASSWORD = "admin", "bench-admin-password-1"
#: The workload, run in a child process whose environment carries the credentials (as a step's does).
WORKLOAD = """
import json, sys, time
from mlflow import MlflowClient
client = MlflowClient(sys.argv[1])
metrics = int(sys.argv[2])
start = time.perf_counter()
experiment = client.create_experiment("bench")
run = client.create_run(experiment).info.run_id
for step in range(metrics):
    client.log_metric(run, "loss", 1.0 / (step + 1), step=step)
for i in range(metrics // 5):
    client.set_tag(run, f"tag{i}", str(i))
    client.search_runs([experiment], max_results=5)
requests = 2 + metrics + 2 * (metrics // 5)
print(json.dumps({"requests": requests, "seconds": time.perf_counter() - start}))
"""


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its children still alive (the server's gunicorn worker)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _server(root: Path, ttl: int) -> tuple[subprocess.Popen[bytes], str]:
    ini = root / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{root}/auth.db\nadmin_username = {USER}\nadmin_password = {PASSWORD}\n"
        f"auth_cache_ttl_seconds = {ttl}\n"
    )
    port = free_port()
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": "bench"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    argv = [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth", "--workers", "1"]
    argv += ["--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--host", "127.0.0.1", "--port", str(port)]
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=5):
                return proc, uri
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError((root / "server.log").read_text()[-2000:]) from None
            time.sleep(0.5)


def measure(ttl: int, metrics: int) -> dict[str, Any]:
    """The workload against a basic-auth server with ``auth_cache_ttl_seconds = ttl``."""
    with tempfile.TemporaryDirectory(prefix="bench-mlflow-auth-") as tmp:
        proc, uri = _server(Path(tmp), ttl)
        try:
            before = _cpu_seconds(proc.pid)
            env = {**os.environ, "MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": PASSWORD}
            out = subprocess.run(
                [sys.executable, "-c", WORKLOAD, uri, str(metrics)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                timeout=1800,
            )
            cpu = _cpu_seconds(proc.pid) - before
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "ttl_s": ttl,
        "requests": result["requests"],
        "ms_per_request": 1000 * result["seconds"] / result["requests"],
        "server_cpu_s": cpu,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metrics", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    baseline = measure(0, args.metrics)
    cached = measure(60, args.metrics)
    ratios = {
        "ms_per_request": baseline["ms_per_request"] / cached["ms_per_request"],
        "server_cpu_s": baseline["server_cpu_s"] / max(cached["server_cpu_s"], 1e-9),
    }
    if args.json:
        print(json.dumps({"baseline": baseline, "cached": cached, "ratio": ratios}))
        return
    print(f"MLflow basic auth, {baseline['requests']} requests (one run's metrics, tags and searches):")
    for name, row in (("every request checked (ttl 0)", baseline), ("cached 60 s (compose)", cached)):
        print(
            f"  {name:32s} {row['ms_per_request']:7.1f} ms/request, server CPU {row['server_cpu_s']:6.2f} s"
        )
    print(
        f"  the cache: {ratios['ms_per_request']:.2f}x faster per request, "
        f"{ratios['server_cpu_s']:.2f}x less server CPU"
    )


if __name__ == "__main__":
    main()
