"""The database's own guards against selling twice, and their negative controls (STYLE §4, §10).

The core keeps its invariants in memory; the schema checks them again: the primary key on
`seat_claims` (one claim per seat), the unique index `tickets_one_live_per_seat` (one live ticket
per seat) and the pool's ``CHECK (held + sold <= capacity)``. To see that each guard, and only
it, stops a double sale, we plant one the writer would otherwise store: two cores that both
believe they own the event (a split brain: both pass the same lease epoch, so fencing is out of
the picture) sell the same seat, or a core whose pool is larger than the database's (layout
drift) sells past the stored capacity. With the guard in place the second commit is refused
and nothing of it is stored; with the guard dropped the double sale is stored and nothing else
in the writer notices. If a control stops storing the double sale, the guard tests above it
prove nothing. Each refusal is also one `shards.writer.oversell_guard` names, so the actor counts it
(`ticketing_actor_oversell_refused_total`, which pages).

Rows that already exist are the writer's own guard: a seat claim is released or sold only where
it is still the claim the batch first saw, a pool's counters change only from the counters it
first saw. A claim planted in the database, and two cores selling 4 + 4 units of a 5-unit pool
from the same counters (each within capacity, so the CHECK passes both: 8 tickets against a pool
saying sold 4), are refused with `Diverged`; with the guard switched off both are overwritten.

Every test runs on a scratch database of its own, created and dropped here.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from actors.event_bodies import layout_of, settings_of
from actors.inventory.commands import BeginCheckout, ConfirmCheckout, HoldGeneralAdmission, HoldSeats, ReleaseHold
from actors.inventory.core import ShardInventory
from actors.inventory.layout import Layout
from actors.inventory.results import HoldView, OrderView
from shards import writer
from shards.codec import core_result_codec
from shards.lease import take_lease
from shards.writer import Diverged, connect_writer, oversell_guard, plan_batch, write_batch
from tests.core_limits import core_limits
from tests.harness import RunningCluster
from tests.support import fetch
from tests.writer_support import BASE_S, DOCUMENT, LAYOUT, POOL, POOL_CAPACITY, event_rows_created, scratch_database

pytestmark = pytest.mark.integration

SHARD_ID = 0
TIMEOUT_S = 30.0
CODEC = core_result_codec()
SEAT = "A-2-3"
SEAT_NO = LAYOUT.parse_label(SEAT)
DROP_CLAIM_KEY = "ALTER TABLE seat_claims DROP CONSTRAINT seat_claims_pkey"
DROP_LIVE_TICKET_INDEX = "DROP INDEX tickets_one_live_per_seat"


@pytest.fixture
def scratch(cluster: RunningCluster) -> Iterator[str]:
    with scratch_database(cluster, "writer_guard") as dsn:
        yield dsn


def core(event_id: uuid.UUID, layout: Layout = LAYOUT) -> ShardInventory:
    shard = ShardInventory(core_limits())
    shard.create_event(event_id, layout, settings_of(DOCUMENT))
    return shard


def sell(shard: ShardInventory, event_id: uuid.UUID, user: str, command: Any) -> list[Any]:
    """Hold, pin and confirm on one core; returns the change records (one batch)."""
    changes: list[Any] = []
    hold = shard.apply(command, BASE_S)
    assert isinstance(hold.result, HoldView), hold.result
    pinned = shard.apply(BeginCheckout(user, hold.result.hold_id), BASE_S)
    order = shard.apply(ConfirmCheckout(user, hold.result.hold_id, uuid.uuid4(),
                                        tuple(uuid.uuid4() for _ in range(hold.result.quantity))), BASE_S)
    assert isinstance(order.result, OrderView), order.result
    for outcome in (hold, pinned, order):
        changes.extend(outcome.changes)
    return changes


async def commit(dsn: str, epoch: int, changes: list[Any]) -> None:
    """One batch through `write_batch`; on failure the connection is terminated (rolled back)."""
    connection = await connect_writer(dsn, timeout_s=TIMEOUT_S)
    try:
        await write_batch(connection, plan_batch(changes), CODEC, shard_id=SHARD_ID, epoch=epoch)
    except BaseException:
        connection.terminate()
        raise
    await connection.close(timeout=TIMEOUT_S)


async def prepare(dsn: str, event_id: uuid.UUID, *ddl: str) -> int:
    """The event's rows, the lease, and the guards this test drops; returns the epoch."""
    connection = await asyncpg.connect(dsn)
    try:
        epoch = await take_lease(connection, SHARD_ID, "guard-test")
        for statement in ddl:
            await connection.execute(statement)
    finally:
        await connection.close()
    await commit(dsn, epoch, [event_rows_created(event_id)])
    return epoch




def split_brain(dsn: str, *ddl: str, sold: bool) -> tuple[uuid.UUID, list[BaseException | None]]:
    """Two cores hold (and with `sold`, buy) the same seat; both batches go to the writer in turn.
    Returns the event id and what each commit raised (None when it committed)."""
    event_id = uuid.uuid4()

    async def main() -> list[BaseException | None]:
        epoch = await prepare(dsn, event_id, *ddl)
        outcomes: list[BaseException | None] = []
        for user in ("ana", "ben"):
            command = HoldSeats(event_id, user, uuid.uuid4(), (SEAT,))
            shard = core(event_id)
            changes = sell(shard, event_id, user, command) if sold else list(shard.apply(command, BASE_S).changes)
            try:
                await commit(dsn, epoch, changes)
                outcomes.append(None)
            except asyncpg.PostgresError as error:
                outcomes.append(error)
        return outcomes

    return event_id, asyncio.run(main())


def claims_of_seat(dsn: str, event_id: uuid.UUID) -> list[asyncpg.Record]:
    return asyncio.run(fetch(dsn, "SELECT hold_id, state FROM seat_claims WHERE event_id = $1 AND seat_no = $2",
                             event_id, SEAT_NO))


def live_tickets_of_seat(dsn: str, event_id: uuid.UUID) -> list[asyncpg.Record]:
    return asyncio.run(fetch(dsn, """SELECT ticket_id FROM tickets WHERE event_id = $1 AND seat_no = $2
                                     AND status IN ('valid', 'checked_in')""", event_id, SEAT_NO))


# --- one claim per seat --------------------------------------------------------------------------


def test_the_claim_primary_key_refuses_a_second_claim(scratch: str) -> None:
    event_id, outcomes = split_brain(scratch, sold=False)
    assert outcomes[0] is None
    assert isinstance(outcomes[1], asyncpg.UniqueViolationError), outcomes[1]
    assert oversell_guard(outcomes[1]) == "seat_claims_pkey", "the refusal must count as an oversell refused"
    assert len(claims_of_seat(scratch, event_id)) == 1
    holds = asyncio.run(fetch(scratch, "SELECT user_id FROM holds WHERE event_id = $1", event_id))
    assert [row["user_id"] for row in holds] == ["ana"], "the refused batch left rows behind"


def test_negative_control_without_the_claim_primary_key_a_seat_is_held_twice(scratch: str) -> None:
    event_id, outcomes = split_brain(scratch, DROP_CLAIM_KEY, sold=False)
    assert outcomes == [None, None], "without its primary key, nothing else should refuse the claim"
    assert len(claims_of_seat(scratch, event_id)) == 2


# --- one live ticket per seat ------------------------------------------------------------------


def test_a_second_sale_of_a_seat_is_refused_by_the_claim_key(scratch: str) -> None:
    event_id, outcomes = split_brain(scratch, sold=True)
    assert outcomes[0] is None
    assert isinstance(outcomes[1], asyncpg.UniqueViolationError), outcomes[1]
    # The tickets are written before the seat claims, so the live-ticket index may answer first.
    assert oversell_guard(outcomes[1]) in ("seat_claims_pkey", "tickets_one_live_per_seat")
    assert len(live_tickets_of_seat(scratch, event_id)) == 1


def test_without_the_claim_key_the_live_ticket_index_still_refuses_a_second_sale(scratch: str) -> None:
    event_id, outcomes = split_brain(scratch, DROP_CLAIM_KEY, sold=True)
    assert outcomes[0] is None
    assert isinstance(outcomes[1], asyncpg.UniqueViolationError), outcomes[1]
    assert "tickets_one_live_per_seat" in str(outcomes[1])
    assert oversell_guard(outcomes[1]) == "tickets_one_live_per_seat"
    assert len(live_tickets_of_seat(scratch, event_id)) == 1


def test_negative_control_without_both_guards_a_seat_is_sold_twice(scratch: str) -> None:
    event_id, outcomes = split_brain(scratch, DROP_CLAIM_KEY, DROP_LIVE_TICKET_INDEX, sold=True)
    assert outcomes == [None, None], "without its two guards, nothing else should refuse the second sale"
    assert len(live_tickets_of_seat(scratch, event_id)) == 2
    assert [row["state"] for row in claims_of_seat(scratch, event_id)] == ["sold", "sold"]


# --- a pool never above its capacity ----------------------------------------------------------


def drifted_pool_sale(dsn: str, *ddl: str) -> tuple[uuid.UUID, BaseException | None]:
    """A core whose pool is twice the stored capacity (layout drift) sells 9 units of a pool the
    database knows as 5: one batch of three GA purchases of 3."""
    event_id = uuid.uuid4()
    sections = [{**section, "capacity": 2 * POOL_CAPACITY} if section["id"] == POOL else section
                for section in DOCUMENT["sections"]]
    shard = core(event_id, layout_of({**DOCUMENT, "sections": sections}))
    changes = [change for user in ("ana", "ben", "cai")
               for change in sell(shard, event_id, user, HoldGeneralAdmission(event_id, user, uuid.uuid4(), POOL, 3))]

    async def main() -> BaseException | None:
        epoch = await prepare(dsn, event_id, *ddl)
        try:
            await commit(dsn, epoch, changes)
        except asyncpg.PostgresError as error:
            return error
        return None

    return event_id, asyncio.run(main())


def pool_row(dsn: str, event_id: uuid.UUID) -> asyncpg.Record:
    (row,) = asyncio.run(fetch(dsn, "SELECT capacity, held, sold FROM ga_pools WHERE event_id = $1", event_id))
    return row


def drop_pool_check(dsn: str) -> str:
    """The name of the pool's ``held + sold <= capacity`` CHECK, as a DROP statement."""
    (row,) = asyncio.run(fetch(dsn, """SELECT conname FROM pg_constraint WHERE conrelid = 'ga_pools'::regclass
                                       AND contype = 'c' AND pg_get_constraintdef(oid) LIKE '%held + sold%'"""))
    return f'ALTER TABLE ga_pools DROP CONSTRAINT "{row["conname"]}"'


def test_the_pool_check_refuses_counters_above_capacity(scratch: str) -> None:
    event_id, error = drifted_pool_sale(scratch)
    assert isinstance(error, asyncpg.CheckViolationError), error
    assert oversell_guard(error) == "ga_pools_check"
    assert (pool_row(scratch, event_id)["held"], pool_row(scratch, event_id)["sold"]) == (0, 0)
    tickets = asyncio.run(fetch(scratch, "SELECT count(*) AS n FROM tickets WHERE event_id = $1", event_id))
    assert tickets[0]["n"] == 0, "the refused batch left tickets behind"


def test_negative_control_without_the_pool_check_a_pool_is_oversold(scratch: str) -> None:
    event_id, error = drifted_pool_sale(scratch, drop_pool_check(scratch))
    assert error is None, "without its CHECK, nothing else should refuse the oversold pool"
    pool = pool_row(scratch, event_id)
    assert pool["sold"] == 9 > pool["capacity"] == POOL_CAPACITY


# --- existing rows change only from what the batch first saw --------------------------------------
#
# The primary key and the CHECK guard new rows and totals. Existing rows are guarded by the writer:
# a seat claim is released or sold only where it is still the claim the batch first saw, and a
# pool's counters change only from the counters it first saw. The controls switch that guard off
# (the old statements, matching the row by its key alone) and show the database being overwritten.

CLAIM_BY_KEY_ONLY = "c.event_id = u.event_id AND c.seat_no = u.seat_no"
POOL_BY_KEY_ONLY = "true"


def divergent_claim(dsn: str, ending: str) -> tuple[uuid.UUID, uuid.UUID, BaseException | None]:
    """Ana's hold of `SEAT` is committed; then the database diverges from her core — the seat is
    claimed by ben's hold (what another writer, or a lost update, left) — and her core ends the
    hold (`release`) or buys it (`sell`) in the next batch. Returns ben's hold, ana's hold and what
    the second commit raised."""
    event_id, ana, ben = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    shard = core(event_id)

    async def main() -> BaseException | None:
        epoch = await prepare(dsn, event_id)
        await commit(dsn, epoch, list(shard.apply(HoldSeats(event_id, "ana", ana, (SEAT,)), BASE_S).changes))
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(
                """INSERT INTO holds (hold_id, event_id, user_id, kind, seat_nos, quantity, total_cents, status,
                                      expires_at, created_at, updated_at)
                   VALUES ($1, $2, 'ben', 'seats', ARRAY[$3::int], 1, 100, 'held', now() + interval '1 hour',
                           now(), now())""", ben, event_id, SEAT_NO)
            await connection.execute("UPDATE seat_claims SET hold_id = $1 WHERE event_id = $2 AND seat_no = $3",
                                     ben, event_id, SEAT_NO)
        finally:
            await connection.close()
        if ending == "release":
            changes = list(shard.apply(ReleaseHold("ana", ana), BASE_S + 1).changes)
        else:
            changes = list(shard.apply(BeginCheckout("ana", ana), BASE_S + 1).changes)
            changes += shard.apply(ConfirmCheckout("ana", ana, uuid.uuid4(), (uuid.uuid4(),)), BASE_S + 1).changes
        try:
            await commit(dsn, epoch, changes)
        except (Diverged, asyncpg.PostgresError) as error:
            return error
        return None

    error = asyncio.run(main())
    return ben, event_id, error


@pytest.mark.parametrize("ending", ["release", "sell"])
def test_a_seat_claim_that_diverged_from_memory_is_refused(scratch: str, ending: str) -> None:
    ben, event_id, error = divergent_claim(scratch, ending)
    assert isinstance(error, Diverged) and "seat_claims" in str(error), error
    assert oversell_guard(error) is None, "Diverged is fail-stop (a commit failure), not a refused oversell"
    assert [(row["hold_id"], row["state"]) for row in claims_of_seat(scratch, event_id)] == [(ben, "held")]
    orders = asyncio.run(fetch(scratch, "SELECT count(*) AS n FROM orders WHERE event_id = $1", event_id))
    assert orders[0]["n"] == 0, "the refused batch left an order behind"


@pytest.mark.parametrize("ending", ["release", "sell"])
def test_negative_control_without_the_claim_guard_a_divergent_claim_is_overwritten(
        scratch: str, ending: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer, "_CLAIM_AS_FIRST_SEEN", CLAIM_BY_KEY_ONLY)
    ben, event_id, error = divergent_claim(scratch, ending)
    assert error is None, "without the claim guard, nothing else should refuse the batch"
    claims = claims_of_seat(scratch, event_id)
    assert ben not in [row["hold_id"] for row in claims], "ben's live hold kept its claim: nothing was overwritten"
    assert [row["state"] for row in claims] == ([] if ending == "release" else ["sold"])


def pool_split_brain(dsn: str) -> tuple[uuid.UUID, BaseException | None]:
    """Two cores that both own the event (same epoch) each sell 4 units of the 5-unit pool from
    the same counters (0 held, 0 sold); each batch alone is within capacity, so the CHECK passes
    both. Returns the event and what the second commit raised."""
    event_id = uuid.uuid4()
    batches = [sell(core(event_id), event_id, user, HoldGeneralAdmission(event_id, user, uuid.uuid4(), POOL, 4))
               for user in ("ana", "ben")]

    async def main() -> BaseException | None:
        epoch = await prepare(dsn, event_id)
        await commit(dsn, epoch, batches[0])
        try:
            await commit(dsn, epoch, batches[1])
        except (Diverged, asyncpg.PostgresError) as error:
            return error
        return None

    return event_id, asyncio.run(main())


def ga_tickets(dsn: str, event_id: uuid.UUID) -> int:
    rows = asyncio.run(fetch(dsn, """SELECT count(*) AS n FROM tickets WHERE event_id = $1 AND seat_no IS NULL
                                     AND status = 'valid'""", event_id))
    return int(rows[0]["n"])


def test_pool_counters_that_diverged_from_memory_are_refused(scratch: str) -> None:
    event_id, error = pool_split_brain(scratch)
    assert isinstance(error, Diverged) and "ga_pools" in str(error), error
    assert (pool_row(scratch, event_id)["held"], pool_row(scratch, event_id)["sold"]) == (0, 4)
    assert ga_tickets(scratch, event_id) == 4, "the refused batch left tickets behind"


def test_negative_control_without_the_pool_guard_two_writers_overwrite_each_other(
        scratch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bug the guard fixes: 8 tickets stored against a pool that says 4 sold."""
    monkeypatch.setattr(writer, "_POOL_AS_FIRST_SEEN", POOL_BY_KEY_ONLY)
    event_id, error = pool_split_brain(scratch)
    assert error is None, "without the pool guard, nothing else should refuse the second sale"
    assert pool_row(scratch, event_id)["sold"] == 4 and ga_tickets(scratch, event_id) == 8
