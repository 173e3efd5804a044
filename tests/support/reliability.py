"""The reliability report: what the fault, bad-input and security tests did, counted, and printed as one
block.

A test asks for the ``reliability`` fixture and records through it; the records are outcomes the test itself
has checked, so a test that fails records the failure (a fault not survived, a bad input that crashed or was
accepted) before pytest reports it. ``make reliability`` runs every test that uses the fixture and prints the
block; ``make test`` prints it too. The block is also written as JSON to ``$AR_RELIABILITY_REPORT`` when that
is set.

    with reliability.fault("SIGKILL a download mid-run, then retry"):
        ...                                    # survived when the block finishes without an exception
    with reliability.bad_input("csv: broken quoting", rejects=PlanError):
        plan(...)                              # rejected: raised PlanError; crashed: anything else; accepted: nothing
    with reliability.handled("media: a crowd", "the main person is kept"):
        ...                                    # odd input whose right answer is not refusal: the block checks it
    with reliability.probe("ffmpeg: http input refused"):
        ...                                    # blocked when the block finishes without an exception
    reliability.rows("pipeline DAG", rows_in=25, states={"ok": 24, "unavailable": 1})
    reliability.duplicates("concurrent registration", 0)
    reliability.leftovers("killed training container", temp_files=0, containers=0)
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Records:
    faults: dict[str, bool] = field(default_factory=dict)
    bad_inputs: dict[str, str] = field(default_factory=dict)
    probes: dict[str, bool] = field(default_factory=dict)
    rows: dict[str, tuple[int, dict[str, int]]] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    leftovers: dict[str, tuple[int, int]] = field(default_factory=dict)

    def empty(self) -> bool:
        return not any(
            (self.faults, self.bad_inputs, self.probes, self.rows, self.duplicates, self.leftovers)
        )

    def figures(self) -> dict[str, Any]:
        outcomes = Counter(self.bad_inputs.values())
        rows_in = sum(n for n, _ in self.rows.values())
        states: Counter[str] = Counter()
        for _, by_state in self.rows.values():
            states.update(by_state)
        return {
            "faults": {"injected": len(self.faults), "survived": sum(self.faults.values())},
            "bad_inputs": {
                "tried": len(self.bad_inputs),
                "rejected": outcomes["rejected"],
                "handled": outcomes["handled"],
                "crashed": outcomes["crashed"],
                "silently_accepted": outcomes["accepted"],
            },
            "rows": {
                "in": rows_in,
                "states": dict(sorted(states.items())),
                "lost": rows_in - sum(states.values()),
            },
            "duplicates": sum(self.duplicates.values()),
            "leftovers": {
                "temp_files": sum(t for t, _ in self.leftovers.values()),
                "containers": sum(c for _, c in self.leftovers.values()),
            },
            "probes": {"tried": len(self.probes), "blocked": sum(self.probes.values())},
            "failed": sorted(
                [f"fault: {k}" for k, ok in self.faults.items() if not ok]
                + [f"{v}: {k}" for k, v in self.bad_inputs.items() if v in ("crashed", "accepted")]
                + [f"probe not blocked: {k}" for k, ok in self.probes.items() if not ok]
            ),
        }

    def block(self) -> str:
        f = self.figures()
        states = " + ".join(f"{n} {s}" for s, n in f["rows"]["states"].items()) or "0"
        b, rows, left, probes = f["bad_inputs"], f["rows"], f["leftovers"], f["probes"]
        pairs = [
            ("faults injected / survived", f"{f['faults']['injected']} / {f['faults']['survived']}"),
            (
                "bad inputs tried / rejected / handled / crashed / silently accepted",
                f"{b['tried']} / {b['rejected']} / {b['handled']} / {b['crashed']} / "
                f"{b['silently_accepted']}",
            ),
            ("rows in = ok + each failure state", f"{rows['in']} = {states}  (lost {rows['lost']})"),
            ("duplicates", str(f["duplicates"])),
            ("leftover containers / temp files", f"{left['containers']} / {left['temp_files']}"),
            ("security probes tried / blocked", f"{probes['tried']} / {probes['blocked']}"),
        ]
        lines = ["reliability"] + [f"  {label:<68} {value}" for label, value in pairs]
        lines += [f"  NOT OK: {item}" for item in f["failed"]]
        return "\n".join(lines)


RECORDS = Records()


@dataclass
class Caught:
    error: BaseException | None = None

    @property
    def message(self) -> str:
        return str(self.error)


class Reliability:
    """What one test records; names are prefixed with the test's id so parametrized cases stay distinct."""

    def __init__(self, test_id: str) -> None:
        self.test_id = test_id

    def _key(self, name: str) -> str:
        return f"{self.test_id} :: {name}"

    @contextmanager
    def fault(self, name: str) -> Iterator[None]:
        RECORDS.faults[self._key(name)] = False
        yield
        RECORDS.faults[self._key(name)] = True

    @contextmanager
    def probe(self, name: str) -> Iterator[None]:
        RECORDS.probes[self._key(name)] = False
        yield
        RECORDS.probes[self._key(name)] = True

    @contextmanager
    def bad_input(
        self,
        name: str,
        rejects: type[BaseException] | tuple[type[BaseException], ...],
        match: str | None = None,
    ) -> Iterator[Caught]:
        """The block must raise ``rejects`` (with ``match`` in its message, a regex): that is a clear
        rejection.

        The error is kept on the yielded object (``caught.error``) for further checks after the block.
        """
        key = self._key(name)
        caught = Caught()
        try:
            yield caught
        except rejects as exc:
            caught.error = exc
            if match is not None and not re.search(match, str(exc)):
                RECORDS.bad_inputs[key] = "crashed"
                raise AssertionError(
                    f"{name}: rejected, but the reason does not say {match!r}: {exc}"
                ) from exc
            RECORDS.bad_inputs[key] = "rejected"
            return
        except BaseException:
            RECORDS.bad_inputs[key] = "crashed"
            raise
        RECORDS.bad_inputs[key] = "accepted"
        raise AssertionError(f"{name}: accepted silently, expected {rejects}")

    def rejected(self, name: str, reason: str | None) -> None:
        """For inputs that are recorded, not raised (a ledger state, a CSV row's reason): ``reason`` must be
        set."""
        RECORDS.bad_inputs[self._key(name)] = "rejected" if reason else "accepted"
        assert reason, f"{name}: accepted silently"

    @contextmanager
    def handled(self, name: str, how: str) -> Iterator[None]:
        """An odd input with a right answer other than refusal (a crowd, an AVI named .mp4), ``how`` saying
        what.

        The block checks that answer: handled when it finishes, crashed when it raises (a failed check
        included).
        """
        key = self._key(name)
        try:
            yield
        except BaseException:
            RECORDS.bad_inputs[key] = "crashed"
            raise
        RECORDS.bad_inputs[key] = "handled"

    def rows(self, name: str, rows_in: int, states: dict[str, int]) -> None:
        RECORDS.rows[self._key(name)] = (rows_in, dict(states))

    def duplicates(self, name: str, count: int) -> None:
        RECORDS.duplicates[self._key(name)] = count

    def leftovers(self, name: str, temp_files: int = 0, containers: int = 0) -> None:
        RECORDS.leftovers[self._key(name)] = (temp_files, containers)


def export_records() -> str:
    """This process's records as JSON: a pytest-xdist worker hands them to the controller, which prints the
    one block for the whole run."""
    return json.dumps(asdict(RECORDS))


def merge_records(data: str) -> None:
    """Add a worker's records (:func:`export_records`) to this process's."""
    theirs = json.loads(data)
    RECORDS.faults.update(theirs["faults"])
    RECORDS.bad_inputs.update(theirs["bad_inputs"])
    RECORDS.probes.update(theirs["probes"])
    RECORDS.rows.update({k: (n, states) for k, (n, states) in theirs["rows"].items()})
    RECORDS.duplicates.update(theirs["duplicates"])
    RECORDS.leftovers.update({k: (t, c) for k, (t, c) in theirs["leftovers"].items()})


def write_report() -> str | None:
    """The block, also written as JSON to ``$AR_RELIABILITY_REPORT`` when set; None when nothing was
    recorded."""
    if RECORDS.empty():
        return None
    path = os.environ.get("AR_RELIABILITY_REPORT")
    if path:
        with open(path, "w") as fh:
            json.dump({"figures": RECORDS.figures(), "block": RECORDS.block()}, fh, indent=2)
    return RECORDS.block()
