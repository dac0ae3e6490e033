"""The architecture is a test, not a hope (issue 11): the layer contracts in pyproject.toml's
[tool.importlinter] hold (`lint-imports`, one test per contract so one broken layer does not hide
another), no module imports another in a circle at import time, and the router holds no SQL.

The cycle check reads the source with `ast` instead of importing it: an import inside a function,
or under `if TYPE_CHECKING:`, runs later or never, so only what runs while a module is being
imported counts. Each test below has a negative control that feeds it a known violation.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("actors", "router", "shards", "cluster")
LINT_TIMEOUT_S = 120
CONTRACT_IDS = [contract["id"] for contract in
                tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]]
# SQL statements as they start in a query string (upper-case keywords, as this code base writes them).
SQL_TEXT = re.compile(r"^\s*(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM|WITH \w+ AS|COPY)\b")
# The simulated payment gateway's own SQLite ledger stands in for the provider's database, not a
# shard's (the same exception as the import contract "router-sql-through-shards").
SQL_ALLOWED_IN_ROUTER = {"router/checkout/gateway.py"}

Edge = tuple[str, str, int]  # importer, imported, line

# Contracts broken by code outside this test's owner's files, with the imports that break them. Each
# is a strict xfail: it fails again as soon as the contract holds, so the entry is removed then.
KNOWN_BROKEN: dict[str, str] = {}


def lint_imports_command() -> list[str]:
    script = Path(sys.executable).with_name("lint-imports")
    found = str(script) if script.exists() else shutil.which("lint-imports")
    assert found, "lint-imports is missing: install the dev extras (pip install -e '.[dev]')"
    return [found, "--no-cache"]


@pytest.mark.parametrize("contract_id", [
    pytest.param(contract_id, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BROKEN[contract_id]))
    if contract_id in KNOWN_BROKEN else contract_id for contract_id in CONTRACT_IDS])
def test_import_contract_holds(contract_id: str) -> None:
    result = subprocess.run([*lint_imports_command(), "--contract", contract_id], cwd=ROOT, capture_output=True,
                            text=True, timeout=LINT_TIMEOUT_S, check=False)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_lint_imports_fails_on_a_broken_contract(tmp_path: Path) -> None:
    """Negative control: the same tool, on a package that breaks a forbidden contract, fails and
    names the import (so a passing contract above means something)."""
    write_tree(tmp_path, {
        "layered/__init__.py": "",
        "layered/core.py": "import layered.shell\n",
        "layered/shell.py": "",
        "pyproject.toml": '[tool.importlinter]\nroot_packages = ["layered"]\n\n[[tool.importlinter.contracts]]\n'
                          'name = "core"\ntype = "forbidden"\nsource_modules = ["layered.core"]\n'
                          'forbidden_modules = ["layered.shell"]\n',
    })
    result = subprocess.run(lint_imports_command(), cwd=tmp_path, capture_output=True, text=True,
                            timeout=LINT_TIMEOUT_S, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "layered.core -> layered.shell" in result.stdout


def test_a_lost_postgres_connection_is_still_a_503() -> None:
    """The router classifies database outages through what shards/ exports, not by importing the
    driver: asyncpg's connection failures must still reach the 503 handler, and a query error
    (a bug or bad data) must not."""
    import asyncpg

    from router.problems import CONNECTION_ERRORS

    for lost in (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
                 asyncpg.TooManyConnectionsError, ConnectionRefusedError, TimeoutError):
        assert issubclass(lost, CONNECTION_ERRORS), lost
    assert not issubclass(asyncpg.UniqueViolationError, CONNECTION_ERRORS)


# Module-level import cycles ----------------------------------------------------------------------

def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_time_statements(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run while the module is imported: at the top level, in class
    bodies and in `if`/`try`/`with` blocks, but not in functions or under `if TYPE_CHECKING:`."""
    for statement in body:
        if isinstance(statement, ast.Import | ast.ImportFrom):
            yield statement
        elif isinstance(statement, ast.If):
            if not _is_type_checking(statement.test):
                yield from import_time_statements(statement.body)
            yield from import_time_statements(statement.orelse)
        elif isinstance(statement, ast.Try):
            for block in (statement.body, statement.orelse, statement.finalbody,
                          *(handler.body for handler in statement.handlers)):
                yield from import_time_statements(block)
        elif isinstance(statement, ast.With | ast.ClassDef):
            yield from import_time_statements(statement.body)


def imported_modules(statement: ast.Import | ast.ImportFrom, importer: str, is_package: bool,
                     modules: set[str]) -> Iterator[str]:
    """The project modules one import statement names (`from a import b` names `a.b` when `b` is
    a module, else `a`)."""
    if isinstance(statement, ast.Import):
        for alias in statement.names:
            if alias.name in modules:
                yield alias.name
        return
    base = statement.module or ""
    if statement.level:
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        package = package[:len(package) - statement.level + 1]
        base = ".".join([*package, base] if base else package)
    for alias in statement.names:
        if f"{base}.{alias.name}" in modules:
            yield f"{base}.{alias.name}"
        elif base in modules:
            yield base


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, list[Edge]]:
    files = {module_name(path, root): path for package in packages for path in (root / package).rglob("*.py")}
    modules = set(files)
    graph: dict[str, list[Edge]] = {name: [] for name in modules}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for statement in import_time_statements(tree.body):
            for imported in imported_modules(statement, name, path.name == "__init__.py", modules):
                if imported != name:
                    graph[name].append((name, imported, statement.lineno))
    return graph


def find_cycles(graph: dict[str, list[Edge]]) -> list[list[Edge]]:
    """One cycle (as its edges) per strongly connected component that has one (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for _, target, _ in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(graph, component) for component in components]


def _cycle_in(graph: dict[str, list[Edge]], component: set[str]) -> list[Edge]:
    """A shortest path from the component's first module back to itself, inside the component."""
    start = min(component)
    paths: dict[str, list[Edge]] = {start: []}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for edge in graph[node]:
                target = edge[1]
                if target == start:
                    return [*paths[node], edge]
                if target in component and target not in paths:
                    paths[target] = [*paths[node], edge]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # unreachable: a component of 2+ has one


def describe(cycle: list[Edge]) -> str:
    return " -> ".join(f"{importer} (line {line})" for importer, _, line in cycle) + f" -> {cycle[0][0]}"


def test_no_module_level_import_cycles() -> None:
    cycles = find_cycles(import_graph(ROOT, PACKAGES))
    assert not cycles, "module-level import cycles:\n" + "\n".join(describe(cycle) for cycle in cycles)


def write_tree(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_cycle_check_finds_a_cycle_and_ignores_deferred_imports(tmp_path: Path) -> None:
    """Negative control: a circle through a relative import is reported with its lines; the same
    circle closed only inside a function or under TYPE_CHECKING is not a cycle."""
    write_tree(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg import b\n",
        "pkg/b.py": "import os\n\nfrom .c import thing\n",
        "pkg/c.py": "try:\n    import pkg.a\nexcept ImportError:\n    pass\nthing = 1\n",
        "pkg/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import e\n",
        "pkg/e.py": "def later():\n    from pkg import d\n\nimport pkg.d\n",
    })
    cycles = find_cycles(import_graph(tmp_path, ("pkg",)))
    assert [describe(cycle) for cycle in cycles] == ["pkg.a (line 1) -> pkg.b (line 3) -> pkg.c (line 2) -> pkg.a"]


# SQL only in shards/ -----------------------------------------------------------------------------

def sql_strings(path: Path) -> Iterator[int]:
    """Lines of string constants that start like an SQL statement (docstrings are prose: skipped)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                and SQL_TEXT.match(node.value)):
            yield node.lineno


# Where SQL may not be: the router, the actors, the cluster tooling. (loadtest/ checks what a
# benchmark wrote with its own queries, and tests/ may query anything.)
SQL_FREE_PACKAGES = ("router", "actors", "cluster")


def test_sql_lives_in_shards() -> None:
    found = [f"{path.relative_to(ROOT)}:{line}" for package in SQL_FREE_PACKAGES
             for path in sorted((ROOT / package).rglob("*.py"))
             if path.relative_to(ROOT).as_posix() not in SQL_ALLOWED_IN_ROUTER for line in sql_strings(path)]
    assert not found, "SQL belongs in shards/ (a query function the caller uses): " + ", ".join(found)


def test_the_sql_check_finds_a_query_but_not_prose(tmp_path: Path) -> None:
    """Negative control: a query string (also an f-string part) is found; a docstring that quotes
    SQL is not."""
    write_tree(tmp_path, {"m.py": '"""SELECT in prose."""\n\nQUERY = "SELECT 1"\n\n\ndef f(table):\n'
                                  '    """UPDATE x SET y is prose too."""\n'
                                  '    return f"""\n  DELETE FROM {table}"""\n'})
    assert list(sql_strings(tmp_path / "m.py")) == [3, 8]
