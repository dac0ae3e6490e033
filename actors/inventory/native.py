"""Where the core's modules are imported from: its mypyc-compiled build, when that is current.

``make`` runs ``python -m cluster.native``, which compiles the core's modules with mypyc (the
same source, type-checked by mypy --strict, turned into C extension modules) into
``build/native/actors/inventory/`` and writes ``MANIFEST.json`` there: the SHA-256 of every source
it compiled and the interpreter's extension-module suffix. The package puts that folder ahead of
its own on ``__path__`` only if the suffix matches and every digest still matches the source next
to this file. So a stale build can never shadow an edited module: until ``make`` compiles again,
the core simply runs interpreted. Compiled, it runs ~1.3× faster (docs/BENCHMARKS.md).

``TICKETING_NATIVE_CORE=0`` forces the interpreted modules (the tests run the core both ways).
This module and the package's ``__init__`` are never compiled: they decide what gets imported.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
BUILD_DIR = PACKAGE_DIR.parents[1] / "build" / "native" / "actors" / "inventory"
MANIFEST_NAME = "MANIFEST.json"
ENVIRONMENT_SWITCH = "TICKETING_NATIVE_CORE"
# Left interpreted: the import plumbing, and the commands (plain frozen dataclasses that the
# shell builds, pickles and inspects; compiling them measured no faster, and mypyc's dataclasses
# do not take the ``ClassVar`` defaults they carry).
INTERPRETED = frozenset({"__init__", "native", "commands"})


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
