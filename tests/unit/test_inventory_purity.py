"""The inventory core is pure: importing it pulls in no I/O framework and no sibling package.

If this fails, the core grew a dependency on Ray, asyncio, a database or HTTP library, or on the
router/shards/cluster packages, and can no longer be tested (or reasoned about) on its own.
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
    assert "actors.inventory.shard" in MODULES and len(MODULES) >= 10


def test_importing_the_core_loads_no_forbidden_package() -> None:
    """Import every module in a fresh interpreter and inspect sys.modules."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {MODULES!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
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
    leaked = sorted(name for name in loaded if name.split(".")[0] in FORBIDDEN)
    assert leaked == []


def test_no_forbidden_import_statement_and_no_clock_or_randomness() -> None:
    """A static scan also catches imports hidden behind TYPE_CHECKING or inside functions."""
    banned = set(FORBIDDEN) | {"time", "random", "secrets", "datetime"}
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
