"""``StepOperator`` and ``PreflightOperator`` without an engine, the way the Airflow Docker provider tests its
own operator: ``docker.APIClient`` and ``docker.DockerClient`` replaced by ``mock.Mock(spec=...)`` objects, a
spec'd task instance as the context, table-driven cases. The real engine is
tests/integration/test_docker_runner.py."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException
from docker.errors import NotFound
from docker.types import DeviceRequest

import docker
from docker import APIClient
from tests.support.airflow import ROOT

sys.path.insert(0, str(ROOT / "plugins"))

from ar_provider import operators
from ar_provider.operators import PreflightOperator, StepOperator

SUMMARY = {"ok": True, "run_id": "r1", "dataset_uri": "s3://bkt/ar/datasets/d/keypoints-1.npz"}
OVERRIDES = {"plan": {"per_class": 4}, "train": {"epochs": 3}}
CHECKED = {"dataset": "d", "storage_uri": "s3://bkt/ar", "overrides": OVERRIDES}


class FakeTI:
    """What a step reads of its task instance: ids for the container name, the validated Params' XCom."""

    dag_id = "kinetics_pipeline"
    task_id = "train_keypoint"
    run_id = "manual__2026-12-06"
    map_index = -1

    def __init__(self, checked: Any = CHECKED) -> None:
        self.xcom_pull = mock.Mock(return_value=checked)


def context(models: list[str] | None = None, checked: Any = CHECKED) -> dict[str, Any]:
    return {
        "ti": FakeTI(checked),
        "params": {"models": models if models is not None else ["keypoint", "rgb"]},
    }


def step(**kwargs: Any) -> StepOperator:
    defaults: dict[str, Any] = {"task_id": "train_keypoint", "step": "train", "aws_conn_id": None}
    return StepOperator(**{**defaults, **kwargs})


@pytest.fixture
def api() -> Iterator[mock.Mock]:
    """The DockerOperator's engine client: one container that prints a log line, then the step's summary."""
    client = mock.Mock(spec=APIClient)
    client.images.return_value = [{"Id": "sha256:worker"}]
    client.create_container.return_value = {"Id": "c0ffee"}
    client.create_host_config.side_effect = lambda **kw: kw
    client.attach.return_value = iter([b"loading the dataset\n", json.dumps(SUMMARY).encode() + b"\n"])
    client.wait.return_value = {"StatusCode": 0}
    with (
        mock.patch("airflow.providers.docker.hooks.docker.APIClient", return_value=client),
        mock.patch(
            "airflow.providers.docker.operators.docker.DockerOperator.cli", new_callable=mock.PropertyMock
        ) as cli,
    ):
        cli.return_value = client
        yield client


@pytest.fixture
def engine() -> Iterator[mock.Mock]:
    """The high-level client ``_remove_leftover`` asks for a lost try's container: none there by default."""
    client = mock.Mock(spec=docker.DockerClient)
    client.containers = mock.Mock()
    client.containers.get.side_effect = NotFound("no such container")
    with mock.patch.object(docker, "DockerClient", return_value=client) as made:
        client.made = made
        yield client


# ----------------------------------------------------------------------------------------------------------
# argv


@pytest.mark.parametrize(
    ("args", "config_from", "expected"),
    [
        (["--dataset", "s3://x.npz"], None, ["train", "--dataset", "s3://x.npz", "--json"]),
        (["--kind", "", None, "keypoints"], None, ["train", "--kind", "keypoints", "--json"]),
        (
            ["--shard", "0/2"],
            "check_params",
            ["train", "--set", "plan.per_class=4", "--set", "train.epochs=3", "--shard", "0/2", "--json"],
        ),
    ],
    ids=["args as given", "empty and None dropped", "validated Params first, as --set pairs"],
)
def test_the_argv_is_built_from_args_and_the_validated_params(
    args: list[Any], config_from: str | None, expected: list[str]
) -> None:
    assert step(args=args, config_from=config_from)._argv(context()) == expected


@pytest.mark.parametrize("checked", [None, {"dataset": "d"}, "a string"])
def test_a_missing_params_xcom_is_an_error_naming_the_task(checked: Any) -> None:
    with pytest.raises(AirflowException, match="check_params returned no validated Params"):
        step(config_from="check_params")._argv(context(checked=checked))


# ----------------------------------------------------------------------------------------------------------
# runners


@pytest.mark.parametrize(("runner", "called"), [("local", "_run_local"), ("docker", "_run_docker")])
def test_the_runner_param_chooses_subprocess_or_container(runner: str, called: str) -> None:
    op = step(runner=runner)
    other = "_run_docker" if called == "_run_local" else "_run_local"
    with (
        mock.patch.object(StepOperator, called, return_value=json.dumps(SUMMARY)) as chosen,
        mock.patch.object(StepOperator, other) as unused,
    ):
        assert op.execute(context()) == SUMMARY
    chosen.assert_called_once()
    unused.assert_not_called()


def test_an_unknown_runner_is_refused_by_name() -> None:
    with pytest.raises(AirflowException, match="runner must be 'local' or 'docker', got 'kubernetes'"):
        step(runner="kubernetes").execute(context())


def test_a_family_left_out_of_the_models_param_is_skipped() -> None:
    with pytest.raises(AirflowSkipException, match="rgb models are not in the models Param"):
        step(skip_unless="rgb").execute(context(models=["keypoint"]))


def test_a_step_with_nothing_to_do_is_skipped_with_its_reason() -> None:
    """``{"nothing_to_do": why}`` (no dataset built yet, a dataset never planned): skipped, not failed nor done."""
    nothing = json.dumps({"ok": True, "nothing_to_do": "no keypoints dataset of d in s3://bkt/ar yet"})
    with (
        mock.patch.object(StepOperator, "_run_local", return_value=nothing),
        pytest.raises(AirflowSkipException, match="latest-dataset: no keypoints dataset of d in s3://bkt/ar"),
    ):
        step(step="latest-dataset").execute(context())


# ----------------------------------------------------------------------------------------------------------
# failures


@pytest.mark.parametrize(
    ("last_line", "exit_code", "error", "fails_at_once"),
    [
        (
            {"ok": False, "error": "bad arch", "error_type": "ConfigError", "retryable": False},
            2,
            AirflowFailException,
            True,
        ),
        (
            {"ok": False, "error": "S3 down", "error_type": "StorageError", "retryable": True},
            1,
            AirflowException,
            False,
        ),
        (None, -9, AirflowException, False),
        ({"ok": False, "error": "reported, exit 0", "retryable": False}, 0, AirflowFailException, True),
    ],
    ids=[
        "config error: no retry",
        "service error: retried",
        "killed, no summary: retried",
        "ok false in the summary",
    ],
)
def test_a_failed_local_step_is_classified(
    last_line: Any, exit_code: int, error: type, fails_at_once: bool
) -> None:
    lines = ["a log line\n", *([json.dumps(last_line) + "\n"] if last_line else [])]
    proc = mock.Mock(spec=operators.subprocess.Popen, stdout=iter(lines))
    proc.wait.return_value = exit_code
    with mock.patch.object(operators.subprocess, "Popen", return_value=proc), pytest.raises(error) as raised:
        step(runner="local").execute(context())
    assert isinstance(raised.value, AirflowFailException) is fails_at_once


@pytest.mark.parametrize(
    ("summary", "fails_at_once"),
    [
        ({"ok": False, "error": "no such dataset", "error_type": "DatasetError", "retryable": False}, True),
        ({"ok": False, "error": "MLflow 503", "error_type": "RegistryError", "retryable": True}, False),
    ],
)
def test_a_failed_container_is_classified_from_its_logs(
    api: mock.Mock, engine: mock.Mock, summary: dict[str, Any], fails_at_once: bool
) -> None:
    api.attach.return_value = iter([b"Traceback ...\n", json.dumps(summary).encode() + b"\n"])
    api.wait.return_value = {"StatusCode": 1}
    with pytest.raises(AirflowException) as raised:
        step(runner="docker").execute(context())
    assert isinstance(raised.value, AirflowFailException) is fails_at_once
    assert summary["error"] in str(raised.value)
    api.remove_container.assert_called_once_with(
        "c0ffee", force=True
    )  # a failed container is not left behind


# ----------------------------------------------------------------------------------------------------------
# docker


def test_the_container_runs_the_step_with_secrets_kept_private(
    api: mock.Mock, engine: mock.Mock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AR__TRAIN__EPOCHS", "3")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setenv("UNRELATED", "not passed")
    op = step(runner="docker", image="worker:test", network_mode="host", args=["--dataset", "s3://x.npz"])
    assert op.execute(context()) == SUMMARY
    created = api.create_container.call_args.kwargs
    assert created["command"] == [
        "python3",
        "-m",
        "action_recognition",
        "train",
        "--dataset",
        "s3://x.npz",
        "--json",
    ]
    assert created["image"] == "worker:test" and created["name"].startswith("ar-train_keypoint-")
    assert created["environment"]["AR__TRAIN__EPOCHS"] == "3" and "UNRELATED" not in created["environment"]
    assert "AWS_SECRET_ACCESS_KEY" not in op._container.environment, "secrets travel as private_environment"
    assert created["environment"]["AWS_SECRET_ACCESS_KEY"] == "s3cr3t"
    host = created["host_config"]
    assert host["network_mode"] == "host" and host["shm_size"] == 2 * 1024**3 and host["auto_remove"] is False
    api.remove_container.assert_called_once_with("c0ffee", force=True)


@pytest.mark.parametrize(
    ("gpu", "gpu_enabled", "requested"),
    [(True, "True", True), (True, "False", False), (False, "True", False), (True, True, True)],
)
def test_a_gpu_is_requested_only_by_gpu_steps_with_the_switch_on(
    api: mock.Mock, engine: mock.Mock, gpu: bool, gpu_enabled: Any, requested: bool
) -> None:
    step(runner="docker", gpu=gpu, gpu_enabled=gpu_enabled).execute(context())
    device_requests = api.create_host_config.call_args.kwargs["device_requests"]
    if requested:
        assert device_requests == [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    else:
        assert device_requests is None


@pytest.mark.parametrize(("threads", "given"), [(None, None), (1, "1"), (3, "3")])
def test_the_steps_share_of_the_cores_reaches_torch_in_the_container(
    api: mock.Mock, engine: mock.Mock, monkeypatch: pytest.MonkeyPatch, threads: int | None, given: str | None
) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    step(runner="docker", cpu_threads=threads).execute(context())
    assert api.create_container.call_args.kwargs["environment"].get("OMP_NUM_THREADS") == given


def test_a_local_step_gets_its_share_over_the_hosts_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    op = step(cpu_threads=2)
    with mock.patch.object(StepOperator, "_run_local", return_value=json.dumps(SUMMARY)) as run:
        op.execute(context())
    assert run.call_args.args[1]["OMP_NUM_THREADS"] == "2"


@pytest.mark.parametrize("threads", [0, -2])
def test_no_threads_is_refused_by_name(threads: int) -> None:
    with pytest.raises(ValueError, match=f"cpu_threads must be at least 1.*got {threads}"):
        step(cpu_threads=threads)


@pytest.mark.parametrize(
    ("raw", "threads"), [("", None), (" ", None), ("1", 1), ("4", 4), ("0", "at least 1"), ("two", "'two'")]
)
def test_the_deployments_step_threads(monkeypatch: pytest.MonkeyPatch, raw: str, threads: Any) -> None:
    from ar_provider.defaults import step_threads

    monkeypatch.setenv("AR_STEP_THREADS", raw)
    if isinstance(threads, str):
        with pytest.raises(ValueError, match=f"AR_STEP_THREADS must be.*{threads}"):
            step_threads()
    else:
        assert step_threads() == threads


def test_a_lost_tries_container_is_removed_before_the_retry(api: mock.Mock, engine: mock.Mock) -> None:
    leftover = mock.Mock(spec=docker.models.containers.Container)
    engine.containers.get.side_effect = None
    engine.containers.get.return_value = leftover
    op = step(runner="docker", docker_url="tcp://guard:2375")
    op.execute(context())
    name = op._container_name(context())
    engine.made.assert_called_with(base_url="tcp://guard:2375")
    engine.containers.get.assert_called_once_with(name)
    leftover.remove.assert_called_once_with(force=True)
    assert api.create_container.call_args.kwargs["name"] == name, "the retry runs under the same name"
    engine.close.assert_called_once()


def test_the_container_name_is_stable_per_task_instance() -> None:
    op = step()
    ti = FakeTI()
    first = op._container_name({"ti": ti})
    assert first == op._container_name({"ti": FakeTI()}), "the same task instance, the same name"
    ti.map_index = 3
    assert op._container_name({"ti": ti}) != first, "each mapped task its own container"


# ----------------------------------------------------------------------------------------------------------
# links


@pytest.mark.parametrize(
    ("xcom", "mlflow", "storage"),
    [
        ({"run_id": "abc", "experiment_id": "7"}, "http://mlflow:5000/#/experiments/7/runs/abc", ""),
        (
            {"dataset_uri": "s3://bkt/ar/datasets/d/keypoints-1.npz"},
            "",
            "http://minio:9001/browser/bkt/ar/datasets/d",
        ),
        ({"clips_prefix": "/data/ar/clips/s256"}, "", "file:///data/ar/clips/s256"),
        ("not a dict", "", ""),
    ],
)
def test_the_links_read_the_steps_xcom(
    xcom: Any, mlflow: str, storage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ar_provider import links

    monkeypatch.setattr(links.XCom, "get_value", classmethod(lambda cls, ti_key, key: xcom))
    monkeypatch.setenv("AR_MLFLOW_UI_URL", "http://mlflow:5000")
    monkeypatch.setenv("AR_STORAGE_UI_URL", "http://minio:9001")
    by_name = {link.name: link for link in StepOperator.operator_extra_links}
    assert by_name["MLflow run"].get_link(step(), ti_key=None) == mlflow
    assert by_name["Storage"].get_link(step(), ti_key=None) == storage


# ----------------------------------------------------------------------------------------------------------
# preflight


@pytest.mark.parametrize(
    ("pool_status", "doctor_ok", "error"),
    [
        ("ok", True, None),
        ("fail", True, "preflight failed: pool youtube_downloads"),
        ("fail", False, "pool youtube_downloads"),
    ],
)
def test_preflight_fails_at_once_naming_every_failed_check(
    pool_status: str, doctor_ok: bool, error: str | None
) -> None:
    op = PreflightOperator(task_id="preflight", pools=["youtube_downloads"], aws_conn_id=None)
    pool = {
        "name": "pool youtube_downloads",
        "status": pool_status,
        "detail": "missing" if pool_status else "",
    }
    doctor = {"ok": doctor_ok, "checks": [{"name": "ffmpeg", "status": "ok", "detail": ""}]}
    if not doctor_ok:
        doctor.update(error="ffmpeg missing", retryable=False)
    with (
        mock.patch.object(PreflightOperator, "_pool_checks", return_value=[pool]),
        mock.patch.object(StepOperator, "_run_local", return_value=json.dumps(doctor)),
    ):
        if error is None:
            assert [c["name"] for c in op.execute(context())["checks"]] == [
                "ffmpeg",
                "pool youtube_downloads",
            ]
        else:
            with pytest.raises(AirflowFailException, match=error):
                op.execute(context())
