"""The mypyc-compiled inventory core is used exactly when it is current, and the interpreted core
it falls back to passes the same tests.

`make` compiles the core (cluster/native.py); actors/inventory/native.py decides at import time
whether the build matches the sources. These tests prove that a stale or foreign build is never
imported, that this machine does run the compiled core when it can build one (so a build that
silently broke would not go unnoticed), and that the interpreted fallback is correct too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

import actors.inventory
import actors.inventory.shard
from actors.inventory import native
from cluster.native import compiler_missing

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def sources(tmp_path: Path) -> Path:
    package = tmp_path / "inventory"
    shutil.copytree(native.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    return package


def _record_build(package: Path, build: Path, **overrides: object) -> None:
    build.mkdir(parents=True, exist_ok=True)
    manifest = {**native.expected_manifest(package), "compiled": True, **overrides}
    (build / native.MANIFEST_NAME).write_text(json.dumps(manifest))


def test_a_current_build_is_chosen(sources: Path, tmp_path: Path) -> None:
    build = tmp_path / "build"
    _record_build(sources, build)
    assert native.choose(sources, build, {}) == (build, "compiled")


def test_an_edited_source_makes_the_build_stale(sources: Path, tmp_path: Path) -> None:
    build = tmp_path / "build"
    _record_build(sources, build)
    holding = sources / "holding.py"
    holding.write_text(holding.read_text() + "\n# edited after the build\n")
    chosen, why = native.choose(sources, build, {})
    assert chosen is None and "sources changed" in why


def test_a_new_module_makes_the_build_stale(sources: Path, tmp_path: Path) -> None:
    build = tmp_path / "build"
    _record_build(sources, build)
    (sources / "newmodule.py").write_text("VALUE = 1\n")
    assert native.choose(sources, build, {})[0] is None


def test_a_build_for_another_interpreter_is_ignored(sources: Path, tmp_path: Path) -> None:
    build = tmp_path / "build"
    _record_build(sources, build, extension_suffix=".cpython-399-x86_64-linux-gnu.so")
    chosen, why = native.choose(sources, build, {})
    assert chosen is None and "another Python" in why


def test_a_failed_build_and_a_missing_build_are_ignored(sources: Path, tmp_path: Path) -> None:
    failed = tmp_path / "failed"
    _record_build(sources, failed, compiled=False, reason="no C compiler")
    assert native.choose(sources, failed, {}) == (
        None,
        "interpreted: the build failed or was skipped (no C compiler)",
    )
    assert native.choose(sources, tmp_path / "absent", {})[0] is None


def test_the_switch_forces_the_interpreted_core(sources: Path, tmp_path: Path) -> None:
    build = tmp_path / "build"
    _record_build(sources, build)
    assert native.choose(sources, build, {native.ENVIRONMENT_SWITCH: "0"})[0] is None


@pytest.mark.skipif(compiler_missing() is not None, reason=f"cannot build extension modules: {compiler_missing()}")
@pytest.mark.skipif(os.environ.get(native.ENVIRONMENT_SWITCH) == "0", reason="interpreted core forced")
def test_this_machine_runs_the_compiled_core() -> None:
    """With a C compiler here, `make` must have produced a current build and the core must use it.
    Fails after editing a core module until `make` (or `python -m cluster.native`) runs again."""
    assert actors.inventory.NATIVE, actors.inventory.NATIVE_STATUS
    assert actors.inventory.shard.__file__ is not None
    assert actors.inventory.shard.__file__.endswith(EXTENSION_SUFFIXES[0])


def test_the_interpreted_core_passes_the_inventory_tests() -> None:
    """The fallback for machines without a compiler: the core's own test files, interpreted."""
    files = sorted(str(path) for path in (ROOT / "tests" / "unit").glob("test_inventory_*.py"))
    code = (
        "import sys, pytest, actors.inventory as core\n"
        "assert not core.NATIVE, core.NATIVE_STATUS\n"
        f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', *{files!r}]))\n"
    )
    environment = {**os.environ, native.ENVIRONMENT_SWITCH: "0"}
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
