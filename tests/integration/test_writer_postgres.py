"""The writer against real Postgres: for random command sequences on the core, cut into random
batches and committed with `write_batch` (lease check, `execute_plan`, COMMIT), the rows stored
after every batch equal the core's reference projection (`RowsProjection`), and `audit_log`
holds every transition in order.

This is the unit test `tests/unit/test_writer_plan.py` with the real SQL instead of `TableModel`:
COPY encodings, the ``unnest`` updates and their guards, the statement order that the primary
key on `seat_claims` and the live-ticket index depend on, timestamps through the writer's own
codec. Each example writes a new event into one scratch database that this module creates and
drops.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings

from actors.inventory.commands import BeginCheckout, ConfirmCheckout, HoldSeats, TransferTicket
from actors.inventory.results import OrderView, TransferView
from shards import writer
from shards.codec import core_result_codec
from shards.lease import take_lease
from shards.writer import connect_writer, plan_batch, write_batch
from tests.harness import RunningCluster
from tests.replay import RowsProjection
from tests.writer_support import (
    Run,
    audit_row,
    event_rows_created,
    expected_audit,
    projected_rows,
    run_steps,
    scratch_database,
    steps,
    stored_rows,
)

pytestmark = pytest.mark.integration

SHARD_ID = 0
TIMEOUT_S = 30.0
CODEC = core_result_codec()


@pytest.fixture(scope="module")
def scratch_dsn(cluster: RunningCluster) -> Iterator[str]:
    with scratch_database(cluster, "writer_test") as dsn:
        yield dsn


def lease_epoch(dsn: str) -> int:
    async def take() -> int:
        connection = await asyncpg.connect(dsn)
        try:
            return await take_lease(connection, SHARD_ID, "writer-test")
        finally:
            await connection.close()

    return asyncio.run(take())


def expected_rows(projection: RowsProjection, event_id: uuid.UUID) -> dict[str, Any]:
    rows = projected_rows(projection, [event_id])
    rows["event_status"] = rows["event_status"].get(event_id, "on_sale")
    del rows["idempotency"]
    return rows


async def commit_and_compare(dsn: str, epoch: int, run: Run) -> None:
    """Commit each batch (the event's rows in the first) and compare the stored rows after each."""
    connection = await connect_writer(dsn, timeout_s=TIMEOUT_S)
    try:
        # Keys are per user, and every example reuses the same four users: start each example
        # with an empty key table so that only this example's keys are compared.
        await connection.execute("DELETE FROM idempotency_keys")
        projection = RowsProjection()
        batches = [[event_rows_created(run.event_id), *run.batches[0]], *run.batches[1:]]
        for batch in batches:
            await write_batch(connection, plan_batch(batch), CODEC, shard_id=SHARD_ID, epoch=epoch)
            projection.apply_all(change for change in batch if type(change).__name__ != "EventRowsCreated")
            assert await stored_rows(connection, run.event_id) == expected_rows(projection, run.event_id)
        keys = await connection.fetch("SELECT user_id, key, fingerprint FROM idempotency_keys")
        assert sorted((r["user_id"], r["key"], bytes(r["fingerprint"])) for r in keys) == sorted(
            (r.user_id, r.key, r.fingerprint) for r in projection.idempotency)
        audit = await connection.fetch(
            """SELECT event_id, actor, entity, entity_id, from_status, to_status, at FROM audit_log
               WHERE event_id = $1 ORDER BY audit_id""", run.event_id)
        assert [audit_row(tuple(row)) for row in audit] == expected_audit([change for batch in batches
                                                                           for change in batch])
    finally:
        await connection.close(timeout=TIMEOUT_S)


DATABASE_SETTINGS = settings(max_examples=40, deadline=None, database=None,
                             suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                    HealthCheck.function_scoped_fixture])


def test_stored_rows_equal_the_projection_for_random_batches(scratch_dsn: str) -> None:
    epoch = lease_epoch(scratch_dsn)

    @DATABASE_SETTINGS
    @given(steps())
    def check(instructions: list[tuple[Any, ...]]) -> None:
        run = run_steps(instructions, uuid.uuid4())
        asyncio.run(commit_and_compare(scratch_dsn, epoch, run))

    check()


def transfer_in_its_own_batch() -> Run:
    """A seat bought in one batch and transferred in the next."""
    run = Run(uuid.uuid4())
    view = run.apply(HoldSeats(run.event_id, "ana", uuid.uuid4(), ("A-2-2",)))
    run.apply(BeginCheckout("ana", view.hold_id))
    order = run.apply(ConfirmCheckout("ana", view.hold_id, uuid.uuid4(), (uuid.uuid4(),)))
    assert isinstance(order, OrderView), order
    run.batches.append([])
    moved = run.apply(TransferTicket("ana", order.tickets[0].ticket_id, "ben", uuid.uuid4()))
    assert isinstance(moved, TransferView), moved
    return run


def test_a_transfer_of_a_seat_commits_in_a_batch_of_its_own(scratch_dsn: str) -> None:
    """Voiding a seat's live ticket and issuing its replacement in one batch: the unique index on
    live tickets per seat accepts it only because updates of existing rows run before inserts."""
    asyncio.run(commit_and_compare(scratch_dsn, lease_epoch(scratch_dsn), transfer_in_its_own_batch()))


def test_negative_control_inserting_before_updating_fails_the_transfer(scratch_dsn: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """With the ticket updates moved after the inserts, the same transfer fails on the live-ticket
    index: the statement order in `execute_plan` is what the test above relies on."""
    real_update, real_insert = writer._update_existing, writer._insert_new
    deferred: list[tuple[Any, ...]] = []

    async def update_later(connection: Any, table: str, key_column: str, updates: Any) -> None:
        if table == "tickets":
            deferred.append((table, key_column, updates))
        else:
            await real_update(connection, table, key_column, updates)

    async def insert_then_update(connection: Any, plan: Any) -> None:
        await real_insert(connection, plan)
        for arguments in deferred:
            await real_update(connection, *arguments)

    monkeypatch.setattr(writer, "_update_existing", update_later)
    monkeypatch.setattr(writer, "_insert_new", insert_then_update)
    with pytest.raises(asyncpg.UniqueViolationError, match="tickets_one_live_per_seat"):
        asyncio.run(commit_and_compare(scratch_dsn, lease_epoch(scratch_dsn), transfer_in_its_own_batch()))
