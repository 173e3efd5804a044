"""``StepOperator``: one ``action-recognition`` step, as a local subprocess or a container of the worker
image.

The runner is a template field (``{{ params.runner }}``), so one DAG serves both: ``local`` for the embedded
default and tests, ``docker`` for production. GPU steps ask for a GPU through ``device_requests`` unless the
``gpu_enabled`` switch (a DAG Param, default ``AR_GPU``) turns the request off on machines without one. The
step's JSON summary (the last line of its stdout, DESIGN.md contract 1) is the task's XCom: references and
counts, never data. A summary with ``"nothing_to_do": reason`` (no dataset built yet, a dataset never
planned) skips the task with that reason.

Secrets reach the step only through its environment: S3 keys from the Airflow connection ``aws_conn_id`` (if
it exists) and anything in ``AR_SECRET_ENV_KEYS`` are passed as DockerOperator ``private_environment``, never
as arguments and never in the rendered template fields.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any, ClassVar

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowNotFoundException,
    AirflowSkipException,
)

from ar_provider.links import MLflowRunLink, StoragePrefixLink

#: Variables passed from the scheduler's environment to every step (values never logged).
PASS_ENV_PREFIXES = ("AR__", "AWS_", "MLFLOW_", "YOLO_", "TORCH_HOME", "HF_")
SECRET_NAMES = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SESSION_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)


def _last_summary(lines: Any) -> str:
    """The last line that is a JSON object: the step's summary (DESIGN.md contract 1)."""
    last = ""
    for line in lines:
        text = line.strip()
        if text.startswith("{") and text.endswith("}"):
            try:
                if isinstance(json.loads(text), dict):
                    last = text
            except json.JSONDecodeError:
                continue
    return last


def step_failure(step: str, detail: str, summary: str) -> AirflowException:
    """The exception for a failed step: ``AirflowFailException`` (no retry) when the step's JSON summary says
    its error is not retryable (bad configuration, bad input: the same try fails the same way), else a
    retryable one."""
    try:
        parsed = json.loads(summary) if summary else {}
    except json.JSONDecodeError:
        parsed = {}
    if isinstance(parsed, dict) and parsed.get("retryable") is False:
        kind = parsed.get("error_type", "error")
        return AirflowFailException(
            f"action-recognition {step}: {kind} that no retry can fix: {parsed.get('error')}"
        )
    return AirflowException(f"action-recognition {step} {detail}; last line: {summary}")


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


class StepOperator(BaseOperator):
    """Run ``action-recognition <step> <args> --json`` and return its JSON summary; a summary that says
    ``"nothing_to_do"`` skips the task (AirflowSkipException with the step's reason).

    :param step: The CLI sub-command (``plan``, ``download``, ``train``...).
    :param args: Its arguments (templated; empty strings are dropped, so a template can switch a flag off).
    :param runner: ``local`` or ``docker`` (templated).
    :param gpu: Whether the step wants a GPU (``device_requests`` in docker).
    :param gpu_enabled: The switch that turns GPU requests off on machines without one (templated).
    :param image: The worker image (templated).
    :param docker_url: Docker engine URL, e.g. the socket proxy ``tcp://docker-proxy:2375`` (templated).
    :param network_mode: Container network (``host`` in tests, the compose network in production).
    :param shm_size: Shared memory for PyTorch data loading, bytes.
    :param aws_conn_id: Airflow AWS connection with the storage keys; skipped when it does not exist.
    :param mounts: Extra docker mounts (``docker.types.Mount``), e.g. a local storage folder.
    :param skip_unless: A model family; the task is skipped unless the ``models`` Param lists it.
    :param config_from: The task whose XCom holds the validated Params (``check_params``): they reach the step
        as ``--set`` pairs, so every step loads the one config that task validated. None: the step's own args
        only.
    :param cpu_threads: CPU threads for torch in the step (``OMP_NUM_THREADS``); None: every core. A host that
        runs several steps at once gives each its share: torch threads that outnumber the cores wait for each
        other, and two 2-thread steps on 2 cores each took 4x as long as one alone (1 thread each: 1.6x).
    """

    template_fields: Sequence[str] = ("args", "runner", "gpu_enabled", "image", "docker_url", "network_mode")
    template_fields_renderers: ClassVar[dict[str, str]] = {"args": "json"}
    operator_extra_links = (MLflowRunLink(), StoragePrefixLink())
    ui_color = "#dbe9f6"

    def __init__(
        self,
        *,
        step: str,
        args: Sequence[Any] = (),
        runner: str = "local",
        gpu: bool = False,
        gpu_enabled: str | bool = False,
        image: str = "action-recognition-worker:latest",
        docker_url: str = "unix://var/run/docker.sock",
        network_mode: str | None = None,
        shm_size: int = 2 * 1024**3,
        aws_conn_id: str | None = "ar_storage",
        mounts: list[Any] | None = None,
        skip_unless: str | None = None,
        config_from: str | None = None,
        cpu_threads: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.step = step
        self.args = args
        self.runner = runner
        self.gpu = gpu
        self.gpu_enabled = gpu_enabled
        self.image = image
        self.docker_url = docker_url
        self.network_mode = network_mode
        self.shm_size = shm_size
        self.aws_conn_id = aws_conn_id
        self.mounts = mounts or []
        self.skip_unless = skip_unless
        self.config_from = config_from
        if cpu_threads is not None and cpu_threads < 1:
            raise ValueError(f"cpu_threads must be at least 1 (or None: every core), got {cpu_threads}")
        self.cpu_threads = cpu_threads
        self._proc: subprocess.Popen[str] | None = None

    # ------------------------------------------------------------------------------------------ environment

    def _environment(self) -> tuple[dict[str, str], dict[str, str]]:
        """(public, secret) environment for the step."""
        public: dict[str, str] = {}
        secret: dict[str, str] = {}
        for name, value in os.environ.items():
            if name.startswith(PASS_ENV_PREFIXES):
                (secret if name in SECRET_NAMES else public)[name] = value
        for name in filter(None, os.environ.get("AR_SECRET_ENV_KEYS", "").split(",")):
            if name in os.environ:
                secret[name] = os.environ[name]
        if self.aws_conn_id:
            from action_recognition.airflow_adapter import storage_env_from_connection

            try:
                conn_env = storage_env_from_connection(self.aws_conn_id)
            except AirflowNotFoundException:
                conn_env = {}  # no connection: the environment carries the storage settings
            for name, value in conn_env.items():
                (secret if name in SECRET_NAMES else public)[name] = value
        if self.cpu_threads:
            public["OMP_NUM_THREADS"] = str(self.cpu_threads)
        return public, secret

    def _argv(self, context: Any) -> list[str]:
        args = [str(a) for a in self.args if a is not None and str(a) != ""]
        if self.config_from:
            from action_recognition.airflow_adapter import set_pairs

            checked = context["ti"].xcom_pull(task_ids=self.config_from)
            if not isinstance(checked, dict) or "overrides" not in checked:
                raise AirflowException(f"{self.config_from} returned no validated Params: {checked!r}")
            args = [*set_pairs(checked["overrides"]), *args]
        return [self.step, *args, "--json"]

    # ------------------------------------------------------------------------------------------ execution

    def execute(self, context: Any) -> dict[str, Any]:
        if self.skip_unless and self.skip_unless not in (context["params"].get("models") or []):
            raise AirflowSkipException(f"{self.skip_unless} models are not in the models Param")
        argv = self._argv(context)
        public, secret = self._environment()
        self.log.info("action-recognition %s (runner=%s)", " ".join(argv), self.runner)
        if self.runner == "local":
            last = self._run_local(
                argv, {**os.environ, **public, **secret}
            )  # a local step keeps the whole env
        elif self.runner == "docker":
            last = self._run_docker(argv, public, secret, context)
        else:
            raise AirflowException(f"runner must be 'local' or 'docker', got {self.runner!r}")
        try:
            result: dict[str, Any] = json.loads(last)
        except (TypeError, json.JSONDecodeError) as exc:
            raise AirflowException(
                f"{self.step}: the last stdout line is not the JSON summary: {last!r}"
            ) from exc
        if not result.get("ok", True):
            raise step_failure(self.step, "failed", last)
        if isinstance(result.get("nothing_to_do"), str):  # no dataset built yet...: skipped, with the reason
            raise AirflowSkipException(f"action-recognition {self.step}: {result['nothing_to_do']}")
        return result

    def _run_local(self, argv: list[str], env: dict[str, str]) -> str:
        cmd = [sys.executable, "-m", "action_recognition", *argv]
        self._proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        lines = []
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            lines.append(line.rstrip("\n"))
            self.log.info("%s", lines[-1])
        code = self._proc.wait()
        last = _last_summary(lines)
        if code != 0:
            raise step_failure(self.step, f"exited with status {code}", last)
        return last

    def _container_name(self, context: Any) -> str:
        ti = context["ti"]
        raw = f"{ti.dag_id}-{ti.task_id}-{getattr(ti, 'map_index', -1)}-{ti.run_id}"
        digest = hashlib.sha256(raw.encode()).hexdigest()[:10]
        return re.sub(r"[^a-zA-Z0-9_.-]", "-", f"ar-{ti.task_id}-{digest}")[:120]

    def _remove_leftover(self, name: str) -> None:
        """A retry after a killed task must not find (or collide with) the previous try's container."""
        import docker

        client = docker.DockerClient(base_url=self.docker_url)
        try:
            client.containers.get(name).remove(force=True)
            self.log.warning("removed leftover container %s of a previous try", name)
        except docker.errors.NotFound:
            pass
        finally:
            client.close()

    def _run_docker(
        self, argv: list[str], public: dict[str, str], secret: dict[str, str], context: Any
    ) -> str:
        from airflow.providers.docker.exceptions import DockerContainerFailedException
        from airflow.providers.docker.operators.docker import DockerOperator
        from docker.types import DeviceRequest

        name = self._container_name(context)
        self._remove_leftover(name)
        device_requests = None
        if self.gpu and _truthy(self.gpu_enabled):
            device_requests = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
        container = DockerOperator(
            task_id=f"{self.task_id}-container",
            image=self.image,
            command=["python3", "-m", "action_recognition", *argv],
            container_name=name,
            docker_url=self.docker_url,
            environment=public,
            private_environment=secret,
            network_mode=self.network_mode,
            mount_tmp_dir=False,
            auto_remove="force",
            shm_size=self.shm_size,
            device_requests=device_requests,
            mounts=self.mounts,
            tty=False,
            # Every line: stderr and stdout interleave, so the summary is found, not assumed last.
            xcom_all=True,
        )
        self._container = container
        try:
            output = container.execute(context) or []
        except DockerContainerFailedException as exc:
            lines = [str(line) for line in (getattr(exc, "logs", None) or [])]
            raise step_failure(self.step, f"container failed ({exc})", _last_summary(lines)) from exc
        lines = output if isinstance(output, list) else str(output).splitlines()
        return _last_summary(str(line) for line in lines)

    def on_kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
        container = getattr(self, "_container", None)
        if container is not None:
            container.on_kill()


class PreflightOperator(StepOperator):
    """``action-recognition doctor`` on the runner that will do the work, plus what only Airflow's side can
    ask: whether the pools the DAG's tasks use exist (a task in a missing pool is never scheduled, silently).

    The pool check asks Airflow's REST API with the credentials of the connection ``api_conn_id`` (an ``http``
    connection to the api-server: host, port, login, password). Without that connection the pools go unchecked
    and the task log says so.

    :param pools: Pools the DAG's tasks use.
    :param api_conn_id: The connection to Airflow's own REST API.
    """

    def __init__(
        self, *, pools: Sequence[str] = (), api_conn_id: str = "ar_airflow_api", **kwargs: Any
    ) -> None:
        kwargs.setdefault("step", "doctor")
        super().__init__(**kwargs)
        self.pools = list(pools)
        self.api_conn_id = api_conn_id

    def _pool_checks(self) -> list[dict[str, str]]:
        from airflow.sdk import BaseHook

        from action_recognition.doctor import check_pool

        if not self.pools:
            return []
        try:
            conn = BaseHook.get_connection(self.api_conn_id)
        except AirflowNotFoundException:
            self.log.warning(
                "pools %s not checked: no %s connection to Airflow's REST API (an http connection "
                "with the api-server's host, port, login and password)",
                self.pools,
                self.api_conn_id,
            )
            return []
        host = conn.host or "localhost"
        if not host.startswith(("http://", "https://")):
            scheme = "https" if conn.conn_type == "https" else "http"
            host = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
        return [check_pool(host, conn.login or "", conn.password or "", pool).__dict__ for pool in self.pools]

    def execute(self, context: Any) -> dict[str, Any]:
        pools = self._pool_checks()
        for check in pools:
            self.log.info("%s  %s  %s", check["status"], check["name"], check["detail"])
        failed = "; ".join(f"{c['name']}: {c['detail']}" for c in pools if c["status"] == "fail")
        try:
            result = super().execute(context)
        except AirflowException as exc:  # every failure named, the step's and the pools'
            raise AirflowFailException(f"{exc}; {failed}" if failed else str(exc)) from exc
        if failed:
            raise AirflowFailException(f"preflight failed: {failed}")
        return {**result, "checks": [*result.get("checks", []), *pools]}
