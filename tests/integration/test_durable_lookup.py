"""The durable lookup (shards/lookup.py) on a real actor and Postgres (issue 10, defects 2 and 3).

Memory keeps live holds, the last `closed_holds_max` ended ones and the newest
`idempotency_keys_max` keys; Postgres keeps everything acknowledged. These tests push holds and
keys out of memory (a SIGKILL, a tiny LRU, a tiny key cache) and check that reads and replays still
get the true answer from Postgres, and, with the lookup taken away (`shards.faults.MemoryOnlyStore`,
the negative controls), that the bugs it prevents appear: 404s for acknowledged holds, and a reused
key that re-executes and fails its whole group commit.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from actors.event_bodies import layout_of
from actors.inventory.commands import (
    BeginCheckout,
    CheckIn,
    ConfirmCheckout,
    HoldGeneralAdmission,
    HoldSeats,
    ReleaseHold,
    TransferTicket,
)
from actors.inventory.errors import ErrorCode
from actors.inventory.holds import HoldStatus
from actors.inventory.results import HoldView, OrderView, Rejection, TicketView
from actors.inventory.tickets import OrderStatus, TicketStatus
from actors.protocol import GetHold, GetOrder, GetTicket, Unavailable
from shards.faults import MemoryOnlyStore
from shards.lookup import _PURGE, DurableLookup, purge_idempotency_keys
from tests.actor_support import ga_event_command, new_database, query, start_shard
from tests.harness import RunningCluster

pytestmark = pytest.mark.integration

READ_ATTEMPTS_MAX = 300
RETRY_PAUSE_S = 0.1


def start(dsn: str, *, durable_lookup: bool = True, isolation: bool = True, **bounds: Any) -> Any:
    """An isolated shard actor; `durable_lookup` False gives it a store without the lookup
    (`shards.faults.MemoryOnlyStore`), the negative control's."""
    return start_shard(dsn, store=None if durable_lookup else MemoryOnlyStore, isolation=isolation, **bounds)


def apply(shard: Any, command: Any) -> Any:
    import ray

    return ray.get(shard.apply.remote([command]), timeout=60)[0]


def read(shard: Any, message: Any) -> Any:
    """Read, retrying while a SIGKILLed actor restarts."""
    import ray

    for _ in range(READ_ATTEMPTS_MAX):
        try:
            return ray.get(shard.read.remote([message]), timeout=60)[0]
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
            time.sleep(RETRY_PAUSE_S)
    raise AssertionError(f"no answer to {message}")


def _stored(time_s: float) -> datetime:
    """A time as Postgres holds it: the writer converts POSIX seconds with `datetime.fromtimestamp`
    (microseconds, rounded), and rows read back as that microsecond value; rounding the float to
    some decimals instead disagreed on ties."""
    return datetime.fromtimestamp(time_s, UTC)


def normal(view: Any) -> Any:
    """A view as comparable between memory and rows: times as Postgres stores them (microseconds),
    an order's tickets by id (Postgres, and so recovery, orders tickets issued together by id)."""
    if isinstance(view, HoldView):
        return view._replace(expires_at_s=_stored(view.expires_at_s))
    if isinstance(view, OrderView):
        return view._replace(tickets=tuple(sorted((normal(ticket) for ticket in view.tickets),
                                                  key=lambda ticket: ticket.ticket_id.int)))
    if isinstance(view, TicketView) and view.checked_in_at_s is not None:
        return view._replace(checked_in_at_s=_stored(view.checked_in_at_s))
    return view


def kill(shard: Any) -> None:
    import ray

    os.kill(ray.get(shard.health.remote())["pid"], signal.SIGKILL)


class Sale:
    """One event with one hold in each ended status, and the order and ticket of the confirmed one."""

    def __init__(self, shard: Any) -> None:
        create = self.create = ga_event_command(50, seated_rows=[10])
        short = ga_event_command(5, hold_seconds=1)  # its holds expire after a second
        assert apply(shard, create) is not None and apply(shard, short) is not None
        event_id = create.event_id
        bought = self.hold(shard, HoldSeats(event_id, "ana", uuid.uuid4(), ("A-1-3", "A-1-4")))
        assert isinstance(apply(shard, BeginCheckout("ana", bought.hold_id)), HoldView)
        order = apply(shard, ConfirmCheckout("ana", bought.hold_id, uuid.uuid4(), (uuid.uuid4(), uuid.uuid4())))
        assert isinstance(order, OrderView), order
        self.order = order
        released = self.hold(shard, HoldGeneralAdmission(event_id, "ben", uuid.uuid4(), "floor", 2))
        assert isinstance(apply(shard, ReleaseHold("ben", released.hold_id)), HoldView)
        expired = self.hold(shard, HoldGeneralAdmission(short.event_id, "cy", uuid.uuid4(), "floor", 1))
        self.holds = {bought.hold_id: ("ana", HoldStatus.CONFIRMED), released.hold_id: ("ben", HoldStatus.RELEASED),
                      expired.hold_id: ("cy", HoldStatus.EXPIRED)}
        self.views = {bought.hold_id: bought, released.hold_id: released, expired.hold_id: expired}
        deadline = time.monotonic() + 30
        while read(shard, GetHold(expired.hold_id, "cy")).status is not HoldStatus.EXPIRED:
            assert time.monotonic() < deadline, "the hold did not expire"
            time.sleep(0.2)
        # Memory shows the expiry as soon as it is applied, before its commit; a kill then would
        # bring the hold back live. A command's answer comes after its own commit, and commits
        # follow apply order: once this hold is acknowledged the expiry is durable too.
        self.hold(shard, HoldGeneralAdmission(short.event_id, "barrier", uuid.uuid4(), "floor", 1))

    @staticmethod
    def hold(shard: Any, command: Any) -> HoldView:
        view = apply(shard, command)
        assert isinstance(view, HoldView), view
        return view

    def check_reads_back(self, shard: Any) -> None:
        for hold_id, (user, status) in self.holds.items():
            view = read(shard, GetHold(hold_id, user))
            assert isinstance(view, HoldView) and view.status is status, (status, view)
            first = self.views[hold_id]  # the same hold as acknowledged, but for its status (and order)
            assert (view.items, view.total_cents, view.currency) == (first.items, first.total_cents, first.currency)
            assert abs(view.expires_at_s - first.expires_at_s) < 1e-5  # Postgres stores microseconds
            assert read(shard, GetHold(hold_id, "mallory")) is None, "another user's hold must be not found"
        bought = next(hold_id for hold_id, (_, status) in self.holds.items() if status is HoldStatus.CONFIRMED)
        assert read(shard, GetHold(bought, "ana")).order_id == self.order.order_id
        order = read(shard, GetOrder(self.order.order_id, "ana"))
        assert normal(order) == normal(self.order) and order.status is OrderStatus.CONFIRMED, order
        ticket = read(shard, GetTicket(self.order.tickets[0].ticket_id, "ana"))
        assert isinstance(ticket, TicketView) and ticket.status is TicketStatus.VALID and ticket.seat == "A-1-3"


def test_ended_holds_read_back_with_their_status_after_a_sigkill(cluster: RunningCluster, ray_driver: None) -> None:
    """Confirmed, released and expired holds, acknowledged before the actor was SIGKILLed, read back
    with their true status (and the order and ticket of the confirmed one) from the restarted actor,
    whose memory holds no ended hold: they come from Postgres."""
    import ray

    shard = start(new_database(cluster))
    sale = Sale(shard)
    kill(shard)
    sale.check_reads_back(shard)
    assert ray.get(shard.health.remote())["epoch"] >= 2, "the actor was not restarted"
    # Hold ids nobody created are still not found, and so is a hold of an event not on this shard.
    assert read(shard, GetHold(uuid.uuid4(), "ana")) is None


def test_the_lookups_views_equal_the_cores_views(cluster: RunningCluster, ray_driver: None) -> None:
    """Hold, order and ticket views built from rows (shards/lookup.py) equal the views the core
    builds from memory, including a checked-in ticket and an order whose ticket was transferred
    (the order shows the buyer's transferred ticket, not the recipient's), and apply the same
    owner checks."""
    dsn = new_database(cluster)
    shard = start(dsn)
    sale = Sale(shard)
    used, moved = (ticket.ticket_id for ticket in sale.order.tickets)
    assert isinstance(apply(shard, CheckIn(used, "north")), TicketView)
    transfer = apply(shard, TransferTicket("ana", moved, "bob", uuid.uuid4()))
    replacement = transfer.new_ticket.ticket_id
    layout = layout_of(sale.create.document)
    currency = sale.create.document["currency"]

    async def from_rows() -> list[Any]:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            lookup = DurableLookup(pool, 5.0, lambda event_id: (layout, currency)
                                   if event_id == sale.create.event_id else None, lambda row: row)
            bought = next(h for h, (_, status) in sale.holds.items() if status is HoldStatus.CONFIRMED)
            released = next(h for h, (_, status) in sale.holds.items() if status is HoldStatus.RELEASED)
            return [await lookup.hold(bought, "ana"), await lookup.hold(released, "ben"),
                    await lookup.order(sale.order.order_id, "ana"), await lookup.ticket(used, "ana"),
                    await lookup.ticket(moved, "ana"), await lookup.ticket(replacement, "bob"),
                    await lookup.ticket(replacement, "ana"), await lookup.order(sale.order.order_id, "bob")]
        finally:
            await pool.close()

    bought = next(h for h, (_, status) in sale.holds.items() if status is HoldStatus.CONFIRMED)
    released = next(h for h, (_, status) in sale.holds.items() if status is HoldStatus.RELEASED)
    memory = [read(shard, GetHold(bought, "ana")), read(shard, GetHold(released, "ben")),
              read(shard, GetOrder(sale.order.order_id, "ana")), read(shard, GetTicket(used, "ana")),
              read(shard, GetTicket(moved, "ana")), read(shard, GetTicket(replacement, "bob")), None, None]
    rows = [normal(view) for view in asyncio.run(from_rows())]
    assert rows == [normal(view) for view in memory]
    assert rows[3].status is TicketStatus.CHECKED_IN and rows[3].gate == "north"
    # The buyer's order shows her own ticket, transferred, never the recipient's (its code).
    assert moved in {ticket.ticket_id for ticket in rows[2].tickets}
    assert replacement not in {ticket.ticket_id for ticket in rows[2].tickets}


def test_negative_control_without_the_lookup_ended_holds_are_404_after_a_sigkill(
        cluster: RunningCluster, ray_driver: None) -> None:
    """Negative control: with the durable lookup off, the same reads find nothing after the restart
    (the 404s of issue 10). If this stops failing, the test above proves nothing."""
    shard = start(new_database(cluster), durable_lookup=False)
    sale = Sale(shard)
    sale.check_reads_back(shard)  # before the kill memory still has them
    kill(shard)
    for hold_id, (user, _) in sale.holds.items():
        assert read(shard, GetHold(hold_id, user)) is None


def test_holds_evicted_from_the_closed_hold_lru_still_read_back(cluster: RunningCluster, ray_driver: None) -> None:
    """With `closed_holds_max` = 1, memory forgets every ended hold but the last; all still read back
    released from Postgres, and with the lookup off the evicted ones are not found."""
    for durable_lookup in (True, False):
        shard = start(new_database(cluster), durable_lookup=durable_lookup, closed_holds_max=1)
        create = ga_event_command(50)
        apply(shard, create)
        released = []
        for _ in range(4):
            view = apply(shard, HoldGeneralAdmission(create.event_id, "dee", uuid.uuid4(), "floor", 1))
            assert isinstance(view, HoldView)
            assert isinstance(apply(shard, ReleaseHold("dee", view.hold_id)), HoldView)
            released.append(view.hold_id)
        views = [read(shard, GetHold(hold_id, "dee")) for hold_id in released]
        if durable_lookup:
            assert all(isinstance(v, HoldView) and v.status is HoldStatus.RELEASED for v in views), views
            # A late DELETE of an evicted hold is the core's (not found): reads alone fall back.
        else:
            assert views[:3] == [None, None, None] and views[3].status is HoldStatus.RELEASED, views


def test_a_lookup_postgres_cannot_answer_is_unavailable_not_404(cluster: RunningCluster, ray_driver: None) -> None:
    """While the holds table is locked by another transaction the lookup times out
    (`durable_lookup_timeout_s`): the read is Unavailable (503 with Retry-After), never "not found"."""
    dsn = new_database(cluster)
    shard = start(dsn, durable_lookup_timeout_s=0.5)
    sale = Sale(shard)
    kill(shard)
    hold_id, (user, _) = next(iter(sale.holds.items()))
    assert isinstance(read(shard, GetHold(hold_id, user)), HoldView)  # recovered (its load reads holds too)

    async def while_locked() -> Any:
        connection = await asyncpg.connect(dsn)
        try:
            async with connection.transaction():
                await connection.execute("LOCK TABLE holds IN ACCESS EXCLUSIVE MODE")
                return await asyncio.to_thread(read, shard, GetHold(hold_id, user))
        finally:
            await connection.close()

    reply = asyncio.run(while_locked())
    assert isinstance(reply, Unavailable), reply
    assert isinstance(read(shard, GetHold(hold_id, user)), HoldView), "the lock is gone: it reads back"


# --- idempotency keys memory dropped (defect 3) -------------------------------------------------


def reuse_after_eviction(shard: Any, event_id: uuid.UUID) -> tuple[HoldView, list[Any]]:
    """Hold with key k0, push k0 out of a 2-key cache with three more keys, then reuse k0 with the
    same body (fresh hold id, as a retrying router sends) and with a different one."""
    first = apply(shard, HoldGeneralAdmission(event_id, "eve", uuid.uuid4(), "floor", 1, None, "k0"))
    assert isinstance(first, HoldView), first
    for n in range(1, 4):
        assert isinstance(apply(shard, HoldGeneralAdmission(event_id, "eve", uuid.uuid4(), "floor", 1, None,
                                                            f"k{n}")), HoldView)
    same = apply(shard, HoldGeneralAdmission(event_id, "eve", uuid.uuid4(), "floor", 1, None, "k0"))
    other = apply(shard, HoldGeneralAdmission(event_id, "eve", uuid.uuid4(), "floor", 2, None, "k0"))
    return first, [same, other]


def test_a_key_memory_dropped_is_answered_from_postgres(cluster: RunningCluster, ray_driver: None) -> None:
    """With a 2-key cache, reusing an evicted key returns the first result (same hold id) without a
    second hold, a different body under it is IDEMPOTENCY_KEY_REUSED, and no commit failed."""
    import ray

    dsn = new_database(cluster)
    shard = start(dsn, idempotency_keys_max=2)
    create = ga_event_command(50)
    apply(shard, create)
    epoch = ray.get(shard.health.remote())["epoch"]
    first, (same, other) = reuse_after_eviction(shard, create.event_id)
    assert same == first, same
    assert isinstance(other, Rejection) and other.code is ErrorCode.IDEMPOTENCY_KEY_REUSED, other
    assert ray.get(shard.health.remote())["epoch"] == epoch, "a commit failed and the actor rebuilt"
    (row,) = query(dsn, "SELECT count(*) AS n FROM holds WHERE user_id = 'eve'")
    assert row["n"] == 4


def test_negative_control_without_the_lookup_a_dropped_key_fails_its_batch(
        cluster: RunningCluster, ray_driver: None) -> None:
    """Negative control: with the lookup off (and poison isolation off, as before issue 10), the
    reused key re-executes, its insert hits the idempotency_keys primary key, the whole batch fails
    and the actor rebuilds. If this stops failing, the test above proves nothing."""
    import ray

    shard = start(new_database(cluster), durable_lookup=False, isolation=False, idempotency_keys_max=2)
    create = ga_event_command(50)
    apply(shard, create)
    epoch = ray.get(shard.health.remote())["epoch"]
    _, (same, _other) = reuse_after_eviction(shard, create.event_id)
    assert isinstance(same, Unavailable), same
    assert ray.get(shard.health.remote(), timeout=60)["epoch"] > epoch, "the failed batch should have rebuilt"


def test_keys_past_their_retention_are_purged_then_forgotten(cluster: RunningCluster, ray_driver: None) -> None:
    """With a 1 s retention and a 0.2 s purge interval the actor deletes the key from Postgres, then
    memory forgets it, and reusing it starts afresh (a new hold) without a primary-key failure."""
    import ray

    dsn = new_database(cluster)
    shard = start(dsn, idempotency_retention_s=1, idempotency_purge_interval_s=0.2)
    create = ga_event_command(50)
    apply(shard, create)
    epoch = ray.get(shard.health.remote())["epoch"]
    first = apply(shard, HoldGeneralAdmission(create.event_id, "fay", uuid.uuid4(), "floor", 1, None, "old"))
    deadline = time.monotonic() + 30
    while query(dsn, "SELECT 1 FROM idempotency_keys WHERE user_id = 'fay'"):
        assert time.monotonic() < deadline, "the key was not purged"
        time.sleep(0.2)
    time.sleep(0.5)  # the purge forgets in memory right after its delete committed
    again = apply(shard, HoldGeneralAdmission(create.event_id, "fay", uuid.uuid4(), "floor", 1, None, "old"))
    assert isinstance(again, HoldView) and again.hold_id != first.hold_id, again
    assert ray.get(shard.health.remote())["epoch"] == epoch


def test_purge_deletes_old_keys_in_bounded_batches_and_keeps_young_ones(
        cluster: RunningCluster, ray_driver: None) -> None:
    """Ten keys past the cutoff and three younger: one purge batch of 4 deletes exactly the four
    oldest; the whole purge (batches of 4) deletes the ten and reports the cutoff as purged."""
    dsn = new_database(cluster)
    now_s = time.time()

    async def main() -> None:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            rows = [("u", f"old-{n}", b"f", "{}", now_s - 1000 + n) for n in range(10)]
            rows += [("u", f"young-{n}", b"f", "{}", now_s + n) for n in range(3)]
            await pool.executemany("""INSERT INTO idempotency_keys (user_id, key, fingerprint, result, created_at)
                                      VALUES ($1, $2, $3, $4::jsonb, to_timestamp($5))""", rows)
            cutoff_s = now_s - 1
            async with pool.acquire() as connection:
                batch = await connection.fetchrow(_PURGE, cutoff_s, 4)
            assert batch["n"] == 4
            left = {r["key"] for r in await pool.fetch("SELECT key FROM idempotency_keys")}
            assert left == {f"old-{n}" for n in range(4, 10)} | {f"young-{n}" for n in range(3)}
            assert await purge_idempotency_keys(pool, cutoff_s, 4, 5.0) == (6, cutoff_s)
            left = {r["key"] for r in await pool.fetch("SELECT key FROM idempotency_keys")}
            assert left == {f"young-{n}" for n in range(3)}
        finally:
            await pool.close()

    asyncio.run(main())


def _commands_on_ended_holds(shard: Any, sale: Sale) -> dict[str, Any]:
    """A release and a checkout of every ended hold of the sale, by its owner and by a stranger."""
    replies = {}
    for hold_id, (owner, status) in sale.holds.items():
        replies[f"release {status}"] = apply(shard, ReleaseHold(owner, hold_id))
        replies[f"checkout {status}"] = apply(shard, BeginCheckout(owner, hold_id))
        replies[f"stranger {status}"] = apply(shard, ReleaseHold("stranger", hold_id))
    return {name: reply.code.value if isinstance(reply, Rejection) else reply for name, reply in replies.items()}


EXPECTED_ON_ENDED = {
    "release confirmed": "HOLD_NOT_ACTIVE", "checkout confirmed": "HOLD_NOT_ACTIVE",
    "release released": "HOLD_NOT_ACTIVE", "checkout released": "HOLD_NOT_ACTIVE",
    "release expired": "HOLD_NOT_ACTIVE", "checkout expired": "HOLD_EXPIRED",
    "stranger confirmed": "HOLD_NOT_FOUND", "stranger released": "HOLD_NOT_FOUND", "stranger expired": "HOLD_NOT_FOUND",
}


def test_commands_on_holds_ended_before_a_restart_answer_as_before_it(cluster: RunningCluster,
                                                                       ray_driver: None) -> None:
    """A DELETE or checkout of a hold that ended before the actor restarted answers what it
    answered before the restart (409 HOLD_NOT_ACTIVE, 410 HOLD_EXPIRED), not 404: the checkout
    saga decides what to do with a charge from that answer (actors/ended_holds.py). A stranger
    still gets not-found, and nothing is written."""
    dsn = new_database(cluster)
    shard = start(dsn)
    sale = Sale(shard)
    assert _commands_on_ended_holds(shard, sale) == EXPECTED_ON_ENDED  # memory still knows them
    kill(shard)
    read(shard, GetHold(next(iter(sale.holds)), None))  # wait for the restart

    assert _commands_on_ended_holds(shard, sale) == EXPECTED_ON_ENDED
    (row,) = query(dsn, "SELECT count(*) AS n FROM audit_log WHERE at > now() - interval '1 hour'")
    audit_rows = row["n"]
    _commands_on_ended_holds(shard, sale)
    (row,) = query(dsn, "SELECT count(*) AS n FROM audit_log WHERE at > now() - interval '1 hour'")
    assert row["n"] == audit_rows, "a command on an ended hold wrote something"


def test_negative_control_without_the_lookup_ended_holds_are_not_found_after_a_restart(
        cluster: RunningCluster, ray_driver: None) -> None:
    dsn = new_database(cluster)
    shard = start(dsn, durable_lookup=False)
    sale = Sale(shard)
    kill(shard)
    read(shard, GetHold(next(iter(sale.holds)), None))
    replies = _commands_on_ended_holds(shard, sale)
    assert set(replies.values()) == {"HOLD_NOT_FOUND"}, "the negative control is broken"
