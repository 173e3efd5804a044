"""Airflow as it is deployed, on this machine: api-server, scheduler, dag-processor and triggerer as separate
processes (LocalExecutor), the repository's dags/ and plugins/, SimpleAuthManager with a known admin password.

Unlike ``airflow dags test`` this goes through everything a person meets: the trigger form and its validation,
the scheduler (pause state, schedules, asset events), the executor and the REST API.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.support.airflow import airflow_env, init_airflow

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
TERMINAL = {"success", "failed"}


class AirflowAPI:
    """Airflow's REST API as a person's scripts use it: a JWT from ``/auth/token``, then ``/api/v2``."""

    def __init__(self, url: str, user: str, password: str) -> None:
        self.url = url
        self.user = user
        self.password = password
        self._token: str | None = None

    # ------------------------------------------------------------------------------------------ REST API

    def token(self) -> str:
        if self._token is None:
            body = self._request(
                "POST", "/auth/token", {"username": self.user, "password": self.password}, auth=False
            )
            self._token = str(body["access_token"])
        return self._token

    #: Seconds a call keeps trying while the api-server is unreachable or answers 5xx (it is being restarted).
    patience = 180.0

    def _request(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        data = None if body is None else json.dumps(body).encode()
        deadline = time.monotonic() + self.patience
        while True:
            req = urllib.request.Request(self.url + path, data=data, method=method)
            req.add_header("Content-Type", "application/json")
            if auth:
                req.add_header("Authorization", f"Bearer {self.token()}")
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    text = resp.read()
                return json.loads(text) if text else None
            except urllib.error.HTTPError as exc:
                if exc.code < 500 or method != "GET" or time.monotonic() > deadline:
                    raise
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
            time.sleep(2)

    def api(self, method: str, path: str, body: Any = None) -> Any:
        return self._request(method, path, body)

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=-logical_date")["dag_runs"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        quoted = urllib.request.quote(run_id, safe="")
        return list(
            self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances?limit=500")[
                "task_instances"
            ]
        )

    def task_seconds(self, dag_id: str, run_id: str) -> dict[str, dict[str, float]]:
        """Per task id: how many task instances, their summed and their longest duration (s), and when the
        first started and the last ended (s after the run's first start): where a run's time went."""
        tis = [t for t in self.task_instances(dag_id, run_id) if t.get("start_date") and t.get("end_date")]
        if not tis:
            return {}

        def at(stamp: str) -> float:
            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()

        origin = min(at(t["start_date"]) for t in tis)
        out: dict[str, dict[str, float]] = {}
        for t in tis:
            row = out.setdefault(t["task_id"], {"n": 0, "sum": 0.0, "max": 0.0, "from": 1e9, "to": 0.0})
            seconds = float(t.get("duration") or 0.0)
            row["n"] += 1
            row["sum"] = round(row["sum"] + seconds, 1)
            row["max"] = round(max(row["max"], seconds), 1)
            row["from"] = round(min(row["from"], at(t["start_date"]) - origin), 1)
            row["to"] = round(max(row["to"], at(t["end_date"]) - origin), 1)
        return dict(sorted(out.items(), key=lambda kv: kv[1]["from"]))

    def slow_task_logs(self, dag_id: str, run_id: str, over_s: float = 120, lines: int = 60) -> str:
        """The log of each task instance that ran longer than ``over_s``, each line with its time: where a
        slow task waited (a diagnostic: never raises)."""
        try:
            out = []
            for ti in self.task_instances(dag_id, run_id):
                if float(ti.get("duration") or 0) <= over_s:
                    continue
                text = "\n".join(
                    f"    {e.get('timestamp', '')} {e.get('level', '')} {e.get('event', '')}"[:400]
                    for e in self.task_log(dag_id, run_id, ti)[-lines:]
                )
                out.append(
                    f"{ti['task_id']}[{ti['map_index']}] try {ti['try_number']}, {ti['duration']} s:\n{text}"
                )
            return "\n".join(out) or f"no task over {over_s} s"
        except Exception as exc:  # a diagnostic must never fail the test it explains
            return f"(no slow-task logs: {exc!r})"

    def task_log(self, dag_id: str, run_id: str, ti: dict[str, Any]) -> list[dict[str, Any]]:
        """The events of a task instance's last try's log (one ``(no log: HTTP n)`` event when there is
        none)."""
        quoted = urllib.request.quote(run_id, safe="")
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{ti['task_id']}/logs/"
            f"{max(ti['try_number'], 1)}?full_content=true&map_index={ti['map_index']}"
        )
        try:
            content = self.api("GET", path).get("content", [])
        except urllib.error.HTTPError as exc:
            content = [{"event": f"(no log: HTTP {exc.code})"}]
        return [e for e in content if isinstance(e, dict)]

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        """A task's ``return_value`` XCom, decoded."""
        quoted = urllib.request.quote(run_id, safe="")
        value = self.api(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task_id}/xcomEntries/return_value"
        )["value"]
        return json.loads(value) if isinstance(value, str) else value

    def preflight_checks(self, dag_id: str, run_id: str) -> dict[str, str]:
        """Status by check name of the run's ``preflight`` task (``doctor``'s checks plus the pool checks)."""
        return {c["name"]: c["status"] for c in self.xcom(dag_id, run_id, "preflight")["checks"]}

    def wait_run(self, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
        """The run once it is success or failed; TimeoutError naming the unfinished tasks otherwise."""
        quoted = urllib.request.quote(run_id, safe="")
        deadline = time.monotonic() + timeout
        while True:
            run: dict[str, Any] = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}")
            if run["state"] in TERMINAL:
                return run
            if time.monotonic() > deadline:
                states = {t["task_id"]: t["state"] for t in self.task_instances(dag_id, run_id)}
                raise TimeoutError(f"{dag_id} {run_id} still {run['state']} after {timeout} s: {states}")
            time.sleep(3)

    def failure_report(self, dag_id: str, run_id: str, lines: int = 40) -> str:
        """Each failed task of the run with the last error/warning lines of its last try's log: what a person
        reads in the UI's log tab, put into an assertion message."""
        try:
            return self._failure_report(dag_id, run_id, lines)
        except Exception as exc:  # a diagnostic must never hide the assertion it explains
            return f"(no failure report: {exc!r})"

    def _failure_report(self, dag_id: str, run_id: str, lines: int) -> str:
        out = []
        for ti in self.task_instances(dag_id, run_id):
            if ti["state"] != "failed":
                continue
            events = self.task_log(dag_id, run_id, ti)
            picked = [e for e in events if e.get("level") in ("error", "warning", "critical")] or events
            text = "\n".join(
                f"    {e.get('level', '')} {e.get('event', '')} {e.get('error_detail', '')}"[:600]
                for e in picked[-lines:]
            )
            out.append(f"{ti['task_id']}[{ti['map_index']}] try {ti['try_number']} failed:\n{text}")
        return "\n".join(out) or "no failed task"

    def wait_task_state(self, dag_id: str, run_id: str, task_id: str, state: str, timeout: float) -> None:
        """Until ``task_id`` of the run is in ``state``; AssertionError when a task fails first."""
        deadline = time.monotonic() + timeout
        while True:
            states = {t["task_id"]: t["state"] for t in self.task_instances(dag_id, run_id)}
            if states.get(task_id) == state:
                return
            failed = [t for t, s in states.items() if s in ("failed", "upstream_failed")]
            assert not failed, f"{dag_id} {run_id}: {failed} failed before {task_id} was {state}: {states}"
            assert time.monotonic() < deadline, f"{task_id} not {state} after {timeout} s: {states}"
            time.sleep(3)

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        """A manual run with ``conf`` through the REST API (what a person's script does); its run id."""
        body = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
        return str(body["dag_run_id"])

    def wait_next_run(self, dag_id: str, after: set[str], timeout: float) -> dict[str, Any]:
        """The first run of ``dag_id`` whose id is not in ``after`` (one the scheduler starts on its own)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = [r for r in self.runs(dag_id) if r["dag_run_id"] not in after]
            if new:
                return new[-1]
            time.sleep(3)
        raise TimeoutError(f"no new {dag_id} run appeared in {timeout} s (known: {sorted(after)})")

    def wait_first_run(self, dag_id: str, timeout: float) -> dict[str, Any]:
        """The first run of ``dag_id`` to appear (e.g. one the scheduler starts on its own)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.runs(dag_id)
            if runs:
                return runs[-1]
            time.sleep(3)
        raise TimeoutError(f"no {dag_id} run appeared in {timeout} s")


class AirflowDeployment(AirflowAPI):
    """Start with ``with AirflowDeployment(home, port, **env) as af:``; ``af.url`` is the UI."""

    def __init__(
        self,
        home: Path,
        port: int,
        *,
        user: str = "admin",
        password: str = "admin-test-pw",
        migrated: Path | None = None,
        **extra_env: str,
    ) -> None:
        super().__init__(f"http://127.0.0.1:{port}", user, password)
        self.home = home
        self.port = port
        self.migrated = migrated  # a home whose migrated database this one starts from (init_airflow)
        home.mkdir(parents=True, exist_ok=True)
        passwords = home / "passwords.json"
        passwords.write_text(json.dumps({user: password}))
        self.env = airflow_env(
            home,
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            AIRFLOW__CORE__PARALLELISM="4",
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(port),
            AIRFLOW__API__BASE_URL=self.url,
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{self.url}/execution/",
            AIRFLOW__CORE__AUTH_MANAGER="airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{user}:admin",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords),
            AIRFLOW__API_AUTH__JWT_SECRET="test-jwt-secret-of-this-deployment-only",
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
            AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
            AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
            # The preflight task asks the REST API whether the download pool exists, as the operator
            # documents.
            AIRFLOW_CONN_AR_AIRFLOW_API=json.dumps(
                {"conn_type": "http", "host": "127.0.0.1", "port": port, "login": user, "password": password}
            ),
            **extra_env,
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    # ------------------------------------------------------------------------------------------ processes

    def __enter__(self) -> AirflowDeployment:
        init_airflow(self.env, self.migrated)
        (self.home / "logs").mkdir(exist_ok=True)
        try:
            for name in COMPONENTS:
                self.start(name)
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, name: str) -> None:
        log = open(self.home / "logs" / f"{name}.log", "ab")  # noqa: SIM115 (owned by the process)
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "airflow", name],
            env=self.env,
            cwd=self.home,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        """Every component asked to stop at once (one after another took up to half a minute more), then each
        waited for; one that outlives 30 s is killed."""
        running = [p for p in self.procs.values() if p.poll() is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):  # it ended since
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        self.procs.clear()

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.home / "logs" / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def wait_healthy(self, timeout: float = 240) -> None:
        """Until the api-server answers, the scheduler and dag-processor report healthy and both DAGs are
        parsed."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"airflow {name} exited with {proc.returncode}:\n{self.log_tail(name)}"
                    )
            try:
                health = self._request("GET", "/api/v2/monitor/health", auth=False)
                dags = {d["dag_id"] for d in self.api("GET", "/api/v2/dags")["dags"]}
                last = (health, dags)
                if (
                    health["scheduler"]["status"] == "healthy"
                    and health["dag_processor"]["status"] == "healthy"
                    and {"kinetics_pipeline", "kinetics_retrain"} <= dags
                ):
                    return
            except (OSError, KeyError, TypeError, ValueError) as exc:
                last = exc
            time.sleep(2)
        raise TimeoutError(f"Airflow not healthy after {timeout} s: {last}\n{self.log_tail('api-server')}")


def http_status(url: str, headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
