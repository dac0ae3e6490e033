"""The mypyc-compiled inventory core: which build a process imports, and how ``make`` builds it.

The core (``actors/inventory``) is plain Python, type-checked by mypy --strict. mypyc turns the
same source into C extension modules, which run its hot paths ~1.3× faster (GA holds ~180k/s →
~240k/s in process on the reference machine; docs/BENCHMARKS.md). Nothing depends on the build:
without a C compiler (or if mypyc fails) the core runs interpreted, the same code under the
same tests.

**Choosing** (every process that imports the core). The core itself knows nothing of this: it
reads no environment variable, hashes no file and leaves its ``__path__`` alone. The shell
package ``actors`` calls `activate_core()` in its ``__init__``, and Python always imports a
package before any of its subpackages, so this runs before the first import of
``actors.inventory`` in every process: router workers, Ray actor processes (which unpickle
``actors.*`` classes), tests, benchmarks and the CLI. `choose()` takes the build only if its
manifest says it compiled, for this interpreter's extension suffix, from sources whose SHA-256
digests all still match, so a stale build never shadows an edited module (until ``make``
compiles again the core runs interpreted). ``TICKETING_NATIVE_CORE=0`` forces the interpreted
modules (the tests run the core both ways). The decision is `CORE_STATUS`, made once per process.

**Building** (``python -m cluster.native``; ``make`` runs it). The build goes to a fresh folder
next to ``build/native`` and replaces it in one rename once it is complete, with its manifest: a
process that imports the core meanwhile sees the old build or the new one, never half of one. Its
digests are of the sources as they were before compiling, so a file edited during the build
leaves the build stale (and unused) rather than wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.abc import MetaPathFinder
from importlib.machinery import EXTENSION_SUFFIXES, ModuleSpec, PathFinder
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
CORE_PACKAGE = "actors.inventory"
PACKAGE_DIR = ROOT / "actors" / "inventory"
BUILD_DIR = ROOT / "build" / "native" / "actors" / "inventory"
MANIFEST_NAME = "MANIFEST.json"
ENVIRONMENT_SWITCH = "TICKETING_NATIVE_CORE"
# Left interpreted: the package's ``__init__`` (it only re-exports), and the commands (plain
# frozen dataclasses that the shell builds, pickles and inspects; compiling them measured no
# faster, and mypyc's dataclasses do not take the ``ClassVar`` defaults they carry).
INTERPRETED = frozenset({"__init__", "commands"})
# The shared library of the compiled modules is imported as ``actors.inventory.core__mypyc``:
# inside the package, so it is found through the package's ``__path__`` like the modules are.
GROUP_NAME = "actors.inventory.core"
# Bound on one build (~20 s on the reference machine, ~60 s with both cores busy).
BUILD_TIMEOUT_S = 600.0


# Choosing ---------------------------------------------------------------------------------------

def compiled_module_names(package_dir: Path = PACKAGE_DIR) -> list[str]:
    """The core's modules that the build compiles, as file stems (``shard``, ``holding``, ...)."""
    return sorted(path.stem for path in package_dir.glob("*.py") if path.stem not in INTERPRETED)


def source_digests(package_dir: Path, names: list[str]) -> dict[str, str]:
    return {name: hashlib.sha256((package_dir / f"{name}.py").read_bytes()).hexdigest() for name in names}


def expected_manifest(package_dir: Path = PACKAGE_DIR) -> dict[str, object]:
    """What a build of the sources in ``package_dir`` for this interpreter records."""
    return {
        "extension_suffix": EXTENSION_SUFFIXES[0],
        "sources": source_digests(package_dir, compiled_module_names(package_dir)),
    }


def choose(
    package_dir: Path = PACKAGE_DIR, build_dir: Path = BUILD_DIR, environ: Mapping[str, str] = os.environ
) -> tuple[Path | None, str]:
    """The compiled build's folder and ``"compiled"``; or None and why the core runs interpreted."""
    if environ.get(ENVIRONMENT_SWITCH, "1") == "0":
        return None, f"interpreted: {ENVIRONMENT_SWITCH}=0"
    try:
        recorded = json.loads((build_dir / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None, "interpreted: no compiled build (make compiles one)"
    if not recorded.get("compiled"):
        return None, f"interpreted: the build failed or was skipped ({recorded.get('reason', 'no reason recorded')})"
    expected = expected_manifest(package_dir)
    if recorded.get("extension_suffix") != expected["extension_suffix"]:
        return None, "interpreted: the build is for another Python"
    if recorded.get("sources") != expected["sources"]:
        return None, "interpreted: sources changed since the build (make compiles again)"
    return build_dir, "compiled"


@dataclass(frozen=True, slots=True)
class CoreStatus:
    """Which core this process runs: ``compiled`` and the build's folder, or why not (``detail``
    is ``"compiled"`` or ``"interpreted: <why>"``; actors report it in status and metrics)."""

    build_dir: Path | None
    detail: str

    @property
    def compiled(self) -> bool:
        return self.build_dir is not None


class CompiledCoreFinder(MetaPathFinder):
    """Finds the core package exactly as the ordinary path finder does, with the build's folder
    put first on the package's search path (``submodule_search_locations``, which becomes its
    ``__path__``). Every submodule import then finds the compiled extension module before the
    source file; what the build lacks (``commands``) comes from the source folder.

    Why a meta-path finder: the search path must be set when the package module is created,
    before its ``__init__`` imports the submodules, and without importing the package here. The
    finder answers for that one name only and returns None for everything else."""

    def __init__(self, build_dir: Path) -> None:
        self.build_dir = str(build_dir)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != CORE_PACKAGE:
            return None
        spec = PathFinder.find_spec(fullname, path)
        if spec is not None and spec.submodule_search_locations is not None:
            spec.submodule_search_locations.insert(0, self.build_dir)
        return spec


# Decided once per process, when the shell first imports this module.
CORE_STATUS = CoreStatus(*choose())


def activate_core() -> CoreStatus:
    """Make the next import of the core use `CORE_STATUS`'s build (``actors/__init__.py`` calls
    this). Idempotent. Refuses to run after the core was imported: its modules are then fixed."""
    build_dir = CORE_STATUS.build_dir
    if build_dir is None or any(isinstance(finder, CompiledCoreFinder) for finder in sys.meta_path):
        return CORE_STATUS
    if CORE_PACKAGE in sys.modules:
        raise RuntimeError(f"{CORE_PACKAGE} was imported before cluster.native.activate_core()")
    sys.meta_path.insert(0, CompiledCoreFinder(build_dir))
    return CORE_STATUS


# Building ---------------------------------------------------------------------------------------

class BuildFailed(Exception):
    """mypyc or the C compiler stopped; the message ends with their last lines of output."""


def compiler_missing() -> str | None:
    """Why extension modules cannot be built here, or None."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler!r} not found)"
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").exists():
        return f"no Python headers ({include}/Python.h not found)"
    return None


def _write_manifest(folder: Path, manifest: dict[str, object]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _install(staged: Path, target: Path) -> None:
    """Replace ``target`` (build/native/actors/inventory) by ``staged`` with renames only."""
    root = target.parents[1]  # build/native
    if root.exists():
        retired = root.with_name(f"{root.name}.old-{os.getpid()}")
        root.rename(retired)
        shutil.rmtree(retired, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    staged.rename(root)


def _compile(work: Path, modules: list[str]) -> Path:
    """Run mypyc + the C compiler in a child process; returns the folder holding the modules."""
    sources = [f"actors/inventory/{name}.py" for name in modules]
    script = (
        "import sys\n"
        "from setuptools import setup\n"
        "from mypyc.build import mypycify\n"
        f"extensions = mypycify({sources!r}, opt_level='3', group_name={GROUP_NAME!r}, "
        f"target_dir={str(work / 'c')!r})\n"
        "setup(name='ticketing-native-core', ext_modules=extensions, script_args=['build_ext', "
        f"'--build-lib', {str(work / 'lib')!r}, '--build-temp', {str(work / 'temp')!r}, '--parallel', '2'])\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S
    )
    if completed.returncode != 0:
        tail = (completed.stdout + completed.stderr).strip().splitlines()[-20:]
        raise BuildFailed(f"exit {completed.returncode}: " + "\n".join(tail))
    return work / "lib" / "actors" / "inventory"


def build(target: Path = BUILD_DIR) -> str:
    """Compile the core into ``target`` (or record why not); returns a one-line summary."""
    expected = expected_manifest()
    missing = compiler_missing()
    if missing is not None:
        _write_manifest(target, {**expected, "compiled": False, "reason": missing})
        return f"inventory core stays interpreted: {missing}"
    started = time.monotonic()
    target.parents[1].parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="native-", dir=target.parents[1].parent) as scratch:
        work = Path(scratch)
        try:
            built = _compile(work, compiled_module_names())
        except (BuildFailed, subprocess.TimeoutExpired, OSError) as error:
            _write_manifest(target, {**expected, "compiled": False, "reason": f"mypyc build failed: {error}"})
            return f"inventory core stays interpreted: mypyc build failed ({error})"
        staged = work / "staged"
        package = staged / "actors" / "inventory"
        package.mkdir(parents=True)
        for library in built.glob("*.so"):
            shutil.copy2(library, package / library.name)
        _write_manifest(package, {**expected, "compiled": True})
        _install(staged, target)
    return f"inventory core compiled with mypyc in {time.monotonic() - started:.1f} s: {target}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.native", description=__doc__.split("\n")[0])
    parser.parse_args(argv)
    print(build(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
