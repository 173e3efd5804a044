"""Progress of an ``airflow dags test`` run, read from its log as it is written: each task as it starts and
ends, with its duration and its summary counts, mapped tasks as "k of n", and a final table.

A terminal gets a tqdm bar over the tasks with a line per finished task above it; anything else (CI, a file)
gets the plain lines only. The full Airflow log still goes to its file; this reads it, it does not replace it.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

START = re.compile(r"\[DAG TEST\] starting task_id=(\S+) map_index=(-?\d+)")
END = re.compile(r"\[DAG TEST\] end task task_id=(\S+) map_index=(-?\d+)")
SUMMARY = re.compile(r"\] (\{.*\}) \[airflow\.task\.operators")
RETURNED = re.compile(r"Returned value was: (.*) \[airflow")
FAILED = re.compile(r"new_state=(failed|up_for_retry)")
#: Summary keys worth a person's eye, in the order shown.
SHOWN = (
    "planned",
    "counts",
    "rows",
    "states",
    "clips",
    "epochs_run",
    "test_top1",
    "registered",
    "promoted",
    "failed",
    "warnings",
)


@dataclass
class TaskRun:
    task_id: str
    map_index: int
    started: float
    ended: float | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    state: str = "running"

    @property
    def seconds(self) -> float:
        return (self.ended or time.monotonic()) - self.started


def describe(summary: dict[str, Any]) -> str:
    parts = []
    for key in SHOWN:
        if key not in summary or summary[key] in (None, [], {}):
            continue
        value = summary[key]
        if isinstance(value, float):
            value = f"{value:.3f}"
        elif isinstance(value, dict):
            value = " ".join(f"{k}={v}" for k, v in value.items())
        parts.append(f"{key} {value}")
    return ", ".join(parts)


class DagProgress:
    """Feed it the log's lines (:meth:`feed`); it prints to ``out`` as tasks start and end."""

    def __init__(self, out: TextIO | None = None, *, bar: bool | None = None) -> None:
        self.out = out or sys.stderr
        self.began = time.monotonic()
        self.tasks: dict[tuple[str, int], TaskRun] = {}
        self.current: tuple[str, int] | None = None
        self.shards: int | None = None
        use_bar = self.out.isatty() if bar is None else bar
        self._bar: Any = None
        if use_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=0, unit="task", file=self.out, leave=False, dynamic_ncols=True)

    def _print(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line, file=self.out)
        else:
            print(line, file=self.out, flush=True)

    def _label(self, task_id: str, map_index: int) -> str:
        if map_index < 0:
            return task_id
        n = f" of {self.shards}" if self.shards else ""
        return f"{task_id} {map_index + 1}{n}"

    def feed(self, line: str) -> None:
        if m := START.search(line):
            key = (m.group(1), int(m.group(2)))
            self.tasks[key] = TaskRun(key[0], key[1], time.monotonic())
            self.current = key
            if self._bar is not None:
                self._bar.total += 1
                self._bar.set_description(self._label(*key))
                self._bar.refresh()
            return
        if self.current is None:
            return
        run = self.tasks[self.current]
        if m := SUMMARY.search(line):
            try:
                parsed = json.loads(m.group(1))
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, dict) and "ok" in parsed:
                run.summary = parsed
        elif (m := RETURNED.search(line)) and run.task_id == "shard_manifest":
            self.shards = m.group(1).count("'--shard'") or self.shards
        elif m := FAILED.search(line):
            run.state = m.group(1)
        elif m := END.search(line):
            run.ended = time.monotonic()
            if run.state == "running":
                run.state = "failed" if run.summary.get("ok") is False else "done"
            detail = describe(run.summary)
            elapsed = run.ended - self.began
            self._print(
                f"[{elapsed:6.0f} s] {run.state:<12} {self._label(run.task_id, run.map_index):<28} "
                f"{run.seconds:6.1f} s  {detail}".rstrip()
            )
            if self._bar is not None:
                self._bar.update(1)
            self.current = None

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def table(self) -> str:
        """Per task (mapped tasks summed): runs, seconds, states."""
        rows: dict[str, list[TaskRun]] = {}
        for run in self.tasks.values():
            rows.setdefault(run.task_id, []).append(run)
        lines = [f"{'task':<26} {'runs':>4} {'seconds':>8}  state", "-" * 52]
        for task_id, runs in rows.items():
            states = sorted({r.state for r in runs})
            lines.append(
                f"{task_id:<26} {len(runs):>4} {sum(r.seconds for r in runs):8.1f}  {','.join(states)}"
            )
        lines.append(f"{'total (wall)':<26} {'':>4} {time.monotonic() - self.began:8.1f}")
        return "\n".join(lines)
