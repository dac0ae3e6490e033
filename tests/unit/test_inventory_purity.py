"""The inventory core is pure: importing it pulls in no I/O framework and no sibling package.

If this fails, the core grew a dependency on Ray, asyncio, a database or HTTP library, or on the
router/shards/cluster packages, and can no longer be tested (or reasoned about) on its own. Nor
does it look at its environment or its own files: which build of it runs (compiled or not) is the
shell's choice (cluster/native.py), so `os`, `sys`, `importlib` and file access are banned too.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import actors.inventory

pytestmark = pytest.mark.unit

FORBIDDEN = ("ray", "asyncio", "asyncpg", "redis", "fastapi", "starlette", "router", "shards", "cluster")
PACKAGE_DIR = Path(actors.inventory.__file__).parent
MODULES = sorted(f"actors.inventory.{info.name}" for info in pkgutil.iter_modules([str(PACKAGE_DIR)]))


def test_every_module_is_covered() -> None:
    """The module list is discovered, not hand-written, so a new module cannot escape the checks."""
    assert "actors.inventory.core" in MODULES and len(MODULES) >= 10


def test_importing_the_core_loads_no_forbidden_package() -> None:
    """Import every module in a fresh interpreter and inspect sys.modules. The shell package `actors`
    is imported first, and is allowed exactly its build selection (cluster.native); what the core's
    modules load on top of that must hold nothing forbidden."""
    code = (
        "import importlib, json, sys\n"
        "import actors\n"
        "shell = sorted(sys.modules)\n"
        f"for name in {MODULES!r}: importlib.import_module(name)\n"
        "print(json.dumps({'shell': shell, 'core': sorted(set(sys.modules) - set(shell))}))\n"
    )
    root = PACKAGE_DIR.parent.parent
    completed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=root,
        check=True,
        env={"PYTHONPATH": str(root)},
        timeout=60,
    )
    loaded = json.loads(completed.stdout)
    leaked = sorted(name for name in loaded["core"] if name.split(".")[0] in FORBIDDEN)
    assert leaked == []
    assert sorted(name for name in loaded["shell"] if name.split(".")[0] in FORBIDDEN) == ["cluster", "cluster.native"]


def test_no_forbidden_import_statement_and_no_clock_or_randomness() -> None:
    """A static scan also catches imports hidden behind TYPE_CHECKING or inside functions."""
    # hashlib stays allowed: the core digests user ids and idempotency keys (BLAKE2b), pure functions
    # of their input. What it may not do is read files or the environment to choose its own build.
    banned = set(FORBIDDEN) | {"time", "random", "secrets", "datetime", "os", "sys", "importlib", "pathlib", "io"}
    offenders = []
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [f"{path.name}: {name}" for name in names if name.split(".")[0] in banned]
    assert offenders == []


def test_the_core_does_not_choose_its_own_build() -> None:
    """No module of the core touches its package's search path or names the build switch: picking
    the compiled build is the shell's job (cluster/native.py, called by actors/__init__.py)."""
    offenders = [path.name for path in sorted(PACKAGE_DIR.glob("*.py"))
                 if "__path__" in path.read_text() or "TICKETING_" in path.read_text()]
    assert offenders == []
