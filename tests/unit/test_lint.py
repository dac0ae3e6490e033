"""The strict tools of STYLE §11 run with the suite: ruff over the tree, mypy over the packages
(strict on the pure inventory core)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
LINT_TIMEOUT_S = 300


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True,
                          timeout=LINT_TIMEOUT_S, check=False)


def test_ruff_is_clean() -> None:
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_the_core() -> None:
    result = run("mypy", "--strict", "actors/inventory")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_on_the_shells() -> None:
    shells = [str(path.relative_to(ROOT)) for path in (ROOT / "actors").glob("*.py")]
    result = run("mypy", *shells, "shards", "cluster", "router")
    assert result.returncode == 0, result.stdout + result.stderr
