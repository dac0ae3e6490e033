"""Poison isolation (actors/isolation.py) against real Ray and real Postgres: one command that
cannot be stored, batched with honest ones, fails alone; the honest ones commit without a retry,
and the shard rebuilds at most once for it.

Batching is made deterministic as in test_shard_actor.py: a second connection holds the shard's
lease row while the calls arrive, so they queue behind the first commit and share transactions.
The poison is a buyer id with a NUL character: the core accepts it (ids are opaque strings), and
Postgres refuses to store it in `holds.user_id` — exactly the shape of any value the router's
validation might miss. A lone surrogate in a buyer id makes the core itself raise instead.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from actors.inventory.results import HoldView
from actors.protocol import EventDocument, GetAvailability, Refused, Unavailable
from tests.actor_support import assert_pool_consistent, ga_event_command, ga_hold, new_database, query, start_shard
from tests.harness import RunningCluster

pytestmark = pytest.mark.integration

HONEST_CALLS = 20
LOCK_WAIT_POLLS_MAX = 500
QUEUE_FILL_S = 0.3
LOCK_WAITERS = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
POISON_USER = "mallory\x00"


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[-1])
    return total


def _batched_calls(shard: Any, dsn: str, calls: list[list[Any]]) -> list[list[Any]]:
    """Send every call while the lease row is held, so they commit together once it is released."""
    import asyncpg

    async def main() -> list[list[Any]]:
        blocker = await asyncpg.connect(dsn)
        try:
            async with blocker.transaction():
                await blocker.execute("SELECT 1 FROM shard_lease FOR UPDATE")
                pending = asyncio.gather(*(shard.apply.remote(call) for call in calls))
                for _ in range(LOCK_WAIT_POLLS_MAX):
                    if await blocker.fetchval(LOCK_WAITERS):
                        break
                    await asyncio.sleep(0.01)
                await asyncio.sleep(QUEUE_FILL_S)
            return list(await pending)
        finally:
            await blocker.close()

    return asyncio.run(main())


def _poisoned_batch(shard: Any, dsn: str, event_id: Any) -> tuple[list[Any], Any]:
    honest = [[ga_hold(event_id, f"buyer-{n}", 1, key=f"k{n}")] for n in range(HONEST_CALLS)]
    poison = [ga_hold(event_id, POISON_USER, 1, key="poison"), ga_hold(event_id, "buyer-in-poison-call", 1)]
    # The poison travels in the middle of the batch and shares its apply call with an honest hold.
    calls = [*honest[: HONEST_CALLS // 2], poison, *honest[HONEST_CALLS // 2:]]
    replies = _batched_calls(shard, dsn, calls)
    poison_replies = replies.pop(HONEST_CALLS // 2)
    return [reply[0] for reply in replies], poison_replies


def test_a_value_postgres_refuses_fails_only_its_own_command(cluster: RunningCluster, ray_driver: None) -> None:
    import ray

    dsn = new_database(cluster)
    shard = start_shard(dsn)
    create = ga_event_command(1000)
    assert isinstance(ray.get(shard.apply.remote([create]))[0], EventDocument)
    before = ray.get(shard.metrics_text.remote()).decode()

    honest, (poisoned, neighbour) = _poisoned_batch(shard, dsn, create.event_id)

    assert all(isinstance(reply, HoldView) for reply in honest), honest
    assert isinstance(neighbour, HoldView), "the honest command in the poison's own call failed"
    assert poisoned == Refused("VALIDATION_ERROR", "the request holds a value that cannot be stored")
    (row,) = query(dsn, "SELECT count(*) AS n, count(DISTINCT user_id) AS users FROM holds WHERE event_id = $1",
                   create.event_id)
    assert (row["n"], row["users"]) == (HONEST_CALLS + 1, HONEST_CALLS + 1)
    assert_pool_consistent(dsn, create.event_id)
    after = ray.get(shard.metrics_text.remote()).decode()
    assert _metric(after, "ticketing_actor_isolated_commands_total") == 1
    assert _metric(after, "ticketing_actor_oversell_refused_total") == 0, "a NUL is not an oversell"
    rebuilds = _metric(after, "ticketing_actor_recoveries_total") - _metric(before, "ticketing_actor_recoveries_total")
    assert rebuilds == 1, f"{rebuilds} rebuilds for one poison command"

    # The honest keys replay their committed holds; the poison's key was never stored.
    replay = ray.get(shard.apply.remote([ga_hold(create.event_id, "buyer-3", 1, key="k3")]))[0]
    assert replay.hold_id == honest[3].hold_id
    assert not query(dsn, "SELECT 1 FROM idempotency_keys WHERE key = 'poison'")


def test_negative_control_without_isolation_one_value_fails_the_whole_batch(cluster: RunningCluster,
                                                                           ray_driver: None) -> None:
    """Negative control: with isolation switched off, the same batch fails every caller (503) —
    the outage one client could cause before. If this stops failing, the test above proves nothing."""
    import ray

    dsn = new_database(cluster)
    shard = start_shard(dsn, isolation=False)
    create = ga_event_command(1000)
    ray.get(shard.apply.remote([create]))

    honest, (poisoned, neighbour) = _poisoned_batch(shard, dsn, create.event_id)

    failed = sum(1 for reply in [*honest, neighbour] if isinstance(reply, Unavailable))
    assert failed > HONEST_CALLS // 2, f"only {failed} honest calls failed: the negative control is broken"
    assert isinstance(poisoned, Unavailable)


def test_a_command_that_raises_while_applied_is_refused_alone(cluster: RunningCluster, ray_driver: None) -> None:
    """A buyer id with a lone surrogate makes the core raise mid-call (it cannot be encoded). The
    commands before it in the call were applied in memory; they must be committed (not left in
    memory uncommitted, which once made a keyed retry answer 201 for a hold Postgres never had),
    the raising one refused with a 500-class reply, the ones after it applied too."""
    import ray

    dsn = new_database(cluster)
    shard = start_shard(dsn)
    create = ga_event_command(100)
    ray.get(shard.apply.remote([create]))

    call = [ga_hold(create.event_id, "before", 2, key="kb"), ga_hold(create.event_id, "\ud800", 1, key="bad"),
            ga_hold(create.event_id, "after", 3, key="ka")]
    before, bad, after = ray.get(shard.apply.remote(call))

    assert isinstance(before, HoldView) and isinstance(after, HoldView)
    assert bad == Refused("INTERNAL_ERROR", "the shard could not apply this request")
    assert assert_pool_consistent(dsn, create.event_id) == (5, 0)
    # What memory says is what Postgres has: the keyed retries replay exactly the stored holds.
    replays = ray.get(shard.apply.remote([ga_hold(create.event_id, "before", 2, key="kb"),
                                          ga_hold(create.event_id, "after", 3, key="ka")]))
    assert [reply.hold_id for reply in replays] == [before.hold_id, after.hold_id]
    stored = {row["hold_id"] for row in query(dsn, "SELECT hold_id FROM holds WHERE event_id = $1", create.event_id)}
    assert stored == {before.hold_id, after.hold_id}
    text = ray.get(shard.metrics_text.remote()).decode()
    assert re.search(r'ticketing_actor_isolations_total\{shard="0",trigger="apply_raised"\} 1\.0', text), text


def test_a_hold_the_pool_check_refuses_is_counted_as_an_oversell_refused(cluster: RunningCluster,
                                                                        ray_driver: None) -> None:
    """The pool's capacity shrinks in Postgres under a running shard (layout drift): memory still
    allows a hold the database's ``CHECK (held + sold <= capacity)`` refuses. The hold is refused
    alone, nothing of it is stored, and `ticketing_actor_oversell_refused_total{guard="ga_pools_check"}`
    — the counter that pages, and must otherwise stay 0 — counts it."""
    import ray

    dsn = new_database(cluster)
    shard = start_shard(dsn)
    create = ga_event_command(100)
    ray.get(shard.apply.remote([create]))
    assert isinstance(ray.get(shard.apply.remote([ga_hold(create.event_id, "first", 2)]))[0], HoldView)
    query(dsn, "UPDATE ga_pools SET capacity = 3 WHERE event_id = $1", create.event_id)

    (reply,) = ray.get(shard.apply.remote([ga_hold(create.event_id, "second", 5)]))

    assert reply == Refused("INTERNAL_ERROR", "the shard could not store this request")
    (row,) = query(dsn, "SELECT count(*) AS n FROM holds WHERE event_id = $1", create.event_id)
    assert row["n"] == 1, "the refused hold was stored"
    text = ray.get(shard.metrics_text.remote()).decode()
    assert re.search(r'ticketing_actor_oversell_refused_total\{guard="ga_pools_check",shard="0"\} 1\.0', text), text
    assert _metric(text, "ticketing_actor_oversell_refused_total") == 1


def test_recovery_refuses_only_the_event_whose_rows_disagree(cluster: RunningCluster, ray_driver: None) -> None:
    """Rows that do not rebuild into a consistent event (here a GA pool's counter no longer equals
    its live holds) keep that event from being served — every call on it answers unavailable and
    the shard says which event and why — while the shard's other events sell as before. Before,
    one such event failed the recovery of the whole shard, forever."""
    import ray

    dsn = new_database(cluster)
    first = start_shard(dsn)
    broken, healthy = ga_event_command(100), ga_event_command(100)
    ray.get(first.apply.remote([broken, healthy]))
    ray.get(first.apply.remote([ga_hold(broken.event_id, "a", 2), ga_hold(healthy.event_id, "b", 2)]))
    ray.kill(first, no_restart=True)
    query(dsn, "UPDATE ga_pools SET held = held + 5 WHERE event_id = $1", broken.event_id)

    second = start_shard(dsn)

    on_broken, on_healthy = ray.get(second.apply.remote([ga_hold(broken.event_id, "c", 1),
                                                         ga_hold(healthy.event_id, "d", 1)]))
    assert isinstance(on_broken, Unavailable) and isinstance(on_healthy, HoldView)
    (read,) = ray.get(second.read.remote([GetAvailability(broken.event_id)]))
    assert isinstance(read, Unavailable)
    health = ray.get(second.health.remote())
    assert health["quarantined_events"] == [str(broken.event_id)]
    text = ray.get(second.metrics_text.remote()).decode()
    assert _metric(text, "ticketing_actor_events_quarantined") == 1
    assert assert_pool_consistent(dsn, healthy.event_id) == (3, 0)
    (row,) = query(dsn, "SELECT count(*) AS n FROM holds WHERE event_id = $1", broken.event_id)
    assert row["n"] == 1, "a call on the refused event changed its rows"
