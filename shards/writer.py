"""The group-commit writer's SQL: a batch of change records → one fenced transaction.

A batch holds the changes of many commands in the order the actor applied them. Statement order
cannot simply follow record order (that would be one round trip per record), and records cannot
simply be grouped by type either: within one batch a seat may be released by an expiry and then
claimed by another hold, and a hold may be created and pinned. So `plan_batch` (pure) first folds
the records into the *net effect per row*: rows that are new in this batch are inserted in their
final state; rows that existed before are updated from the state the batch first saw to its final
state. Every update is guarded by that prior state (``WHERE status = from_status``; a seat claim by
the hold, state and order the batch first saw; a GA pool by the counters it first saw) and every
new claim is a plain insert (the primary key refuses a double claim), so a database that disagrees
with the actor's memory fails the transaction (`Diverged`) instead of being overwritten. `execute_plan` then
runs a fixed, small number of bulk statements (COPY or ``unnest`` arrays) after the lease check.
The audit log keeps every transition, in order, not just the net effect — of orders, tickets,
check-ins, payments and the event, never of holds (holds are counted by the actor's metrics, not
audited: they were most of the log's rows, and a hold's own row keeps its status and times); see
`shards.audit` for the request context stamped on each row.

The writer runs on a connection of its own (`connect_writer`) whose timestamptz codec takes POSIX
seconds (see `_Timestamps`), so every time in a plan is the change records' own float ``at_s``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from actors.inventory.changes import (
    SYSTEM_ACTOR,
    CheckedIn,
    EventSoldOut,
    EventStatusChanged,
    HoldCreated,
    HoldStatusChanged,
    IdempotencyRecorded,
    OrderCreated,
    OrderStatusChanged,
    PoolCountersChanged,
    SeatsClaimed,
    SeatsReleased,
    SeatsSold,
    SectionPriceChanged,
    TicketsIssued,
    TicketStatusChanged,
)
from actors.wire import interned_pg_uuid
from shards import outbox
from shards.audit import AUDIT_COLUMNS, PRICE_CHANGED_ACTION, AuditRows
from shards.codec import ResultCodec
from shards.event_rows import configure_json, insert_event, update_event
from shards.records import (
    AuditContext,
    EventFieldsChanged,
    EventRowsCreated,
    PaymentRecorded,
    TicketHoldersRecorded,
)

TIMESTAMPS_CACHED_MAX = 4096
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_HELD = "held"
_SOLD = "sold"


# A seat claim as a batch first saw it: (hold_id, state, order_id). The hold is None when a refund
# releases the seat (the core does not keep an order's hold; the unique ``orders.hold_id`` makes
# the order name the claim just as well).
SeatClaim = tuple[UUID | None, str, UUID | None]


class Fenced(Exception):
    """The shard lease moved to a newer epoch: this actor is a zombie and must stop."""


class Diverged(Exception):
    """The database disagrees with the actor's memory (a guarded update matched fewer rows)."""


# The database's own guards against selling a seat or a GA unit twice (shards/sql/002_inventory.sql),
# by the name Postgres reports in a refusal: one claim per seat, one live ticket per seat, a pool's
# held + sold within its capacity. The core applies the same rules before a command reaches the
# writer, so a batch refused by one of them was computed on memory that disagrees with the rows (a
# second writer, a layout changed under the shard, a bug): nothing is sold twice, but it must
# never happen. Poison isolation counts it (`ticketing_actor_oversell_refused_total`) and it pages.
OVERSELL_GUARDS = ("seat_claims_pkey", "tickets_one_live_per_seat", "ga_pools_check")


def oversell_guard(error: BaseException) -> str | None:
    """The guard of `OVERSELL_GUARDS` that refused a write, or None for any other error."""
    if not isinstance(error, asyncpg.IntegrityConstraintViolationError):
        return None
    name = getattr(error, "constraint_name", None)
    return name if name in OVERSELL_GUARDS else None


# --- the writer's connection --------------------------------------------------------------------


class _Timestamps(dict[Any, tuple[int]]):
    """timestamptz parameters in asyncpg's tuple form, ``(microseconds since 2000-01-01 UTC,)``,
    looked up by POSIX seconds.

    asyncpg's own timestamptz encoder costs ~0.65 µs per value (two comparisons with its infinity
    datetimes, ``astimezone``, a timedelta), and a holds row carries three: with the ``int[]`` of a
    GA hold's empty ``seat_nos`` they were most of the 3.2 µs that COPY spent encoding one holds row
    (measured on the shared 2-core box). The writer's connection registers the tuple format with
    this table's C-level ``__getitem__`` as the encoder, so plans carry the change records' float
    ``at_s`` as they are: the commands of one apply call share one ``now_s``, so nearly every
    lookup is a hit. A miss computes exactly what ``datetime.fromtimestamp`` gives (its rounding),
    and a datetime (event rows, written by `shards.event_rows`) is converted without being kept.
    Infinite timestamps are never written by the writer and are not supported.
    """

    def __missing__(self, value: Any) -> tuple[int]:
        if isinstance(value, datetime):
            return ((value.astimezone(UTC) - PG_EPOCH) // _MICROSECOND,)
        encoded = ((datetime.fromtimestamp(value, UTC) - PG_EPOCH) // _MICROSECOND,)
        if len(self) >= TIMESTAMPS_CACHED_MAX:
            self.clear()
        self[value] = encoded
        return encoded


_TIMESTAMPS = _Timestamps()


def _timestamp_from_tuple(value: tuple[int]) -> datetime:
    return PG_EPOCH + timedelta(microseconds=value[0])


async def configure_writer(connection: asyncpg.Connection) -> None:
    """Codecs of the writer's connection: json/jsonb as everywhere, timestamptz from POSIX seconds.

    Only the writer's own connection gets the timestamptz codec: its decoder is Python, and
    recovery reads millions of timestamps through the pool's connections with asyncpg's C one.
    """
    await configure_json(connection)
    await connection.set_type_codec("timestamptz", schema="pg_catalog", format="tuple",
                                    encoder=_TIMESTAMPS.__getitem__, decoder=_timestamp_from_tuple)


async def connect_writer(dsn: str, *, timeout_s: float) -> asyncpg.Connection:
    """A connection for `execute_plan`: every call on it bounded by `timeout_s`."""
    connection = await asyncpg.connect(dsn, timeout=timeout_s, command_timeout=timeout_s)
    try:
        await configure_writer(connection)
    except BaseException:
        connection.terminate()
        raise
    return connection


# --- planning: change records → net effect per row ----------------------------------------------

# New rows are COPY records in the column order below, kept as lists so that a later transition
# in the same batch can set their final status (second to last) and updated_at (last). Rows that
# existed before the batch are updates: ``[id, status the batch first saw, final status, at_s]``.
# Both are keyed by ``id.int``: hashing an int is C, ``UUID.__hash__`` is Python.
HOLD_COLUMNS = ("hold_id", "event_id", "user_id", "kind", "section_id", "seat_nos", "item_prices_cents", "quantity",
                "total_cents", "expires_at", "created_at", "status", "updated_at")
# A hold without seats (GA) leaves ``seat_nos`` to its default '{}': encoding an empty int[] cost
# ~1 µs per row, a third of the row (measured). Its one price is total_cents / quantity, so it
# leaves ``item_prices_cents`` NULL too (migration 008).
POOL_HOLD_COLUMNS = tuple(column for column in HOLD_COLUMNS if column not in ("seat_nos", "item_prices_cents"))
ORDER_COLUMNS = ("order_id", "event_id", "hold_id", "user_id", "total_cents", "currency", "created_at", "status",
                 "updated_at")
TICKET_COLUMNS = ("ticket_id", "event_id", "order_id", "user_id", "seat_no", "section_id", "replaces", "price_cents",
                  "issued_at", "status", "updated_at")


@dataclass
class BatchPlan:
    new_holds: dict[int, list[Any]] = field(default_factory=dict)
    pool_hold_rows: list[list[Any]] = field(default_factory=list)  # the new holds without seats ...
    seat_hold_rows: list[list[Any]] = field(default_factory=list)  # ... and with: the same lists
    new_orders: dict[int, list[Any]] = field(default_factory=dict)
    new_tickets: dict[int, list[Any]] = field(default_factory=dict)
    hold_updates: dict[int, list[Any]] = field(default_factory=dict)
    order_updates: dict[int, list[Any]] = field(default_factory=dict)
    ticket_updates: dict[int, list[Any]] = field(default_factory=dict)
    # (event_id, seat_no) → None when the seat ends the batch free, else (hold_id, state, order_id)
    seats: dict[tuple[UUID, int], tuple[UUID, str, UUID | None] | None] = field(default_factory=dict)
    # The seats whose claim existed before the batch → that claim as the batch first saw it,
    # (hold_id, state, order_id); hold_id is None for a refund's release (the order names it).
    seats_existed: dict[tuple[UUID, int], SeatClaim] = field(default_factory=dict)
    pools: dict[tuple[int, str], PoolCountersChanged] = field(default_factory=dict)  # the last per pool ...
    pools_first: dict[tuple[int, str], PoolCountersChanged] = field(default_factory=dict)  # ... and the first
    event_status: dict[UUID, tuple[str, str, float]] = field(default_factory=dict)
    # (event_id, section_id) → [the price the batch first saw, the last price it set]
    section_prices: dict[tuple[UUID, str], list[int]] = field(default_factory=dict)
    checkins: list[tuple[UUID, UUID, str, float]] = field(default_factory=list)
    idempotency: list[IdempotencyRecorded] = field(default_factory=list)
    new_events: list[EventRowsCreated] = field(default_factory=list)
    event_fields: list[EventFieldsChanged] = field(default_factory=list)
    payments: list[PaymentRecorded] = field(default_factory=list)
    holders: list[TicketHoldersRecorded] = field(default_factory=list)
    audit: AuditRows = field(default_factory=AuditRows)
    # Webhook events caused by the batch (shards/outbox.py), and the payloads of its new orders.
    outbox: list[list[Any]] = field(default_factory=list)
    outbox_orders: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.new_holds or self.new_orders or self.new_tickets or self.hold_updates or self.order_updates
                    or self.ticket_updates or self.seats or self.pools or self.event_status or self.checkins
                    or self.section_prices
                    or self.idempotency or self.new_events or self.event_fields or self.payments or self.holders)


def _transition(new_rows: dict[int, list[Any]], updates: dict[int, list[Any]], key: UUID, from_status: str,
                to_status: str, at_s: float) -> None:
    index = key.int
    row = new_rows.get(index)
    if row is None:
        row = updates.get(index)
        if row is None:
            updates[index] = [key, from_status, to_status, at_s]
            return
    row[-2] = to_status
    row[-1] = at_s


def _fold_seats(plan: BatchPlan, event_id: UUID, seat_nos: Iterable[int],
                state: tuple[UUID, str, UUID | None] | None, first_seen: SeatClaim | None) -> None:
    """`first_seen` is the claim a sale or release expects to find (None for a new claim): kept for
    a seat the batch has not touched yet, as the guard of its UPDATE or DELETE."""
    seats = plan.seats
    for seat_no in seat_nos:
        key = (event_id, seat_no)
        if first_seen is not None and key not in seats:
            plan.seats_existed[key] = first_seen
        seats[key] = state


def plan_batch(changes: Iterable[Any]) -> BatchPlan:  # noqa: C901 — one flat dispatch over record types
    plan = BatchPlan()
    audit = plan.audit
    for change in changes:
        kind = type(change)
        if kind is HoldCreated:
            _fold_hold_created(plan, change)
        elif kind is PoolCountersChanged:
            key = (change.event_id.int, change.section_id)
            if key not in plan.pools:
                plan.pools_first[key] = change
            plan.pools[key] = change
        elif kind is HoldStatusChanged:
            _transition(plan.new_holds, plan.hold_updates, change.hold_id, change.from_status, change.to_status,
                        change.at_s)
        elif kind is SeatsClaimed:
            _fold_seats(plan, change.event_id, change.seat_nos, (change.hold_id, _HELD, None), None)
        elif kind is SeatsSold:
            hold_id = change.hold_id
            _fold_seats(plan, change.event_id, change.seat_nos, (hold_id, _SOLD, change.order_id),
                        (hold_id, _HELD, None))
        elif kind is SeatsReleased:
            order_id = change.order_id
            _fold_seats(plan, change.event_id, change.seat_nos, None,
                        (change.hold_id, _HELD if order_id is None else _SOLD, order_id))
        elif kind is OrderCreated:
            at_s = change.at_s
            plan.new_orders[change.order_id.int] = [
                change.order_id, change.event_id, change.hold_id, change.user_id, change.total_cents, change.currency,
                at_s, "confirmed", at_s]
            audit.append((change.event_id, change.user_id, "order", change.order_id, None, "confirmed", at_s))
            outbox.fold(plan.outbox, plan.outbox_orders, change)
        elif kind is OrderStatusChanged:
            _transition(plan.new_orders, plan.order_updates, change.order_id, change.from_status, change.to_status,
                        change.at_s)
            audit.append((change.event_id, change.actor, "order", change.order_id, change.from_status,
                          change.to_status, change.at_s))
            outbox.fold(plan.outbox, plan.outbox_orders, change)
        elif kind is TicketsIssued:
            _fold_issued(plan, change)
            outbox.fold(plan.outbox, plan.outbox_orders, change)
        elif kind is TicketStatusChanged:
            # A check-in is a `checkins` row beside a `valid` ticket row (shards/loader.py), so a
            # checked-in ticket's row is found as `valid` (an event cancellation voids it).
            stored_from = "valid" if change.from_status == "checked_in" else change.from_status
            _transition(plan.new_tickets, plan.ticket_updates, change.ticket_id, stored_from,
                        change.to_status, change.at_s)
            audit.append((change.event_id, change.actor, "ticket", change.ticket_id, change.from_status,
                          change.to_status, change.at_s))
            outbox.fold(plan.outbox, plan.outbox_orders, change)
        elif kind is CheckedIn:
            plan.checkins.append((change.ticket_id, change.event_id, change.gate, change.at_s))
            audit.add((change.event_id, SYSTEM_ACTOR, "ticket", change.ticket_id, "valid", "checked_in", change.at_s),
                      None, {"gate": change.gate})
            outbox.fold(plan.outbox, plan.outbox_orders, change)
        elif kind is EventStatusChanged:
            first = plan.event_status.get(change.event_id)
            from_status = first[0] if first else change.from_status
            plan.event_status[change.event_id] = (from_status, change.to_status, change.at_s)
            audit.append((change.event_id, change.actor, "event", change.event_id, change.from_status,
                          change.to_status, change.at_s))
            outbox.fold(plan.outbox, plan.outbox_orders, change)
        elif kind is EventSoldOut:
            outbox.fold(plan.outbox, plan.outbox_orders, change)
        elif kind is SectionPriceChanged:
            _fold_price(plan, change)
        elif kind is IdempotencyRecorded:
            plan.idempotency.append(change)
        elif kind is EventRowsCreated:
            plan.new_events.append(change)
            _audit_event_created(audit, change)
        elif kind is EventFieldsChanged:
            plan.event_fields.append(change)
            _audit_event_fields(audit, change)
        elif kind is PaymentRecorded:
            plan.payments.append(change)
            _audit_payment(audit, change)
        elif kind is AuditContext:
            audit.context = change
        elif kind is TicketHoldersRecorded:
            plan.holders.append(change)
        else:
            raise TypeError(f"the writer does not know change record {kind.__name__}")
    return plan


def _fold_hold_created(plan: BatchPlan, change: HoldCreated) -> None:
    event_id, hold_id, user_id, kind, section_id, seat_nos, quantity, total_cents, expires_at_s, at_s, prices = change
    event_id = interned_pg_uuid(event_id.int)
    if seat_nos:
        row = [hold_id, event_id, user_id, kind, section_id, list(seat_nos), None if prices is None else list(prices),
               quantity, total_cents, expires_at_s, at_s, _HELD, at_s]
        plan.seat_hold_rows.append(row)
    else:
        row = [hold_id, event_id, user_id, kind, section_id, quantity, total_cents, expires_at_s, at_s, _HELD, at_s]
        plan.pool_hold_rows.append(row)
    plan.new_holds[hold_id.int] = row


def _audit_event_created(audit: AuditRows, change: EventRowsCreated) -> None:
    event = change.event
    audit.add((event["event_id"], event["organizer_id"], "event", event["event_id"], None, event["status"],
               event["created_at"].timestamp()), "event.created",
              {"title": event["title"], "sections": [section["section_id"] for section in change.sections]})


def _fold_price(plan: BatchPlan, change: SectionPriceChanged) -> None:
    """The section's net price change (guarded by the first price seen), and every step audited."""
    key = (change.event_id, change.section_id)
    prices = plan.section_prices.get(key)
    if prices is None:
        plan.section_prices[key] = [change.from_cents, change.to_cents]
    else:
        prices[1] = change.to_cents
    plan.audit.add((change.event_id, change.actor, "event", change.event_id, str(change.from_cents),
                    str(change.to_cents), change.at_s), PRICE_CHANGED_ACTION,
                   {"section": change.section_id, "from_cents": change.from_cents, "to_cents": change.to_cents})


def _audit_event_fields(audit: AuditRows, change: EventFieldsChanged) -> None:
    audit.add((change.event_id, SYSTEM_ACTOR, "event", change.event_id, None, "updated", change.at_s),
              "event.updated",
              {"fields": sorted(change.fields), "from": change.before, "to": change.fields})


def _audit_payment(audit: AuditRows, change: PaymentRecorded) -> None:
    """A payment row's report (charge or refund, pending → succeeded …): the upsert does not read the
    row's previous status, so ``from`` is left empty; the sequence of rows is its history."""
    audit.add((change.event_id, SYSTEM_ACTOR, "payment", change.payment_id, None, change.status, change.at_s),
              f"{change.kind}.{change.status}",
              {"kind": change.kind, "amount_cents": change.amount_cents, "currency": change.currency,
               "order_id": None if change.order_id is None else str(change.order_id)})


def _fold_issued(plan: BatchPlan, change: TicketsIssued) -> None:
    at_s = change.at_s
    actor = change.user_id or SYSTEM_ACTOR
    # Records from before tickets kept their price carry none: the column stays NULL (the section's).
    prices = change.prices_cents or (None,) * len(change.ticket_ids)
    for ticket_id, seat_no, section_id, price_cents in zip(change.ticket_ids, change.seat_nos, change.section_ids,
                                                           prices, strict=True):
        plan.new_tickets[ticket_id.int] = [
            ticket_id, change.event_id, change.order_id, change.user_id, seat_no, section_id, change.replaces,
            price_cents, at_s, "valid", at_s]
        plan.audit.append((change.event_id, actor, "ticket", ticket_id, None, "valid", at_s))


# --- executing: one statement per table and kind of change --------------------------------------


async def write_batch(connection: asyncpg.Connection, plan: BatchPlan, codec: ResultCodec, *, shard_id: int,
                      epoch: int | None) -> None:
    """One transaction on a `connect_writer` connection: BEGIN, the lease check first thing (unless
    `epoch` is None: the fencing negative control only), the plan, COMMIT.

    On any exception the transaction is left open: the caller must discard the connection
    (terminating it rolls back), as the actor does with every connection whose commit failed.
    """
    if epoch is None:
        await connection.execute("BEGIN")
    else:
        await check_lease(connection, shard_id, epoch, begin=True)
    await execute_plan(connection, plan, codec)
    status = await connection.execute("COMMIT")
    if status != "COMMIT":
        raise RuntimeError(f"COMMIT answered {status!r}")


async def check_lease(connection: asyncpg.Connection, shard_id: int, epoch: int, *, begin: bool = False) -> None:
    """Inside the batch's transaction: refuse to write unless our epoch still holds the lease.

    ``FOR SHARE`` makes a newer actor's lease increment wait for this transaction, so a batch
    that passed the check cannot interleave with a takeover (and a check that waited for one
    sees the new epoch, matches no row and fails). With `begin`, ``BEGIN`` and the check travel
    as one simple-query message: one round trip less per commit (~70 µs of the actor's CPU on
    the 2-core box, measured per asyncpg statement). Both numbers are ints, never text.
    """
    check = f"SELECT 1 FROM shard_lease WHERE shard_id = {int(shard_id)} AND epoch = {int(epoch)} FOR SHARE"
    status = await connection.execute(f"BEGIN; {check}" if begin else check)
    if status != "SELECT 1":
        current = await connection.fetchval("SELECT epoch FROM shard_lease WHERE shard_id = $1", shard_id)
        raise Fenced(f"shard {shard_id} lease is at epoch {current}, this actor holds {epoch}")


async def execute_plan(connection: asyncpg.Connection, plan: BatchPlan, codec: ResultCodec) -> None:
    """Run the plan's statements on a `connect_writer` connection (its times are POSIX seconds);
    the caller owns the transaction and has checked the lease (see `write_batch`)."""
    for created in plan.new_events:
        await insert_event(connection, created.event, created.sections)
    # Rows that existed before the batch change first: a transfer voids a seat's live ticket in the
    # batch that issues its replacement, and the unique index on live tickets per seat checks every
    # row as it is written, so inserting the replacement first failed the batch. Updates never
    # depend on rows new in the batch (those carry their final state), so nothing needs them after.
    await _update_existing(connection, "holds", "hold_id", plan.hold_updates)
    await _update_existing(connection, "orders", "order_id", plan.order_updates)
    await _update_existing(connection, "tickets", "ticket_id", plan.ticket_updates)
    await _insert_new(connection, plan)
    await _write_seats(connection, plan)
    if plan.pools:
        await _write_pools(connection, plan)
    for event_id, (from_status, to_status, at_s) in plan.event_status.items():
        status = await connection.execute(
            "UPDATE events SET status = $2, updated_at = $4 WHERE event_id = $1 AND status = $3",
            event_id, to_status, from_status, at_s)
        _expect(status, 1, "events")
    if plan.section_prices:
        await _write_prices(connection, plan)
    if plan.checkins:
        await connection.copy_records_to_table(
            "checkins", records=plan.checkins, columns=("ticket_id", "event_id", "gate", "checked_in_at"))
    if plan.idempotency:
        await connection.copy_records_to_table(
            "idempotency_keys",
            records=[(r.user_id, r.key, r.fingerprint, codec.encode(r.result), r.at_s, r.slot)
                     for r in plan.idempotency],
            columns=("user_id", "key", "fingerprint", "result", "created_at", "slot"))
    for changed in plan.event_fields:
        await update_event(connection, changed.event_id, changed.fields)
    if plan.payments:
        await connection.executemany(
            """INSERT INTO payments (payment_id, event_id, hold_id, order_id, user_id, kind, gateway, gateway_ref,
                                     idempotency_key, amount_cents, currency, status, created_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)
               ON CONFLICT (gateway, idempotency_key) DO UPDATE
               SET status = EXCLUDED.status, gateway_ref = coalesce(EXCLUDED.gateway_ref, payments.gateway_ref),
                   order_id = coalesce(EXCLUDED.order_id, payments.order_id), updated_at = EXCLUDED.updated_at""",
            [tuple(payment) for payment in plan.payments])
    for recorded in plan.holders:
        await connection.execute(
            """UPDATE tickets t SET holder_name = u.name, holder_email = u.email
               FROM unnest($1::uuid[], $2::text[], $3::text[]) AS u(ticket_id, name, email)
               WHERE t.ticket_id = u.ticket_id""",
            list(recorded.ticket_ids), list(recorded.names), list(recorded.emails))
    if plan.audit:
        await connection.copy_records_to_table("audit_log", records=plan.audit, columns=AUDIT_COLUMNS)
    if plan.outbox:
        await outbox.write(connection, plan.outbox)


async def _write_prices(connection: asyncpg.Connection, plan: BatchPlan) -> None:
    """Dynamic sections' prices, each guarded by the price the batch first saw (`Diverged` otherwise);
    the table's CHECK refuses a price outside the section's bounds."""
    keys = list(plan.section_prices)
    status = await connection.execute(
        """UPDATE sections s SET price_cents = u.to_cents
           FROM unnest($1::uuid[], $2::text[], $3::int[], $4::int[]) AS u(event_id, section_id, from_cents, to_cents)
           WHERE s.event_id = u.event_id AND s.section_id = u.section_id AND s.price_cents = u.from_cents
             AND s.pricing_mode = 'dynamic'""",
        [key[0] for key in keys], [key[1] for key in keys], [plan.section_prices[key][0] for key in keys],
        [plan.section_prices[key][1] for key in keys])
    _expect(status, len(keys), "sections")


async def _insert_new(connection: asyncpg.Connection, plan: BatchPlan) -> None:
    """COPY the rows that are new in this batch, parents before children (holds, orders, tickets)."""
    if plan.pool_hold_rows:
        await connection.copy_records_to_table("holds", records=plan.pool_hold_rows, columns=POOL_HOLD_COLUMNS)
    if plan.seat_hold_rows:
        await connection.copy_records_to_table("holds", records=plan.seat_hold_rows, columns=HOLD_COLUMNS)
    if plan.new_orders:
        await connection.copy_records_to_table("orders", records=list(plan.new_orders.values()), columns=ORDER_COLUMNS)
    if plan.new_tickets:
        await connection.copy_records_to_table("tickets", records=list(plan.new_tickets.values()),
                                               columns=TICKET_COLUMNS)


async def _update_existing(connection: asyncpg.Connection, table: str, key_column: str,
                           updates: dict[int, list[Any]]) -> None:
    if not updates:
        return
    rows = list(updates.values())
    status = await connection.execute(
        f"""UPDATE {table} t SET status = u.status, updated_at = u.updated_at
            FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])
                 AS u(key, first_status, status, updated_at)
            WHERE t.{key_column} = u.key AND t.status = u.first_status""",
        [row[0] for row in rows], [row[1] for row in rows], [row[2] for row in rows], [row[3] for row in rows])
    _expect(status, len(rows), table)


# A claim matches what the batch first saw: same state and order, and the same hold unless the
# batch saw none (a refund's release names the order only).
_CLAIM_AS_FIRST_SEEN = """c.event_id = u.event_id AND c.seat_no = u.seat_no AND c.state = u.first_state
               AND c.hold_id = coalesce(u.first_hold_id, c.hold_id)
               AND c.order_id IS NOT DISTINCT FROM u.first_order_id"""


async def _write_seats(connection: asyncpg.Connection, plan: BatchPlan) -> None:
    """Existing claims are deleted (released) or updated (sold, or taken by another hold) only where
    they still are what the batch first saw, so a claim the database holds differently (another
    writer's, or one memory lost track of) fails the batch with `Diverged`; new claims are
    inserted, and the primary key refuses a seat claimed twice."""
    existed, seats = plan.seats_existed, plan.seats
    freed = [key for key in existed if seats[key] is None]
    changed = [key for key in existed if seats[key] is not None]
    claimed = [key for key, state in seats.items() if state is not None and key not in existed]
    if freed:
        first = [existed[key] for key in freed]
        status = await connection.execute(
            f"""DELETE FROM seat_claims c
                USING unnest($1::uuid[], $2::int[], $3::uuid[], $4::text[], $5::uuid[])
                      AS u(event_id, seat_no, first_hold_id, first_state, first_order_id)
                WHERE {_CLAIM_AS_FIRST_SEEN}""",
            [key[0] for key in freed], [key[1] for key in freed], [f[0] for f in first], [f[1] for f in first],
            [f[2] for f in first])
        _expect(status, len(freed), "seat_claims (release)")
    if changed:
        first = [existed[key] for key in changed]
        states = [state for key in changed if (state := seats[key]) is not None]
        status = await connection.execute(
            f"""UPDATE seat_claims c SET hold_id = u.hold_id, state = u.state, order_id = u.order_id
                FROM unnest($1::uuid[], $2::int[], $3::uuid[], $4::text[], $5::uuid[], $6::uuid[], $7::text[],
                            $8::uuid[])
                     AS u(event_id, seat_no, first_hold_id, first_state, first_order_id, hold_id, state, order_id)
                WHERE {_CLAIM_AS_FIRST_SEEN}""",
            [key[0] for key in changed], [key[1] for key in changed], [f[0] for f in first], [f[1] for f in first],
            [f[2] for f in first], [s[0] for s in states], [s[1] for s in states], [s[2] for s in states])
        _expect(status, len(changed), "seat_claims (sell)")
    if claimed:
        await connection.copy_records_to_table(
            "seat_claims", columns=("event_id", "seat_no", "hold_id", "state", "order_id"),
            records=[(key[0], key[1], *state) for key in claimed if (state := plan.seats[key]) is not None])


_POOL_AS_FIRST_SEEN = "p.held = u.held_before AND p.sold = u.sold_before"


async def _write_pools(connection: asyncpg.Connection, plan: BatchPlan) -> None:
    """Each pool's last counters, where the pool still has the counters the batch first saw: two
    writers that both sold from the same counters each stay within capacity, so only this guard
    (not the CHECK) stops the second from overwriting the first's sales."""
    counters = list(plan.pools.values())
    first = [plan.pools_first[key] for key in plan.pools]
    status = await connection.execute(
        f"""UPDATE ga_pools p SET held = u.held, sold = u.sold
           FROM unnest($1::uuid[], $2::text[], $3::int[], $4::int[], $5::int[], $6::int[])
                AS u(event_id, section_id, held, sold, held_before, sold_before)
           WHERE p.event_id = u.event_id AND p.section_id = u.section_id AND {_POOL_AS_FIRST_SEEN}""",
        [c.event_id for c in counters], [c.section_id for c in counters], [c.held for c in counters],
        [c.sold for c in counters], [f.held_before for f in first], [f.sold_before for f in first])
    _expect(status, len(counters), "ga_pools")


def _expect(status: str, expected: int, what: str) -> None:
    affected = int(status.rsplit(" ", 1)[-1])
    if affected != expected:
        raise Diverged(f"{what}: {affected} rows matched, {expected} expected")


# --- poison isolation: which command's rows does Postgres refuse? -------------------------------


async def probe_commands(connection: asyncpg.Connection, change_groups: list[tuple[Any, ...]], codec: ResultCodec,
                         *, shard_id: int, epoch: int | None) -> list[BaseException | None]:
    """Write each command's changes in turn, each under its own SAVEPOINT, inside one transaction
    that is always rolled back: the error each group met, or None. Nothing is ever committed.

    Groups run in apply order on top of the ones before them that succeeded, so a command that
    depends on an earlier one in the batch (a hold created, then released) sees its rows. A group
    that fails only because it depended on a refused one reports that failure too; the caller
    decides which failures convict a command (`actors.committer.is_data_error`).
    """
    failures: list[BaseException | None] = []
    if epoch is None:
        await connection.execute("BEGIN")
    else:
        await check_lease(connection, shard_id, epoch, begin=True)
    try:
        for changes in change_groups:
            if not changes:
                failures.append(None)
                continue
            await connection.execute("SAVEPOINT probe")
            try:
                await execute_plan(connection, plan_batch(changes), codec)
            except (asyncpg.PostgresError, asyncpg.DataError, Diverged, UnicodeError, OverflowError,
                    ValueError, TypeError) as error:
                await connection.execute("ROLLBACK TO SAVEPOINT probe")
                failures.append(error)
            else:
                await connection.execute("RELEASE SAVEPOINT probe")
                failures.append(None)
    finally:
        if not connection.is_closed():
            await connection.execute("ROLLBACK")
    return failures
