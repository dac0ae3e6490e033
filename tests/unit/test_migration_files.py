"""Migration files are well named, uniquely versioned and stable."""

from __future__ import annotations

from pathlib import Path

import pytest

from shards.migrate import load_migrations

pytestmark = pytest.mark.unit


def test_migrations_are_ordered_and_unique() -> None:
    migrations = load_migrations()
    versions = [migration.version for migration in migrations]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert versions[0] == 1


def test_misnamed_migration_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1_bad.sql").write_text("SELECT 1;")
    with pytest.raises(ValueError, match="NNN_name"):
        load_migrations(tmp_path)
