"""The mypyc-compiled inventory core is used exactly when it is current, the shell (not the core)
makes that choice before the core is first imported, and the interpreted core it falls back to
passes the same tests.

`make` compiles the core (cluster/native.py); `cluster.native.activate_core()`, called by the
shell package `actors` before any of its subpackages is imported, decides whether the build
matches the sources. These tests prove that a stale or foreign build is never imported, that the
choice reaches the core's search path in a fresh process (so every process, not just this one,
runs the chosen core), that this machine does run the compiled core when it can build one (so a
build that silently broke would not go unnoticed), and that the interpreted fallback is correct too.
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
import actors.inventory.core
from cluster import native
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


def _fresh_process_core(environment: dict[str, str]) -> dict[str, object]:
    """What a new interpreter that imports the core first thing runs: the shell's status, the
    core package's search path and where its `shard` module was loaded from."""
    code = (
        "import json, actors.inventory.core as shard, actors.inventory as core, cluster.native as native\n"
        "print(json.dumps({'compiled': native.CORE_STATUS.compiled, 'detail': native.CORE_STATUS.detail,\n"
        "                  'path': list(core.__path__), 'shard': shard.__file__}))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **environment},
                               capture_output=True, text=True, timeout=120, check=True)
    result: dict[str, object] = json.loads(completed.stdout)
    return result


def test_a_current_build_is_chosen(sources: Path, tmp_path: Path) -> None:
    build = tmp_path / "build"
    _record_build(sources, build)
    assert native.choose(sources, build, {}) == (build, "compiled")


def test_an_edited_source_makes_the_build_stale(sources: Path, tmp_path: Path) -> None:
    build = tmp_path / "build"
    _record_build(sources, build)
    decisions = sources / "hold_decisions.py"
    decisions.write_text(decisions.read_text() + "\n# edited after the build\n")
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


def test_the_finder_puts_the_build_first_on_the_core_package_only(tmp_path: Path) -> None:
    """The meta-path finder answers for `actors.inventory` alone, as the path finder would, with
    the build's folder first on the package's search path (its future `__path__`)."""
    finder = native.CompiledCoreFinder(tmp_path)
    spec = finder.find_spec(native.CORE_PACKAGE, list(actors.__path__))
    assert spec is not None and spec.submodule_search_locations is not None
    assert spec.submodule_search_locations == [str(tmp_path), str(native.PACKAGE_DIR)]
    assert finder.find_spec("actors.inventory.core", [str(native.PACKAGE_DIR)]) is None
    assert finder.find_spec("actors", None) is None


def test_a_fresh_process_runs_the_core_the_shell_chose() -> None:
    """Whatever the shell decided (compiled or not), the core's search path and its modules agree
    with it in a new interpreter that imports the core first: the activation ran before the core."""
    core = _fresh_process_core({})
    compiled = bool(core["compiled"])
    assert core["path"] == ([str(native.BUILD_DIR)] if compiled else []) + [str(native.PACKAGE_DIR)], core
    assert str(core["shard"]).endswith(EXTENSION_SUFFIXES[0]) == compiled, core


def test_the_switch_keeps_a_fresh_process_interpreted() -> None:
    """TICKETING_NATIVE_CORE=0: the core's search path is its source folder alone."""
    core = _fresh_process_core({native.ENVIRONMENT_SWITCH: "0"})
    assert core["compiled"] is False and core["detail"] == f"interpreted: {native.ENVIRONMENT_SWITCH}=0"
    assert core["path"] == [str(native.PACKAGE_DIR)] and str(core["shard"]).endswith(".py")


@pytest.mark.skipif(compiler_missing() is not None, reason=f"cannot build extension modules: {compiler_missing()}")
@pytest.mark.skipif(os.environ.get(native.ENVIRONMENT_SWITCH) == "0", reason="interpreted core forced")
def test_this_machine_runs_the_compiled_core() -> None:
    """With a C compiler here, `make` must have produced a current build and the core must use it.
    Fails after editing a core module until `make` (or `python -m cluster.native`) runs again."""
    assert native.CORE_STATUS.compiled, native.CORE_STATUS.detail
    assert actors.inventory.core.__file__ is not None
    assert actors.inventory.core.__file__.endswith(EXTENSION_SUFFIXES[0])


def test_the_interpreted_core_passes_the_inventory_tests() -> None:
    """The fallback for machines without a compiler: the core's own test files, interpreted."""
    files = sorted(str(path) for path in (ROOT / "tests" / "unit").glob("test_inventory_*.py"))
    code = (
        "import sys, pytest, actors.inventory.core as shard\n"
        "from cluster.native import CORE_STATUS\n"
        "assert not CORE_STATUS.compiled and shard.__file__.endswith('.py'), CORE_STATUS\n"
        f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', *{files!r}]))\n"
    )
    environment = {**os.environ, native.ENVIRONMENT_SWITCH: "0"}
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
