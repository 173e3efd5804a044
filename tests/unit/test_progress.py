"""The demo's progress lines, from the log lines `airflow dags test` writes (formats as Airflow 3.3 prints
them)."""

from __future__ import annotations

import io

from devtools.progress import DagProgress

LOG = """\
2026-11-27T05:18:54.340892Z [info     ] [DAG TEST] starting task_id=shard_manifest map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1501
2026-11-27T05:18:54.895947Z [info     ] Done. Returned value was: [['--storage', 's', '--dataset', 'd', '--shard', '0/2'], ['--storage', 's', '--dataset', 'd', '--shard', '1/2']] [airflow.task.operators] loc=python.py:1
2026-11-27T05:18:55.078398Z [info     ] [DAG TEST] end task task_id=shard_manifest map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1563
2026-11-27T05:18:56.000000Z [info     ] [DAG TEST] starting task_id=download_clips map_index=1 [airflow.sdk.definitions.dag] loc=dag.py:1501
2026-11-27T05:18:57.000000Z [info     ] {"counts": {"ok": 5, "unavailable": 1}, "ok": true, "shard": [1, 2]} [airflow.task.operators.ar_provider.operators.StepOperator] loc=operators.py:195
2026-11-27T05:18:58.000000Z [info     ] [DAG TEST] end task task_id=download_clips map_index=1 [airflow.sdk.definitions.dag] loc=dag.py:1563
2026-11-27T05:18:59.000000Z [info     ] [DAG TEST] starting task_id=train_keypoint map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1501
2026-11-27T05:19:00.000000Z [info     ] {"epochs_run": 12, "ok": true, "test_top1": 0.41666} [airflow.task.operators.ar_provider.operators.StepOperator] loc=operators.py:195
2026-11-27T05:19:01.000000Z [info     ] Task instance state updated [airflow.api_fastapi.execution_api.routes.task_instances] new_state=failed rows_affected=1
2026-11-27T05:19:02.000000Z [info     ] [DAG TEST] end task task_id=train_keypoint map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1563
"""


def test_each_task_ends_in_one_line_with_its_counts_and_mapped_tasks_as_k_of_n() -> None:
    out = io.StringIO()
    progress = DagProgress(out, bar=False)
    for line in LOG.splitlines():
        progress.feed(line)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert "done" in lines[0] and "shard_manifest" in lines[0]
    assert "download_clips 2 of 2" in lines[1] and "counts ok=5 unavailable=1" in lines[1]
    assert lines[2].split()[3] == "failed" and "epochs_run 12, test_top1 0.417" in lines[2]
    table = progress.table()
    assert "download_clips" in table and "total (wall)" in table
