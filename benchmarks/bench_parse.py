"""How long the scheduler's DAG processor takes to parse the DAG folder, against a one-task DAG parsed in the
same process (Airflow's own cost per file): a ratio, because machines here are shared and absolute times
wander.

Each parse runs in a fresh process with a database URL that cannot work (parsing must need none), best of 5.
Run: ``python -m benchmarks.bench_parse [--json]``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.airflow import airflow_env
from tests.support.paths import ROOT

BASELINE_DAG = """
from datetime import datetime
from airflow.sdk import dag, task

@dag(start_date=datetime(2026, 1, 1), schedule=None)
def baseline():
    @task
    def one() -> int:
        return 1
    one()

baseline()
"""

CODE = """
import json, sys, time
sys.path.insert(0, {plugins!r})
import airflow.sdk  # Airflow's own import is not what is timed
from airflow.dag_processing.dagbag import DagBag
start = time.perf_counter()
bag = DagBag(dag_folder={folder!r})
elapsed = time.perf_counter() - start
assert not bag.import_errors, bag.import_errors
print(json.dumps({{"seconds": elapsed, "dags": len(bag.dags)}}))
"""


def parse_seconds(folder: Path, home: Path, repeats: int = 5) -> dict[str, float]:
    """The first parse in a fresh process (as a DAG processor's), best of ``repeats`` processes."""
    env = airflow_env(home, AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:////nonexistent/dir/airflow.db")
    code = CODE.format(plugins=str(ROOT / "plugins"), folder=str(folder))
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
        )
        if out.returncode != 0:
            raise SystemExit(f"parsing {folder} failed:\n{out.stderr[-3000:]}")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return min(runs, key=lambda r: r["seconds"])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        base.mkdir()
        (base / "baseline.py").write_text(BASELINE_DAG)
        baseline = parse_seconds(base, Path(tmp) / "home")
        ours = parse_seconds(ROOT / "dags", Path(tmp) / "home")
    per_dag = ours["seconds"] / ours["dags"]
    result = {
        "dags_folder_s": round(ours["seconds"], 4),
        "dags": ours["dags"],
        "one_task_dag_s": round(baseline["seconds"], 4),
        "per_dag_ratio": round(per_dag / baseline["seconds"], 2),
    }
    print(
        f"DAG folder ({ours['dags']} DAGs): {ours['seconds'] * 1000:.0f} ms; a one-task DAG: "
        f"{baseline['seconds'] * 1000:.0f} ms; per DAG {result['per_dag_ratio']}x the one-task DAG"
    )
    if "--json" in sys.argv:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
