"""An MLflow run written through an explicit client: what ``mlflow.start_run`` and the fluent ``log_*`` calls
do, with the tracking server passed in instead of read from a process-wide URI (see
:mod:`action_recognition.services`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from action_recognition.services import mlflow_client

log = logging.getLogger(__name__)


@dataclass
class RunLog:
    """One run of the server ``client`` talks to; ``tracking_uri`` names that server in messages."""

    client: Any
    run_id: str
    tracking_uri: str

    def params(self, values: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in values.items()])

    def tags(self, values: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in values.items()])

    def metrics(self, values: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [Metric(k, float(v), now, step) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=rows)

    def dict(self, value: Any, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, value, artifact_file)

    def artifacts(self, folder: Path) -> None:
        self.client.log_artifacts(self.run_id, str(folder))

    def dataset(self, dataset: Any, context: str, tags: Mapping[str, str]) -> None:
        """An ``mlflow.data`` dataset as the run's input (what ``mlflow.log_input`` records)."""
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        labels = [InputTag(MLFLOW_DATASET_CONTEXT, context), *(InputTag(k, v) for k, v in tags.items())]
        self.client.log_inputs(self.run_id, [DatasetInput(dataset._to_mlflow_entity(), labels)])


@contextmanager
def started_run(
    tracking_uri: str | None,
    experiment_id: str,
    *,
    run_id: str | None = None,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    system_metrics: bool = False,
) -> Iterator[RunLog]:
    """A new run (or run ``run_id`` again, left RUNNING by a killed try) for the block: FINISHED when it ends,
    FAILED when it raises (KILLED on Ctrl-C), system metrics sampled meanwhile when asked, as
    ``mlflow.start_run`` does."""
    from mlflow.tracking.context.registry import resolve_tags

    client = mlflow_client(tracking_uri)
    uri = str(client.tracking_uri)
    if run_id is None:
        named = {**(tags or {}), **({"mlflow.runName": run_name} if run_name else {})}
        run_id = client.create_run(experiment_id, run_name=run_name, tags=resolve_tags(named)).info.run_id
        resumed = False
    else:
        client.update_run(run_id, status="RUNNING")
        resumed = True
    monitor = _system_monitor(run_id, uri, resumed) if system_metrics else None
    status = "FAILED"
    try:
        yield RunLog(client, run_id, uri)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if monitor is not None:
            monitor.finish()
        _terminate(client, run_id, status)


def _system_monitor(run_id: str, tracking_uri: str, resumed: bool) -> Any | None:
    """CPU, memory, disk, network (and GPU) of this process sampled into the run, as MLflow's own
    ``log_system_metrics`` does; a monitor that cannot start is logged and left out, as there."""
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, resume_logging=resumed, tracking_uri=tracking_uri)
        monitor.start()
        return monitor
    except Exception as exc:  # psutil missing, a GPU library that fails: metrics are optional
        log.error("system metrics not logged: %s", exc)
        return None


def _terminate(client: Any, run_id: str, status: str) -> None:
    """End the run with ``status``; a server that cannot take it (down: the error being raised says so) leaves
    the run RUNNING, which the next try continues."""
    try:
        client.set_terminated(run_id, status)
    except Exception as exc:
        if status == "FINISHED":
            raise
        log.warning("could not mark MLflow run %s %s: %s", run_id, status, exc)
