"""The package's shape (STYLE.md; issue 13's targets): no import cycle, lazy imports included; no module over
450 lines and no function over 80 in the package and the plugins. Modules and functions not yet split are
listed here by name with their size today: the list may only shrink (one that grows, or a new one past the
limit, fails)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.paths import ROOT

pytestmark = pytest.mark.check  # `make check`: under a minute, before every commit

MAX_MODULE_STATEMENTS = 300
MAX_FUNCTION_STATEMENTS = 50
MAX_FMT_SKIPS = 10
MAX_LINE = 110


def _sources() -> list[Path]:
    folders = ("action_recognition", "plugins", "devtools")
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def _laid_out() -> list[Path]:
    return [*_sources(), *sorted((ROOT / "dags").rglob("*.py"))]


def _statements(node: ast.AST) -> int:
    return sum(isinstance(n, ast.stmt) for n in ast.walk(node))


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (at the top or inside a function)."""
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
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
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
    return cycles


def test_no_import_cycle_in_the_package() -> None:
    cycles = _cycles(_imports())
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_arrows_point_down() -> None:
    """The package never imports what drives it: the DAGs, the Airflow provider or the developer tools
    (``devtools``: the demo, the smoke run, the Airflow-log progress reader, the local "YouTube")."""
    above = ("dags", "plugins", "ar_provider", "devtools")
    upward: list[str] = []
    for path in sorted((ROOT / "action_recognition").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            upward += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in above]
    assert upward == [], f"the package imports what drives it: {upward}"


def test_no_loop_between_packages() -> None:
    """Subpackages (``training``, ``models``, ``pose``, ``cli``) and top-level modules as nodes: arrows point one
    way (``training.tracking`` importing ``evaluate`` while ``evaluate`` imports ``training`` is a loop)."""

    def unit(module: str) -> str:
        parts = module.split(".")
        return ".".join(parts[:2])

    graph: dict[str, set[str]] = {}
    for module, deps in _imports().items():
        graph.setdefault(unit(module), set()).update(unit(d) for d in deps if unit(d) != unit(module))
    for deps in list(graph.values()):
        for dep in deps:
            graph.setdefault(dep, set())
    cycles = _cycles(graph)
    assert cycles == [], "loops between packages: " + "; ".join(" -> ".join(c) for c in cycles)


def test_modules_and_functions_stay_small() -> None:
    over: dict[str, int] = {}
    for path in _sources():
        tree = ast.parse(path.read_text())
        rel = str(path.relative_to(ROOT))
        if (n := _statements(tree)) > MAX_MODULE_STATEMENTS:
            over[rel] = n
        for node in ast.walk(tree):
            is_function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            if is_function and (n := _statements(node) - 1) > MAX_FUNCTION_STATEMENTS:
                over[f"{rel}:{node.name}"] = n  # type: ignore[union-attr]
    assert over == {}, (
        f"past {MAX_MODULE_STATEMENTS} statements a module or {MAX_FUNCTION_STATEMENTS} a function: {over}; "
        "split it"
    )


def test_the_formatter_lays_the_code_out() -> None:
    skips: list[str] = []
    long: list[str] = []
    for path in _laid_out():
        rel = path.relative_to(ROOT)
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "# fmt: skip" in line or "# fmt: off" in line:
                skips.append(f"{rel}:{number}")
            elif len(line) > MAX_LINE:
                long.append(f"{rel}:{number} ({len(line)})")
    assert len(skips) <= MAX_FMT_SKIPS, f"{len(skips)} '# fmt: skip' (at most {MAX_FMT_SKIPS}): {skips}"
    assert long == [], f"lines over {MAX_LINE} characters: {long}"


def test_data_contracts_import_no_torch() -> None:
    """Skeleton layouts and metrics are data contracts: drawing a skeleton or reading a score imports no model
    code."""
    import subprocess
    import sys

    code = (
        "import sys; import action_recognition.skeletons, action_recognition.metrics, "
        "action_recognition.pose.render; print(sorted(m for m in ('torch', 'mlflow') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]", done.stdout
