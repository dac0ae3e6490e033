"""Plain-SQL migrations (``shards/sql/NNN_name.sql``) applied in order to every shard database.

Each file runs in its own transaction and is recorded in ``schema_migrations`` with a checksum; a
recorded migration whose file has since changed stops the run, because silently diverging schemas
across shards are worse than a failed start. A session-level advisory lock serialises concurrent
migrators (two `ticketing up` racing on one server).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

SQL_DIR = Path(__file__).with_name("sql")
MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# An arbitrary constant: the advisory lock key that only migrators take.
MIGRATION_LOCK_KEY = 0x7469636B6574
MIGRATION_STATEMENT_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(folder: Path = SQL_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(folder.glob("*.sql")):
        match = MIGRATION_NAME.match(path.name)
        if match is None:
            raise ValueError(f"migration file {path.name} is not named NNN_name.sql")
        migrations.append(Migration(int(match.group(1)), path.stem, path.read_text()))
    versions = [migration.version for migration in migrations]
    if len(set(versions)) != len(versions):
        raise ValueError("two migration files share a version number")
    return migrations


def database_of(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/") or "postgres"


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


async def ensure_database(dsn: str, *, timeout_s: float) -> bool:
    """Create the database `dsn` names if it is missing; True when it was created."""
    name = database_of(dsn)
    admin = await asyncpg.connect(with_database(dsn, "postgres"), timeout=timeout_s)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        quoted = '"' + name.replace('"', '""') + '"'
        try:
            await admin.execute(f"CREATE DATABASE {quoted}")
        except asyncpg.DuplicateDatabaseError:
            return False  # another migrator won the race
        return True
    finally:
        await admin.close()


async def apply_migrations(dsn: str, *, timeout_s: float, migrations: list[Migration] | None = None) -> list[str]:
    """Apply the pending migrations to one shard database; returns the names applied."""
    migrations = load_migrations() if migrations is None else migrations
    connection = await asyncpg.connect(dsn, timeout=timeout_s)
    applied: list[str] = []
    try:
        await connection.execute(f"SET statement_timeout = '{int(MIGRATION_STATEMENT_TIMEOUT_S)}s'")
        await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        await connection.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer     PRIMARY KEY,
                   name       text        NOT NULL,
                   checksum   text        NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        recorded = {row["version"]: row for row in await connection.fetch("SELECT * FROM schema_migrations")}
        for migration in migrations:
            row = recorded.get(migration.version)
            if row is not None:
                if row["checksum"] != migration.checksum:
                    raise RuntimeError(f"migration {migration.name} changed after it was applied to {dsn}")
                continue
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version, migration.name, migration.checksum,
                )
            applied.append(migration.name)
    finally:
        await connection.close()
    return applied


async def migrate_all(dsns: list[str], *, timeout_s: float) -> dict[str, list[str]]:
    """Create missing shard databases and bring every one to the newest schema."""
    result = {}
    for dsn in dsns:
        await ensure_database(dsn, timeout_s=timeout_s)
        result[dsn] = await apply_migrations(dsn, timeout_s=timeout_s)
    return result


async def shard_database_status(dsn: str, *, timeout_s: float) -> dict[str, Any]:
    """What `ticketing status` shows of one shard database: reachable, its schema version, the
    lease epoch of its actor, the slots it records as its own (shards/slot_moves.py; None before
    the actor first started or before migration 009), or the error, shortened."""
    try:
        connection = await asyncpg.connect(dsn, timeout=timeout_s)
    except Exception as error:
        return {"up": False, "error": str(error)[:200]}
    try:
        version = await connection.fetchval("SELECT max(version) FROM schema_migrations", timeout=timeout_s)
        epoch = await connection.fetchval("SELECT max(epoch) FROM shard_lease", timeout=timeout_s)
        owned = await connection.fetch("SELECT slot FROM slot_owners WHERE state = 'owned' ORDER BY slot",
                                       timeout=timeout_s) if version is not None and version >= 9 else None
        return {"up": True, "schema_version": version, "lease_epoch": epoch,
                "owned_slots": None if owned is None else [int(row["slot"]) for row in owned]}
    except Exception as error:
        return {"up": True, "error": str(error)[:200]}
    finally:
        await connection.close()
