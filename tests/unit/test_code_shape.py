"""The package's shape (STYLE.md; issue 13's targets): no import cycle, lazy imports included; no module over 450
lines and no function over 80 in the package and the plugins. Modules and functions not yet split are listed here
by name with their size today: the list may only shrink (one that grows, or a new one past the limit, fails)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.paths import ROOT

pytestmark = pytest.mark.check  # `make check`: under a minute, before every commit

MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80
#: Still to split, with their size when this was written: none may grow.
NOT_YET_SPLIT: dict[str, int] = {}


def _sources() -> list[Path]:
    return sorted([*(ROOT / "action_recognition").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")])


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycle_in_the_package() -> None:
    modules = {_module(p): p for p in _sources() if p.is_relative_to(ROOT / "action_recognition")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                if target in modules and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
                    break
    cycles: list[list[str]] = []

    def walk(node: str, path: list[str], done: set[str]) -> None:
        for dep in sorted(graph[node]):
            if dep in path:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in done:
                walk(dep, [*path, dep], done)
        done.add(node)

    done: set[str] = set()
    for start in sorted(graph):
        if start not in done:
            walk(start, [start], done)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_modules_and_functions_stay_small() -> None:
    over: dict[str, int] = {}
    for path in _sources():
        text = path.read_text()
        rel = str(path.relative_to(ROOT))
        if (n := len(text.splitlines())) > MAX_MODULE_LINES:
            over[rel] = n
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if (n := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES:  # type: ignore[operator]
                over[f"{rel}:{node.name}"] = n
    grown = {k: (v, NOT_YET_SPLIT.get(k)) for k, v in over.items() if v > NOT_YET_SPLIT.get(k, 0)}
    assert grown == {}, (
        f"past {MAX_MODULE_LINES} lines a module or {MAX_FUNCTION_LINES} a function (now, allowed): {grown}"
    )
    split = sorted(set(NOT_YET_SPLIT) - set(over))
    assert split == [], f"split now: remove {split} from NOT_YET_SPLIT"
