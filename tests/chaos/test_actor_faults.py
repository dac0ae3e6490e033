"""Faults under load: the actor process SIGKILLed mid-sale, Postgres connections cut mid-batch.

After each, the database is checked: every acknowledged hold and order is there, nothing is
half-applied, no seat has two valid tickets, GA sold equals tickets, and retries with the same
idempotency keys (carrying fresh ids, as a retrying router would) created nothing twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import uuid
from typing import Any

import pytest

from actors.inventory.commands import BeginCheckout, CheckIn, ConfirmCheckout, HoldSeats, TransferTicket
from actors.inventory.errors import ErrorCode
from actors.inventory.results import HoldView, OrderView, Rejection, TicketView, TransferView
from actors.inventory.tickets import TicketStatus
from actors.protocol import Unavailable
from tests.actor_support import assert_pool_consistent, ga_event_command, ga_hold, new_database, query, start_shard
from tests.harness import RunningCluster

pytestmark = pytest.mark.chaos

CLIENTS = 100
ATTEMPTS_MAX = 200
RETRY_PAUSE_S = 0.1
CALL_TIMEOUT_S = 15.0


async def send(shard: Any, command: Any) -> Any:
    """Send until the shard gives a decision; every attempt carries fresh generated ids."""
    import ray

    for _ in range(ATTEMPTS_MAX):
        attempt = _fresh_ids(command)
        try:
            reply = (await asyncio.wait_for(shard.apply.remote([attempt]), CALL_TIMEOUT_S))[0]
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, TimeoutError):
            await asyncio.sleep(RETRY_PAUSE_S)
            continue
        if isinstance(reply, Unavailable):
            await asyncio.sleep(RETRY_PAUSE_S)
            continue
        return reply
    raise AssertionError(f"no decision for {command}")


def _fresh_ids(command: Any) -> Any:
    """What a retrying router sends: the same request and key, new ids for what it would create."""
    fresh: dict[str, Any] = {}
    for name in getattr(command, "generated_ids", ()):
        value = getattr(command, name)
        fresh[name] = tuple(uuid.uuid4() for _ in value) if isinstance(value, tuple) else uuid.uuid4()
    return dataclasses.replace(command, **fresh) if fresh else command


async def buyer(shard: Any, event_id: uuid.UUID, n: int, lost_replies: bool) -> tuple[HoldView, OrderView]:
    user = f"buyer-{n}"
    if n % 2:
        seat = f"A-{1 + (n // 2) // 10}-{1 + (n // 2) % 10}"
        hold_command: Any = HoldSeats(event_id, user, uuid.uuid4(), (seat,), None, f"hold-{n}")
    else:
        hold_command = ga_hold(event_id, user, 1, key=f"hold-{n}")
    hold = await send(shard, hold_command)
    assert isinstance(hold, HoldView), hold
    if lost_replies:  # the reply was lost: the client retries the same key
        again = await send(shard, hold_command)
        assert isinstance(again, HoldView) and again.hold_id == hold.hold_id
    pinned = await send(shard, BeginCheckout(user, hold.hold_id, f"begin-{n}"))
    assert isinstance(pinned, HoldView), pinned
    confirm = ConfirmCheckout(user, hold.hold_id, uuid.uuid4(), (uuid.uuid4(),), f"confirm-{n}")
    order = await send(shard, confirm)
    assert isinstance(order, OrderView), order
    if lost_replies:
        again_order = await send(shard, confirm)
        assert isinstance(again_order, OrderView) and again_order.order_id == order.order_id
    return hold, order


def check_sale(dsn: str, event_id: uuid.UUID, results: list[tuple[HoldView, OrderView]]) -> None:
    holds = query(dsn, "SELECT user_id, count(*) AS n FROM holds WHERE event_id = $1 GROUP BY user_id", event_id)
    assert all(row["n"] == 1 for row in holds), "a retried key created a second hold"
    orders = query(dsn, "SELECT user_id, count(*) AS n FROM orders WHERE event_id = $1 GROUP BY user_id", event_id)
    assert all(row["n"] == 1 for row in orders), "a retried key created a second order"
    for hold, order in results:
        (row,) = query(dsn, "SELECT status FROM holds WHERE hold_id = $1", hold.hold_id)
        assert row["status"] == "confirmed"
        tickets = query(dsn, "SELECT status FROM tickets WHERE order_id = $1", order.order_id)
        assert [t["status"] for t in tickets] == ["valid"], "an acknowledged order lost its ticket"
    doubles = query(dsn, """SELECT seat_no FROM tickets WHERE event_id = $1 AND seat_no IS NOT NULL
                            AND status = 'valid' GROUP BY seat_no HAVING count(*) > 1""", event_id)
    assert doubles == [], "a seat has two valid tickets"
    sold_claims = query(dsn, "SELECT count(*) AS n FROM seat_claims WHERE event_id = $1 AND state = 'sold'", event_id)
    assert sold_claims[0]["n"] == sum(1 for _, order in results if order.tickets[0].seat is not None)
    assert assert_pool_consistent(dsn, event_id) == (0, sum(1 for _, o in results if o.tickets[0].seat is None))


def run_sale(shard: Any, event_id: uuid.UUID, *, kill_after: int | None, lost_replies: bool
             ) -> list[tuple[HoldView, OrderView]]:
    import ray

    async def main() -> list[tuple[HoldView, OrderView]]:
        tasks = [asyncio.create_task(buyer(shard, event_id, n, lost_replies)) for n in range(CLIENTS)]
        if kill_after is not None:
            pid = (await shard.health.remote())["pid"]
            while sum(task.done() for task in tasks) < kill_after:
                await asyncio.sleep(0.01)
            os.kill(pid, signal.SIGKILL)
        return list(await asyncio.gather(*tasks))

    results = asyncio.run(main())
    ray.get(shard.health.remote(), timeout=60)
    return results


def test_sigkill_mid_sale_loses_nothing_acknowledged(cluster: RunningCluster, ray_driver: None) -> None:
    import ray

    dsn = new_database(cluster)
    shard = start_shard(dsn)
    create = ga_event_command(CLIENTS, seated_rows=[10] * 5)
    ray.get(shard.apply.remote([create]))
    results = run_sale(shard, create.event_id, kill_after=CLIENTS // 4, lost_replies=True)
    assert ray.get(shard.health.remote())["epoch"] >= 2, "the actor was not restarted"
    check_sale(dsn, create.event_id, results)


def test_negative_control_without_idempotency_retries_duplicate(cluster: RunningCluster, ray_driver: None) -> None:
    """Negative control: with the actor ignoring idempotency keys, the same retries create second
    holds. If this stops failing, the test above proves nothing."""
    import ray

    dsn = new_database(cluster)
    shard = start_shard(dsn, idempotency=False)
    create = ga_event_command(2 * CLIENTS, seated_rows=[10] * 5)
    ray.get(shard.apply.remote([create]))

    async def main() -> list[Any]:
        commands = [ga_hold(create.event_id, f"buyer-{n}", 1, key=f"hold-{n}") for n in range(20)]
        first = await asyncio.gather(*(send(shard, command) for command in commands))
        again = await asyncio.gather(*(send(shard, command) for command in commands))
        return list(first) + list(again)

    replies = asyncio.run(main())
    assert all(isinstance(reply, HoldView) for reply in replies)
    rows = query(dsn, "SELECT user_id FROM holds WHERE event_id = $1 GROUP BY user_id HAVING count(*) > 1",
                 create.event_id)
    assert len(rows) == 20, "without idempotency the retries should have duplicated every hold"


def test_postgres_connections_cut_mid_batch(cluster: RunningCluster, ray_driver: None) -> None:
    """Terminate the actor's Postgres backends while 20 callers hold: the affected calls get
    Unavailable, nothing is half-applied, every acknowledged hold is in the database, and the
    actor rebuilds and serves again by itself."""
    import ray

    dsn = new_database(cluster)
    shard = start_shard(dsn)
    create = ga_event_command(100_000)
    ray.get(shard.apply.remote([create]))
    database = dsn.rsplit("/", 1)[1]
    acknowledged: list[uuid.UUID] = []
    unavailable = 0

    async def main() -> None:
        nonlocal unavailable
        stop = asyncio.Event()

        async def caller(n: int) -> None:
            nonlocal unavailable
            count = 0
            while not stop.is_set():
                count += 1
                reply = (await shard.apply.remote([ga_hold(create.event_id, f"c{n}-{count}")]))[0]
                if isinstance(reply, HoldView):
                    acknowledged.append(reply.hold_id)
                elif isinstance(reply, Unavailable):
                    unavailable += 1
                else:
                    raise AssertionError(f"unexpected reply {reply}")

        callers = [asyncio.create_task(caller(n)) for n in range(20)]
        for _ in range(10):
            await asyncio.sleep(0.5)
            await asyncio.to_thread(query, dsn, """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                                                   WHERE datname = $1 AND pid <> pg_backend_pid()""", database)
            if unavailable:
                break
        await asyncio.sleep(2.0)  # the actor rebuilds and serves again
        stop.set()
        await asyncio.gather(*callers)

    asyncio.run(main())
    assert unavailable > 0, "no call was caught mid-commit; the fault was not exercised"
    after = ray.get(shard.apply.remote([ga_hold(create.event_id, "after-recovery")]), timeout=60)[0]
    assert isinstance(after, HoldView), after
    stored = {row["hold_id"] for row in query(dsn, "SELECT hold_id FROM holds WHERE event_id = $1", create.event_id)}
    assert set(acknowledged) <= stored, "an acknowledged hold is missing"
    assert_pool_consistent(dsn, create.event_id)


def test_check_ins_and_transfers_survive_a_restart(cluster: RunningCluster, ray_driver: None) -> None:
    """A restarted actor rebuilds used and transferred tickets from Postgres: the ticket admitted
    before the SIGKILL is refused as already used (naming the first gate), the transferred ticket
    is void, and its replacement belongs to the recipient and admits exactly once."""
    import ray

    dsn = new_database(cluster)
    shard = start_shard(dsn)
    create = ga_event_command(10, seated_rows=[10])
    ray.get(shard.apply.remote([create]))
    event_id = create.event_id

    async def purchase(user: str, hold_command: Any) -> uuid.UUID:
        hold = await send(shard, hold_command)
        assert isinstance(hold, HoldView), hold
        assert isinstance(await send(shard, BeginCheckout(user, hold.hold_id)), HoldView)
        order = await send(shard, ConfirmCheckout(user, hold.hold_id, uuid.uuid4(), (uuid.uuid4(),)))
        assert isinstance(order, OrderView), order
        return order.tickets[0].ticket_id

    async def before_kill() -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
        used = await purchase("gina", ga_hold(event_id, "gina"))
        admitted = await send(shard, CheckIn(used, "north"))
        assert isinstance(admitted, TicketView) and admitted.status is TicketStatus.CHECKED_IN, admitted
        moved = await purchase("alice", HoldSeats(event_id, "alice", uuid.uuid4(), ("A-1-1",)))
        transfer = await send(shard, TransferTicket("alice", moved, "bob", uuid.uuid4()))
        assert isinstance(transfer, TransferView), transfer
        return used, moved, transfer.new_ticket.ticket_id

    used, moved, replacement = asyncio.run(before_kill())
    pid = ray.get(shard.health.remote())["pid"]
    os.kill(pid, signal.SIGKILL)

    async def after_kill() -> None:  # `send` retries while the actor restarts
        again = await send(shard, CheckIn(used, "south"))
        assert isinstance(again, Rejection) and again.code is ErrorCode.TICKET_ALREADY_USED, again
        assert again.gate == "north", again
        void = await send(shard, CheckIn(moved, "south"))
        assert isinstance(void, Rejection) and void.code is ErrorCode.TICKET_VOID, void
        admitted = await send(shard, CheckIn(replacement, "south"))
        assert isinstance(admitted, TicketView) and admitted.seat == "A-1-1", admitted
        twice = await send(shard, CheckIn(replacement, "east"))
        assert isinstance(twice, Rejection) and twice.code is ErrorCode.TICKET_ALREADY_USED, twice

    asyncio.run(after_kill())
    assert ray.get(shard.health.remote())["epoch"] >= 2, "the actor was not restarted"
    owners = query(dsn, "SELECT ticket_id, user_id FROM tickets WHERE ticket_id = $1", replacement)
    assert [row["user_id"] for row in owners] == ["bob"]
