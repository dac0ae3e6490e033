"""Compile the inventory core with mypyc: ``python -m cluster.native`` (``make`` runs it).

The core (``actors/inventory``) is plain Python, type-checked by mypy --strict. mypyc turns the
same source into C extension modules, which run its hot paths ~1.3× faster (GA holds ~180k/s →
~240k/s in process on the reference machine; docs/BENCHMARKS.md). Nothing depends on the build:
``actors/inventory/native.py`` imports it only while it matches the sources exactly, and without a
C compiler (or if mypyc fails) the core runs interpreted, the same code under the same tests.

The build goes to a fresh folder next to ``build/native`` and replaces it in one rename once it
is complete, with its manifest: a process that imports the core meanwhile sees the old build or
the new one, never half of one. Its digests are of the sources as they were before compiling, so
a file edited during the build leaves the build stale (and unused) rather than wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from actors.inventory import native

ROOT = native.PACKAGE_DIR.parents[1]
# The shared library of the compiled modules is imported as ``actors.inventory.core__mypyc``:
# inside the package, so it is found through the package's ``__path__`` like the modules are.
GROUP_NAME = "actors.inventory.core"
# Bound on one build (~20 s on the reference machine, ~60 s with both cores busy).
BUILD_TIMEOUT_S = 600.0


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
    (folder / native.MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


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


def build(target: Path = native.BUILD_DIR) -> str:
    """Compile the core into ``target`` (or record why not); returns a one-line summary."""
    expected = native.expected_manifest()
    missing = compiler_missing()
    if missing is not None:
        _write_manifest(target, {**expected, "compiled": False, "reason": missing})
        return f"inventory core stays interpreted: {missing}"
    started = time.monotonic()
    target.parents[1].parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="native-", dir=target.parents[1].parent) as scratch:
        work = Path(scratch)
        try:
            built = _compile(work, native.compiled_module_names())
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
