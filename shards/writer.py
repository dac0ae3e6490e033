"""The group-commit writer's SQL: a batch of change records → one fenced transaction.

A batch holds the changes of many commands in the order the actor applied them. Statement order
cannot simply follow record order (that would be one round trip per record), and records cannot
simply be grouped by type either: within one batch a seat may be released by an expiry and then
claimed by another hold, and a hold may be created and pinned. So `plan_batch` (pure) first folds
the records into the *net effect per row*: rows that are new in this batch are inserted in their
final state; rows that existed before are updated from the state the batch first saw to its final
state. Every update is guarded by that prior state (``WHERE status = from_status``) and every new
claim is a plain insert (the primary key refuses a double claim), so a database that disagrees
with the actor's memory fails the transaction instead of being overwritten. `execute_plan` then
runs a fixed, small number of bulk statements (COPY or ``unnest`` arrays) after the lease check.
The audit log keeps every transition, in order, not just the net effect.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg

from actors.inventory.changes import (
    SYSTEM_ACTOR,
    CheckedIn,
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
    TicketsIssued,
    TicketStatusChanged,
)
from shards.codec import ResultCodec
from shards.events import insert_event, update_event

TIMESTAMPS_CACHED_MAX = 4096


class EventRowsCreated(NamedTuple):
    """A new event's rows (see `shards.events`); written first in its batch."""

    event: dict[str, Any]
    sections: list[dict[str, Any]]


class EventFieldsChanged(NamedTuple):
    """Organizer changes to an event's queue settings or sale windows."""

    event_id: UUID
    fields: dict[str, Any]


class PaymentRecorded(NamedTuple):
    """Upsert a `payments` row by (gateway, idempotency_key): the gateway is the source of truth
    for money, so a later report (refund succeeded, outcome resolved) overwrites the earlier one."""

    payment_id: UUID
    event_id: UUID
    hold_id: UUID
    order_id: UUID | None
    user_id: str
    kind: str
    gateway: str
    gateway_ref: str | None
    idempotency_key: str
    amount_cents: int
    currency: str
    status: str
    at_s: float


class TicketHoldersRecorded(NamedTuple):
    ticket_ids: tuple[UUID, ...]
    names: tuple[str, ...]
    emails: tuple[str, ...]


class Fenced(Exception):
    """The shard lease moved to a newer epoch: this actor is a zombie and must stop."""


class Diverged(Exception):
    """The database disagrees with the actor's memory (a guarded update matched fewer rows)."""


@functools.lru_cache(maxsize=TIMESTAMPS_CACHED_MAX)
def timestamp(at_s: float) -> datetime:
    # Every command of one apply call shares its `now_s`, so a batch repeats a few timestamps
    # thousands of times; building a datetime per row was 2.5% of the actor's time (measured).
    return datetime.fromtimestamp(at_s, UTC)


@dataclass
class _Row:
    """A row touched by the batch: `existed` rows get guarded updates, new rows an insert."""

    existed: bool
    first_status: str | None
    values: dict[str, Any]


@dataclass
class BatchPlan:
    holds: dict[UUID, _Row] = field(default_factory=dict)
    orders: dict[UUID, _Row] = field(default_factory=dict)
    tickets: dict[UUID, _Row] = field(default_factory=dict)
    # (event_id, seat_no) → None when the seat ends the batch free, else (hold_id, state, order_id)
    seats: dict[tuple[UUID, int], tuple[UUID, str, UUID | None] | None] = field(default_factory=dict)
    seats_existed: set[tuple[UUID, int]] = field(default_factory=set)
    pools: dict[tuple[UUID, str], tuple[int, int]] = field(default_factory=dict)
    event_status: dict[UUID, tuple[str, str, float]] = field(default_factory=dict)
    checkins: list[tuple[UUID, UUID, str, datetime]] = field(default_factory=list)
    idempotency: list[IdempotencyRecorded] = field(default_factory=list)
    new_events: list[EventRowsCreated] = field(default_factory=list)
    event_fields: list[EventFieldsChanged] = field(default_factory=list)
    payments: list[PaymentRecorded] = field(default_factory=list)
    holders: list[TicketHoldersRecorded] = field(default_factory=list)
    audit: list[tuple[UUID, str, str, UUID, str | None, str, datetime]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.holds or self.orders or self.tickets or self.seats or self.pools or self.event_status
                    or self.checkins or self.idempotency or self.new_events or self.event_fields
                    or self.payments or self.holders)


def _transition(rows: dict[UUID, _Row], key: UUID, from_status: str, to_status: str, at_s: float) -> None:
    row = rows.get(key)
    if row is None:
        rows[key] = _Row(True, from_status, {"status": to_status, "updated_at": timestamp(at_s)})
    else:
        row.values["status"] = to_status
        row.values["updated_at"] = timestamp(at_s)


def _fold_seats(plan: BatchPlan, event_id: UUID, seat_nos: Iterable[int],
                state: tuple[UUID, str, UUID | None] | None, claim: bool) -> None:
    for seat_no in seat_nos:
        key = (event_id, seat_no)
        if key not in plan.seats and not claim:
            plan.seats_existed.add(key)
        plan.seats[key] = state


def plan_batch(changes: Iterable[Any]) -> BatchPlan:  # noqa: C901 — one flat dispatch over record types
    plan = BatchPlan()
    for change in changes:
        kind = type(change)
        if kind is HoldCreated:
            at = timestamp(change.at_s)
            plan.holds[change.hold_id] = _Row(False, None, {
                "event_id": change.event_id, "user_id": change.user_id, "kind": change.kind,
                "section_id": change.section_id, "seat_nos": list(change.seat_nos), "quantity": change.quantity,
                "total_cents": change.total_cents, "status": "held", "expires_at": timestamp(change.expires_at_s),
                "created_at": at, "updated_at": at})
            plan.audit.append((change.event_id, change.user_id, "hold", change.hold_id, None, "held", at))
        elif kind is HoldStatusChanged:
            _transition(plan.holds, change.hold_id, change.from_status, change.to_status, change.at_s)
            plan.audit.append((change.event_id, change.actor, "hold", change.hold_id, change.from_status,
                               change.to_status, timestamp(change.at_s)))
        elif kind is SeatsClaimed:
            _fold_seats(plan, change.event_id, change.seat_nos, (change.hold_id, "held", None), claim=True)
        elif kind is SeatsSold:
            _fold_seats(plan, change.event_id, change.seat_nos, (change.hold_id, "sold", change.order_id), claim=False)
        elif kind is SeatsReleased:
            _fold_seats(plan, change.event_id, change.seat_nos, None, claim=False)
        elif kind is PoolCountersChanged:
            plan.pools[(change.event_id, change.section_id)] = (change.held, change.sold)
        elif kind is OrderCreated:
            at = timestamp(change.at_s)
            plan.orders[change.order_id] = _Row(False, None, {
                "event_id": change.event_id, "hold_id": change.hold_id, "user_id": change.user_id,
                "total_cents": change.total_cents, "currency": change.currency, "status": "confirmed",
                "created_at": at, "updated_at": at})
            plan.audit.append((change.event_id, change.user_id, "order", change.order_id, None, "confirmed", at))
        elif kind is OrderStatusChanged:
            _transition(plan.orders, change.order_id, change.from_status, change.to_status, change.at_s)
            plan.audit.append((change.event_id, change.actor, "order", change.order_id, change.from_status,
                               change.to_status, timestamp(change.at_s)))
        elif kind is TicketsIssued:
            _fold_issued(plan, change)
        elif kind is TicketStatusChanged:
            _transition(plan.tickets, change.ticket_id, change.from_status, change.to_status, change.at_s)
            plan.audit.append((change.event_id, change.actor, "ticket", change.ticket_id, change.from_status,
                               change.to_status, timestamp(change.at_s)))
        elif kind is CheckedIn:
            plan.checkins.append((change.ticket_id, change.event_id, change.gate, timestamp(change.at_s)))
        elif kind is EventStatusChanged:
            first = plan.event_status.get(change.event_id)
            from_status = first[0] if first else change.from_status
            plan.event_status[change.event_id] = (from_status, change.to_status, change.at_s)
            plan.audit.append((change.event_id, change.actor, "event", change.event_id, change.from_status,
                               change.to_status, timestamp(change.at_s)))
        elif kind is IdempotencyRecorded:
            plan.idempotency.append(change)
        elif kind is EventRowsCreated:
            plan.new_events.append(change)
        elif kind is EventFieldsChanged:
            plan.event_fields.append(change)
        elif kind is PaymentRecorded:
            plan.payments.append(change)
        elif kind is TicketHoldersRecorded:
            plan.holders.append(change)
        else:
            raise TypeError(f"the writer does not know change record {kind.__name__}")
    return plan


def _fold_issued(plan: BatchPlan, change: TicketsIssued) -> None:
    at = timestamp(change.at_s)
    for ticket_id, seat_no, section_id in zip(change.ticket_ids, change.seat_nos, change.section_ids, strict=True):
        plan.tickets[ticket_id] = _Row(False, None, {
            "event_id": change.event_id, "order_id": change.order_id, "user_id": change.user_id,
            "seat_no": seat_no, "section_id": section_id, "status": "valid", "replaces": change.replaces,
            "issued_at": at, "updated_at": at})
        plan.audit.append((change.event_id, change.user_id or SYSTEM_ACTOR, "ticket", ticket_id, None, "valid", at))


HOLD_COLUMNS = ("hold_id", "event_id", "user_id", "kind", "section_id", "seat_nos", "quantity", "total_cents",
                "status", "expires_at", "created_at", "updated_at")
ORDER_COLUMNS = ("order_id", "event_id", "hold_id", "user_id", "total_cents", "currency", "status",
                 "created_at", "updated_at")
TICKET_COLUMNS = ("ticket_id", "event_id", "order_id", "user_id", "seat_no", "section_id", "status", "replaces",
                  "issued_at", "updated_at")


async def check_lease(connection: asyncpg.Connection, shard_id: int, epoch: int) -> None:
    """Inside the batch's transaction: refuse to write unless our epoch still holds the lease.

    ``FOR SHARE`` makes a newer actor's lease increment wait for this transaction, so a batch
    that passed the check cannot interleave with a takeover.
    """
    current = await connection.fetchval("SELECT epoch FROM shard_lease WHERE shard_id = $1 FOR SHARE", shard_id)
    if current != epoch:
        raise Fenced(f"shard {shard_id} lease is at epoch {current}, this actor holds {epoch}")


async def execute_plan(connection: asyncpg.Connection, plan: BatchPlan, codec: ResultCodec) -> None:
    """Run the plan's statements; the caller owns the transaction and has checked the lease."""
    for created in plan.new_events:
        await insert_event(connection, created.event, created.sections)
    await _insert_new(connection, "holds", HOLD_COLUMNS, plan.holds)
    await _insert_new(connection, "orders", ORDER_COLUMNS, plan.orders)
    await _insert_new(connection, "tickets", TICKET_COLUMNS, plan.tickets)
    await _update_existing(connection, "holds", "hold_id", plan.holds)
    await _update_existing(connection, "orders", "order_id", plan.orders)
    await _update_existing(connection, "tickets", "ticket_id", plan.tickets)
    await _write_seats(connection, plan)
    if plan.pools:
        keys = list(plan.pools)
        status = await connection.execute(
            """UPDATE ga_pools p SET held = u.held, sold = u.sold
               FROM unnest($1::uuid[], $2::text[], $3::int[], $4::int[]) AS u(event_id, section_id, held, sold)
               WHERE p.event_id = u.event_id AND p.section_id = u.section_id""",
            [k[0] for k in keys], [k[1] for k in keys], [plan.pools[k][0] for k in keys],
            [plan.pools[k][1] for k in keys])
        _expect(status, len(keys), "ga_pools")
    for event_id, (from_status, to_status, at_s) in plan.event_status.items():
        status = await connection.execute(
            "UPDATE events SET status = $2, updated_at = $4 WHERE event_id = $1 AND status = $3",
            event_id, to_status, from_status, timestamp(at_s))
        _expect(status, 1, "events")
    if plan.checkins:
        await connection.copy_records_to_table(
            "checkins", records=plan.checkins, columns=("ticket_id", "event_id", "gate", "checked_in_at"))
    if plan.idempotency:
        await connection.copy_records_to_table(
            "idempotency_keys",
            records=[(r.user_id, r.key, r.fingerprint, codec.encode(r.result), timestamp(r.at_s))
                     for r in plan.idempotency],
            columns=("user_id", "key", "fingerprint", "result", "created_at"))
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
            [(*p[:12], timestamp(p.at_s)) for p in plan.payments])
    for recorded in plan.holders:
        await connection.execute(
            """UPDATE tickets t SET holder_name = u.name, holder_email = u.email
               FROM unnest($1::uuid[], $2::text[], $3::text[]) AS u(ticket_id, name, email)
               WHERE t.ticket_id = u.ticket_id""",
            list(recorded.ticket_ids), list(recorded.names), list(recorded.emails))
    if plan.audit:
        await connection.copy_records_to_table(
            "audit_log", records=plan.audit,
            columns=("event_id", "actor", "entity", "entity_id", "from_status", "to_status", "at"))


async def _insert_new(connection: asyncpg.Connection, table: str, columns: tuple[str, ...],
                      rows: dict[UUID, _Row]) -> None:
    records = [(key, *(row.values[column] for column in columns[1:])) for key, row in rows.items() if not row.existed]
    if records:
        await connection.copy_records_to_table(table, records=records, columns=columns)


async def _update_existing(connection: asyncpg.Connection, table: str, key_column: str,
                           rows: dict[UUID, _Row]) -> None:
    existing = [(key, row) for key, row in rows.items() if row.existed]
    if not existing:
        return
    status = await connection.execute(
        f"""UPDATE {table} t SET status = u.status, updated_at = u.updated_at
            FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])
                 AS u(key, first_status, status, updated_at)
            WHERE t.{key_column} = u.key AND t.status = u.first_status""",
        [key for key, _ in existing], [row.first_status for _, row in existing],
        [row.values["status"] for _, row in existing], [row.values["updated_at"] for _, row in existing])
    _expect(status, len(existing), table)


async def _write_seats(connection: asyncpg.Connection, plan: BatchPlan) -> None:
    freed = [key for key in plan.seats_existed if plan.seats[key] is None]
    changed = [key for key in plan.seats_existed if plan.seats[key] is not None]
    claimed = [key for key, state in plan.seats.items() if state is not None and key not in plan.seats_existed]
    if freed:
        status = await connection.execute(
            """DELETE FROM seat_claims c USING unnest($1::uuid[], $2::int[]) AS u(event_id, seat_no)
               WHERE c.event_id = u.event_id AND c.seat_no = u.seat_no""",
            [key[0] for key in freed], [key[1] for key in freed])
        _expect(status, len(freed), "seat_claims (release)")
    if changed:
        states = [plan.seats[key] for key in changed]
        status = await connection.execute(
            """UPDATE seat_claims c SET hold_id = u.hold_id, state = u.state, order_id = u.order_id
               FROM unnest($1::uuid[], $2::int[], $3::uuid[], $4::text[], $5::uuid[])
                    AS u(event_id, seat_no, hold_id, state, order_id)
               WHERE c.event_id = u.event_id AND c.seat_no = u.seat_no""",
            [key[0] for key in changed], [key[1] for key in changed], [s[0] for s in states if s],
            [s[1] for s in states if s], [s[2] for s in states if s])
        _expect(status, len(changed), "seat_claims (sell)")
    if claimed:
        await connection.copy_records_to_table(
            "seat_claims", columns=("event_id", "seat_no", "hold_id", "state", "order_id"),
            records=[(key[0], key[1], *state) for key in claimed if (state := plan.seats[key]) is not None])


def _expect(status: str, expected: int, what: str) -> None:
    affected = int(status.rsplit(" ", 1)[-1])
    if affected != expected:
        raise Diverged(f"{what}: {affected} rows matched, {expected} expected")
