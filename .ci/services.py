"""Helpers for .ci/run's second pass against the machine's own PostgreSQL and Redis.

`probe` exits 0 when both answer; `prepare` recreates fresh CI shard databases, empties the CI
Redis database and prints the `export` lines that point the suite at them.
"""

from __future__ import annotations

import asyncio
import socket
import sys

import asyncpg
import redis

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/15"  # a database index of its own, emptied before the pass
SHARD_COUNT = 4
CONNECT_TIMEOUT_S = 3.0


def answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT_S).close()
        return True
    except OSError:
        return False


async def recreate_databases() -> list[str]:
    admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=CONNECT_TIMEOUT_S)
    dsns = []
    try:
        for shard_id in range(SHARD_COUNT):
            name = f"ticketing_ci_shard_{shard_id}"
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{name}"')
            dsns.append(f"postgresql://postgres@127.0.0.1:5432/{name}")
    finally:
        await admin.close()
    return dsns


def main() -> int:
    if sys.argv[1:] == ["probe"]:
        return 0 if answers(5432) and answers(6379) else 1
    if sys.argv[1:] == ["prepare"]:
        dsns = asyncio.run(recreate_databases())
        redis.Redis.from_url(REDIS_URL, socket_timeout=CONNECT_TIMEOUT_S).flushdb()
        print(f"export TICKETING_PG_DSNS={','.join(dsns)}")
        print(f"export TICKETING_REDIS_URL={REDIS_URL}")
        return 0
    print("usage: services.py probe|prepare", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
