"""The outbox is written by the writer in the batch's own transaction: a committed batch leaves one
row per webhook event it caused, in the order the commands ran (``outbox_id``), with the ids a
consumer needs; a batch that fails leaves neither its changes nor its outbox rows. Against real
Postgres, in a scratch database of its own, with the same core runs as the writer's own test.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from actors.inventory.commands import (
    BeginCheckout,
    ChangeEventStatus,
    CheckIn,
    ConfirmCheckout,
    HoldSeats,
    RefundOrder,
    TransferTicket,
)
from actors.inventory.results import OrderView, TransferView
from actors.inventory.sales import EventStatus
from shards.codec import core_result_codec
from shards.lease import take_lease
from shards.writer import connect_writer, execute_plan, plan_batch, write_batch
from tests.harness import RunningCluster
from tests.writer_support import Run, event_rows_created, scratch_database

pytestmark = pytest.mark.integration

SHARD_ID = 0
TIMEOUT_S = 30.0
CODEC = core_result_codec()


@pytest.fixture(scope="module")
def scratch_dsn(cluster: RunningCluster) -> Iterator[str]:
    with scratch_database(cluster, "outbox_test") as dsn:
        yield dsn


def buy(run: Run, user: str, label: str) -> OrderView:
    view = run.apply(HoldSeats(run.event_id, user, uuid.uuid4(), (label,)))
    run.apply(BeginCheckout(user, view.hold_id))
    order = run.apply(ConfirmCheckout(user, view.hold_id, uuid.uuid4(), (uuid.uuid4(),)))
    assert isinstance(order, OrderView), order
    return order


async def commit(dsn: str, event_id: uuid.UUID, batches: list[list[Any]]) -> list[asyncpg.Record]:
    connection = await connect_writer(dsn, timeout_s=TIMEOUT_S)
    try:
        epoch = await take_lease(connection, SHARD_ID, "outbox-test")
        for batch in batches:
            await write_batch(connection, plan_batch(batch), CODEC, shard_id=SHARD_ID, epoch=epoch)
        return await outbox_rows(connection, event_id)
    finally:
        await connection.close(timeout=TIMEOUT_S)


async def outbox_rows(connection: asyncpg.Connection, event_id: uuid.UUID) -> list[asyncpg.Record]:
    return await connection.fetch(
        "SELECT topic, payload FROM outbox WHERE event_id = $1 AND published_at IS NULL ORDER BY outbox_id",
        event_id)


def test_every_webhook_event_is_in_the_outbox_in_order(scratch_dsn: str) -> None:
    run = Run(uuid.uuid4())
    first = buy(run, "ana", "A-2-2")
    second = buy(run, "ben", "A-2-3")
    run.batches.append([])
    moved = run.apply(TransferTicket("ana", first.tickets[0].ticket_id, "cal", uuid.uuid4()))
    assert isinstance(moved, TransferView), moved
    run.apply(CheckIn(second.tickets[0].ticket_id, "north"))
    run.batches.append([])
    refunded = buy(run, "dee", "A-2-4")
    run.apply(RefundOrder("dee", refunded.order_id))
    run.apply(ChangeEventStatus(run.event_id, EventStatus.CANCELLED, "organizer"))
    batches = [[event_rows_created(run.event_id), *run.batches[0]], *run.batches[1:]]

    rows = asyncio.run(commit(scratch_dsn, run.event_id, batches))

    assert [row["topic"] for row in rows] == [
        "order.confirmed", "order.confirmed", "ticket.transferred", "ticket.checked_in", "order.confirmed",
        "order.refunded", "event.cancelled"]
    confirmed = rows[0]["payload"]
    assert confirmed["order_id"] == str(first.order_id)
    assert confirmed["user_id"] == "ana"
    assert confirmed["ticket_ids"] == [str(first.tickets[0].ticket_id)]
    assert confirmed["total_cents"] == first.total_cents
    transferred = rows[2]["payload"]
    assert transferred["ticket_id"] == str(first.tickets[0].ticket_id)
    assert transferred["new_ticket_id"] == str(moved.new_ticket.ticket_id)
    assert transferred["to_user_id"] == "cal"
    assert rows[3]["payload"]["gate"] == "north"
    assert rows[5]["payload"]["order_id"] == str(refunded.order_id)
    assert rows[6]["payload"]["event_id"] == str(run.event_id)


async def write_then_roll_back(dsn: str, run: Run) -> tuple[int, int, int]:
    """The event's rows commit; the next batch is planned and executed in a transaction that sees
    its outbox rows, then rolls back, as a batch whose COMMIT fails would. The outbox rows seen
    inside it, and the orders and outbox rows left after it."""
    connection = await connect_writer(dsn, timeout_s=TIMEOUT_S)
    try:
        epoch = await take_lease(connection, SHARD_ID, "outbox-test")
        await write_batch(connection, plan_batch([event_rows_created(run.event_id)]), CODEC, shard_id=SHARD_ID,
                          epoch=epoch)
        await connection.execute("BEGIN")
        await execute_plan(connection, plan_batch(run.batches[0]), CODEC)
        inside = len(await outbox_rows(connection, run.event_id))
        await connection.execute("ROLLBACK")
        orders = await connection.fetchval("SELECT count(*) FROM orders WHERE event_id = $1", run.event_id)
        return inside, orders, len(await outbox_rows(connection, run.event_id))
    finally:
        await connection.close(timeout=TIMEOUT_S)


def test_a_rolled_back_batch_loses_its_outbox_rows_with_its_changes(scratch_dsn: str) -> None:
    run = Run(uuid.uuid4())
    buy(run, "ana", "A-2-2")
    run.apply(ChangeEventStatus(run.event_id, EventStatus.CANCELLED, "organizer"))

    inside, orders, after = asyncio.run(write_then_roll_back(scratch_dsn, run))

    assert inside == 2  # order.confirmed, event.cancelled: written in the batch's transaction ...
    assert (orders, after) == (0, 0)  # ... and gone with its changes


def test_an_event_cancellation_commits_every_kind_of_order(scratch_dsn: str) -> None:
    """The cancellation's refund of a gift (one ticket transferred) and of a checked-in order
    commits: tickets ``cancelled``, orders ``refunded``, one ``ticket.cancelled`` row per ticket."""
    run = Run(uuid.uuid4())
    gift = buy(run, "ana", "A-2-2")
    moved = run.apply(TransferTicket("ana", gift.tickets[0].ticket_id, "cal", uuid.uuid4()))
    assert isinstance(moved, TransferView), moved
    used = buy(run, "ben", "A-2-3")
    run.apply(CheckIn(used.tickets[0].ticket_id, "north"))
    run.apply(ChangeEventStatus(run.event_id, EventStatus.CANCELLED, "organizer"))
    run.batches.append([])
    for order in (gift, used):
        refunded = run.apply(RefundOrder("system", order.order_id, True, f"cancel-{order.order_id}", True))
        assert isinstance(refunded, OrderView), refunded
    batches = [[event_rows_created(run.event_id), *run.batches[0]], *run.batches[1:]]

    rows = asyncio.run(commit(scratch_dsn, run.event_id, batches))

    assert [row["topic"] for row in rows][-4:] == ["ticket.cancelled", "order.refunded", "ticket.cancelled",
                                                   "order.refunded"]
