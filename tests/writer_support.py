"""What the writer tests share: random command sequences run on the core, cut into batches, and
two independent readings of what the writer must store.

* `steps()` is a Hypothesis strategy of small instructions (hold, pin, buy, release, refund,
  transfer, check in, let time pass, pause the sale, *flush*); `run_steps` applies them to a real
  `ShardInventory` and returns the change records cut into batches wherever a *flush* falls, as the
  group committer would cut them. Instructions name holds, orders and tickets by position, so
  every sequence is valid and most commands do something.
* `TableModel` executes `BatchPlan`s on plain dicts with the semantics of `execute_plan`'s SQL:
  updates are guarded by the status the batch first saw, new rows are inserts that a primary key
  refuses, seat releases and sales must find their claim as the batch first saw it, pool counters
  must be those the batch first saw and obey the `CHECK`s, the live-ticket index allows one live
  ticket per seat, and every statement runs in the writer's order (updates of existing rows, then
  inserts, then seats, then pools ...). It is what the unit
  tests compare with the reference; the integration test compares real Postgres rows instead.
* `projected_rows` reads `RowsProjection` (the core's executable spec of the rows) in the same
  normalised shape as `TableModel.rows` and `stored_rows` (Postgres), and `expected_audit` lists
  every transition the change records describe, in order: the audit log must keep each of them,
  not only the net effect that the row tables keep.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import count
from typing import Any

import asyncpg
from hypothesis import strategies as st

from actors.event_bodies import event_row, layout_of, section_rows, settings_of
from actors.inventory.changes import (
    CheckedIn,
    OrderCreated,
    OrderStatusChanged,
    TicketsIssued,
    TicketStatusChanged,
)
from actors.inventory.commands import (
    BeginCheckout,
    ChangeEventStatus,
    CheckIn,
    ConfirmCheckout,
    FailCheckout,
    HoldBestAvailable,
    HoldGeneralAdmission,
    HoldSeats,
    RefundOrder,
    ReleaseHold,
    TransferTicket,
)
from actors.inventory.core import ShardInventory
from actors.inventory.results import HoldView, OrderView, TransferView
from actors.inventory.sales import EventStatus
from shards.records import EventRowsCreated
from shards.slots import slot_of
from shards.writer import (
    AUDIT_COLUMNS,
    HOLD_COLUMNS,
    ORDER_COLUMNS,
    POOL_HOLD_COLUMNS,
    TICKET_COLUMNS,
    BatchPlan,
    Diverged,
)
from tests.core_limits import core_limits
from tests.replay import RowsProjection

USERS = ("ana", "ben", "cai", "dee")
GATES = ("north", "south")
KEYS = ("k1", "k2")
HOLD_SECONDS = 10
POOL, POOL_CAPACITY = "floor", 5
# Times are whole multiples of 1/4 s after a recent instant, so timestamptz (microseconds) and
# float8 seconds represent them exactly and the rows compare with ==.
BASE_S = 1_800_000_000.0
DOCUMENT: dict[str, Any] = {
    "title": "writer test", "category": "", "description": "", "venue": {"name": "v"},
    "starts_at": "2027-01-01T20:00:00Z", "ends_at": None, "currency": "EUR", "hold_seconds": HOLD_SECONDS,
    "per_person_limit": 6, "queue": {}, "sale_windows": [], "status": "on_sale",
    "sections": [
        {"id": "A", "name": "A", "kind": "seated", "price_cents": 100, "blocked": ["A-1-1"],
         "rows": [{"label": "1", "seats": 4}, {"label": "2", "seats": 4}, {"label": "3", "seats": 3}]},
        {"id": "B", "name": "B", "kind": "seated", "price_cents": 200,
         "rows": [{"label": "1", "seats": 3}, {"label": "2", "seats": 3}]},
        {"id": POOL, "name": "Floor", "kind": "ga", "price_cents": 50, "capacity": POOL_CAPACITY},
    ],
}
LAYOUT = layout_of(DOCUMENT)
LABELS = [f"{section['id']}-{row['label']}-{n}" for section in DOCUMENT["sections"] if section["kind"] == "seated"
          for row in section["rows"] for n in range(1, row["seats"] + 1)]

# --- random command sequences ------------------------------------------------------------------

_user = st.sampled_from(USERS)
_pick = st.integers(0, 1_000)
_HOLD = st.one_of(
    st.tuples(st.just("seats"), _user, st.lists(st.sampled_from(LABELS), min_size=1, max_size=3, unique=True)),
    st.tuples(st.just("pool"), _user, st.integers(1, 3), st.sampled_from((None, *KEYS))),
    st.tuples(st.just("best"), _user, st.sampled_from(("A", "B")), st.integers(1, 3), st.booleans()),
)
_LIFECYCLE = st.tuples(st.sampled_from(("release", "pin", "confirm", "fail", "buy", "buy")), _pick)
_AFTER_SALE = st.one_of(
    st.tuples(st.just("refund"), _pick),
    st.tuples(st.just("transfer"), _pick, _user),
    st.tuples(st.just("check_in"), _pick, st.sampled_from(GATES)),
)
_TICK = st.tuples(st.just("tick"), st.sampled_from((0.25, 3.0, 3.0, 11.0)))
_STATUS = st.tuples(st.just("status"), st.sampled_from((EventStatus.PAUSED, EventStatus.ON_SALE)))
_RARE = st.one_of(_TICK, _TICK, _STATUS)
# Weighted by repetition: mostly holds and their lifecycle, a batch boundary every few steps,
# time and the event's status now and then (a paused sale refuses every hold).
STEP = st.one_of(_HOLD, _HOLD, _LIFECYCLE, _LIFECYCLE, _AFTER_SALE, st.tuples(st.just("flush")),
                 st.tuples(st.just("flush")), st.one_of(_RARE, _HOLD, _LIFECYCLE))


def steps(min_size: int = 10, max_size: int = 60) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    return st.lists(STEP, min_size=min_size, max_size=max_size)


def sequential_ids() -> Callable[[], uuid.UUID]:
    """Small readable ids for unit tests (a fresh sequence per run)."""
    numbers = count(1)
    return lambda: uuid.UUID(int=next(numbers))


@dataclass
class Run:
    """A core with one event, and the batches its commands produced."""

    event_id: uuid.UUID
    new_id: Callable[[], uuid.UUID] = field(default=uuid.uuid4)
    now_s: float = BASE_S
    shard: ShardInventory = field(init=False)
    holds: list[tuple[str, uuid.UUID, int]] = field(default_factory=list)  # (user, hold id, units)
    orders: list[tuple[str, uuid.UUID]] = field(default_factory=list)
    tickets: list[uuid.UUID] = field(default_factory=list)
    owners: dict[uuid.UUID, str] = field(default_factory=dict)  # ticket → who holds it now
    batches: list[list[Any]] = field(default_factory=lambda: [[]])

    def __post_init__(self) -> None:
        self.shard = ShardInventory(core_limits(items_max=4))
        self.shard.create_event(self.event_id, LAYOUT, settings_of(DOCUMENT))

    def apply(self, command: Any) -> Any:
        outcome = self.shard.apply(command, self.now_s)
        self.batches[-1].extend(outcome.changes)
        self.shard.check_all()
        return outcome.result

    def step(self, step: tuple[Any, ...]) -> None:  # noqa: C901 - one branch per instruction
        name, *args = step
        if name == "seats":
            self._hold(HoldSeats(self.event_id, args[0], self.new_id(), tuple(args[1])))
        elif name == "pool":
            self._hold(HoldGeneralAdmission(self.event_id, args[0], self.new_id(), POOL, args[1], None, args[2]))
        elif name == "best":
            self._hold(HoldBestAvailable(self.event_id, args[0], self.new_id(), args[1], args[2], args[3]))
        elif name == "tick":
            self.now_s += args[0]
            for outcome in self.shard.expire_due(self.now_s):
                self.batches[-1].extend(outcome.changes)
        elif name == "status":
            self.apply(ChangeEventStatus(self.event_id, args[0], "organizer"))
        elif name == "flush":
            self.batches.append([])
        elif name in ("release", "pin", "confirm", "fail", "buy") and self.holds:
            self._lifecycle(name, self.holds[args[0] % len(self.holds)])
        elif name == "refund" and self.orders:
            user, order_id = self.orders[args[0] % len(self.orders)]
            self.apply(RefundOrder(user, order_id))
        elif name in ("transfer", "check_in") and self.tickets:
            ticket_id = self.tickets[args[0] % len(self.tickets)]
            if name == "check_in":
                self.apply(CheckIn(ticket_id, args[1]))
                return
            result = self.apply(TransferTicket(self.owners[ticket_id], ticket_id, args[1], self.new_id()))
            if isinstance(result, TransferView):
                self.tickets.append(result.new_ticket.ticket_id)
                self.owners[result.new_ticket.ticket_id] = args[1]

    def _hold(self, command: Any) -> None:
        result = self.apply(command)
        if isinstance(result, HoldView) and all(hold_id != result.hold_id for _, hold_id, _ in self.holds):
            self.holds.append((command.user_id, result.hold_id, result.quantity))

    def _lifecycle(self, name: str, hold: tuple[str, uuid.UUID, int]) -> None:
        user, hold_id, units = hold
        if name == "release":
            self.apply(ReleaseHold(user, hold_id))
        elif name == "fail":
            self.apply(FailCheckout(user, hold_id))
        else:
            if name in ("pin", "buy"):
                self.apply(BeginCheckout(user, hold_id))
            if name in ("confirm", "buy"):
                result = self.apply(ConfirmCheckout(user, hold_id, self.new_id(),
                                                    tuple(self.new_id() for _ in range(units))))
                if isinstance(result, OrderView):
                    self.orders.append((user, result.order_id))
                    for ticket in result.tickets:
                        self.tickets.append(ticket.ticket_id)
                        self.owners[ticket.ticket_id] = user

    def changes(self) -> list[Any]:
        return [change for batch in self.batches for change in batch]


def run_steps(instructions: list[tuple[Any, ...]], event_id: uuid.UUID,
              new_id: Callable[[], uuid.UUID] = uuid.uuid4) -> Run:
    run = Run(event_id, new_id)
    for instruction in instructions:
        run.step(instruction)
    return run


def event_rows_created(event_id: uuid.UUID) -> EventRowsCreated:
    """The rows `actors.event_admin.create_event` would write for `DOCUMENT`."""
    created_at = datetime.fromtimestamp(BASE_S, UTC)
    return EventRowsCreated(event_row(event_id, slot_of(event_id), "organizer", DOCUMENT, LAYOUT.seat_count,
                                      created_at),
                            section_rows(event_id, DOCUMENT, LAYOUT))


# --- the rows, normalised ----------------------------------------------------------------------


def _id(value: Any) -> uuid.UUID | None:
    """asyncpg's UUID, uuid.UUID and None alike as uuid.UUID (the writer interns event ids)."""
    return None if value is None else uuid.UUID(str(value))


def pool_keys(event_id: uuid.UUID) -> list[tuple[uuid.UUID, str]]:
    return [(event_id, section["id"]) for section in DOCUMENT["sections"] if section["kind"] == "ga"]


def projected_rows(projection: RowsProjection, event_ids: list[uuid.UUID]) -> dict[str, Any]:
    """The reference's rows in the shape of `TableModel.rows` and `stored_rows`."""
    pools = {key: (0, 0) for event_id in event_ids for key in pool_keys(event_id)}
    pools.update(projection.pools)
    return {
        "holds": {hold_id: (event_id, row.user_id, str(row.status), row.section_id, tuple(row.seat_nos),
                            row.quantity, row.expires_at_s)
                  for hold_id, (event_id, row) in projection.holds.items()},
        "orders": {order_id: (event_id, row.user_id, str(row.status))
                   for order_id, (event_id, row) in projection.orders.items()},
        "tickets": {ticket_id: (event_id, row.order_id, row.user_id, row.seat_no, row.section_id, str(row.status),
                                row.checked_in_at_s, row.gate, row.replaces)
                    for ticket_id, (event_id, row) in projection.tickets.items()},
        "seat_claims": dict(projection.seat_claims),
        "pools": pools,
        "idempotency": sorted((r.user_id, r.key, r.fingerprint) for r in projection.idempotency),
        "event_status": {event_id: str(status) for event_id, status in projection.event_statuses.items()},
    }


def expected_audit(changes: list[Any]) -> list[tuple[str, uuid.UUID, str | None, str, str, float]]:
    """Every transition the records describe, in order: (entity, id, from, to, actor, at_s); an
    event's creation is its first (``None`` → its status, by its organizer).

    Holds are not audited (issue 15: counted by the actors' metrics, kept in their own rows), so
    HoldCreated and HoldStatusChanged add nothing; a check-in is (no request context in these
    runs, so its actor is "system")."""
    audit: list[tuple[str, uuid.UUID, str | None, str, str, float]] = []
    for change in changes:
        kind = type(change)
        if kind is CheckedIn:
            audit.append(("ticket", change.ticket_id, "valid", "checked_in", "system", change.at_s))
        elif kind is OrderCreated:
            audit.append(("order", change.order_id, None, "confirmed", change.user_id, change.at_s))
        elif kind is OrderStatusChanged:
            audit.append(("order", change.order_id, change.from_status, change.to_status, change.actor, change.at_s))
        elif kind is TicketsIssued:
            audit += [("ticket", ticket_id, None, "valid", change.user_id, change.at_s)
                      for ticket_id in change.ticket_ids]
        elif kind is TicketStatusChanged:
            audit.append(("ticket", change.ticket_id, change.from_status, change.to_status, change.actor,
                          change.at_s))
        elif type(change).__name__ == "EventStatusChanged":
            audit.append(("event", change.event_id, change.from_status, change.to_status, change.actor,
                          change.at_s))
        elif kind is EventRowsCreated:
            event = change.event
            audit.append(("event", event["event_id"], None, event["status"], event["organizer_id"],
                          event["created_at"].timestamp()))
    return audit


def audit_row(row: Any) -> tuple[str, uuid.UUID, str | None, str, str, float]:
    """A plan's audit row (or a stored one, by `AUDIT_COLUMNS`) as in `expected_audit`."""
    values = dict(zip(AUDIT_COLUMNS, row, strict=False))  # a stored row may name the first 7 only
    at = values["at"]
    at_s = at.timestamp() if isinstance(at, datetime) else float(at)
    return (values["entity"], _id(values["entity_id"]), values["from_status"], values["to_status"],
            values["actor"], at_s)


# --- execute_plan's semantics on plain dicts ---------------------------------------------------


LIVE_TICKET = ("valid", "checked_in")


@dataclass
class TableModel:
    """The shard tables as dicts; `execute` applies a plan all-or-nothing, as the transaction does."""

    holds: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    orders: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    tickets: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    seat_claims: dict[tuple[uuid.UUID, int], tuple[uuid.UUID, str, uuid.UUID | None]] = field(default_factory=dict)
    pools: dict[tuple[uuid.UUID, str], list[int]] = field(default_factory=dict)  # → [capacity, held, sold]
    events: dict[uuid.UUID, str] = field(default_factory=dict)
    checkins: dict[uuid.UUID, tuple[str, float]] = field(default_factory=dict)
    idempotency: dict[tuple[str, str], bytes] = field(default_factory=dict)
    audit: list[Any] = field(default_factory=list)

    def execute(self, plan: BatchPlan) -> None:
        import copy

        scratch = copy.deepcopy(self)
        scratch._execute(plan)  # raises before anything is kept, like a rolled-back transaction
        self.__dict__.update(scratch.__dict__)

    def _execute(self, plan: BatchPlan) -> None:
        """`execute_plan`'s statements in its order; each checks what its SQL would."""
        for created in plan.new_events:
            self.events[created.event["event_id"]] = created.event["status"]
            for section in created.sections:
                if section["kind"] == "ga":
                    self.pools[(section["event_id"], section["section_id"])] = [section["capacity"], 0, 0]
        for table, updates in ((self.holds, plan.hold_updates), (self.orders, plan.order_updates),
                               (self.tickets, plan.ticket_updates)):
            for key, first_status, status, _at in updates.values():
                row = table.get(key)
                if row is None or row["status"] != first_status:
                    raise Diverged(f"update of {key}: stored {row and row['status']}, batch expected {first_status}")
                row["status"] = status
        self._check_live_tickets()
        self._insert(self.holds, "hold_id", POOL_HOLD_COLUMNS, plan.pool_hold_rows)
        self._insert(self.holds, "hold_id", HOLD_COLUMNS, plan.seat_hold_rows)
        self._insert(self.orders, "order_id", ORDER_COLUMNS, plan.new_orders.values())
        self._insert(self.tickets, "ticket_id", TICKET_COLUMNS, plan.new_tickets.values())
        self._check_live_tickets()
        self._write_seats(plan)
        self._write_pools(plan)
        self._write_the_rest(plan)

    def _write_pools(self, plan: BatchPlan) -> None:
        """The last counters per pool, where the pool still has those the batch first saw."""
        for key, counters in plan.pools.items():
            first = plan.pools_first[key]
            pool = self.pools.get((_id(counters.event_id), counters.section_id))
            if pool is None or pool[1:] != [first.held_before, first.sold_before]:
                raise Diverged(f"pool {counters.section_id} is {pool}, the batch first saw "
                               f"{(first.held_before, first.sold_before)}")
            if counters.held < 0 or counters.sold < 0 or counters.held + counters.sold > pool[0]:
                raise ValueError(f"CHECK violated by {counters}")
            pool[1:] = [counters.held, counters.sold]

    def _write_the_rest(self, plan: BatchPlan) -> None:
        for event_id, (first_status, status, _at) in plan.event_status.items():
            if self.events.get(event_id) != first_status:
                raise Diverged(f"event {event_id} is {self.events.get(event_id)}, batch expected {first_status}")
            self.events[event_id] = status
        for ticket_id, _event_id, gate, at_s in plan.checkins:
            if ticket_id in self.checkins or ticket_id not in self.tickets:
                raise ValueError(f"check-in of {ticket_id} refused")
            self.checkins[ticket_id] = (gate, at_s)
        for recorded in plan.idempotency:
            if (recorded.user_id, recorded.key) in self.idempotency:
                raise ValueError(f"idempotency key {recorded.key!r} of {recorded.user_id} stored twice")
            self.idempotency[(recorded.user_id, recorded.key)] = recorded.fingerprint
        self.audit.extend(plan.audit)

    def _insert(self, table: dict[uuid.UUID, dict[str, Any]], key: str, columns: tuple[str, ...],
                rows: Any) -> None:
        for values in rows:
            row = {"seat_nos": [], **dict(zip(columns, values, strict=True))}
            row = {name: _id(value) if name.endswith("_id") and name not in ("user_id", "section_id") else value
                   for name, value in row.items()}
            row["replaces"] = _id(row.get("replaces"))
            if row[key] in table:
                raise ValueError(f"duplicate {key} {row[key]}")
            if key == "order_id" and (row["hold_id"] not in self.holds
                                      or any(o["hold_id"] == row["hold_id"] for o in self.orders.values())):
                raise ValueError(f"order {row[key]}: hold missing or already ordered")
            if key == "ticket_id" and (row["order_id"] not in self.orders
                                       or (row["replaces"] is not None and row["replaces"] not in self.tickets)):
                raise ValueError(f"ticket {row[key]}: its order or replaced ticket is missing")
            table[row[key]] = row

    def _check_live_tickets(self) -> None:
        seats = [(row["event_id"], row["seat_no"]) for row in self.tickets.values()
                 if row["seat_no"] is not None and row["status"] in LIVE_TICKET]
        if len(seats) != len(set(seats)):
            raise ValueError("two live tickets for one seat (tickets_one_live_per_seat)")

    def _write_seats(self, plan: BatchPlan) -> None:
        for key, state in plan.seats.items():
            first = plan.seats_existed.get(key)
            existed = first is not None
            if first is not None and not claim_matches(self.seat_claims.get(key), first):
                raise Diverged(f"seat {key[1]} is claimed {self.seat_claims.get(key)}, the batch first saw {first}")
            if not existed and state is not None and key in self.seat_claims:
                raise ValueError(f"seat {key[1]} claimed twice (seat_claims primary key)")
            if state is None:
                if existed:
                    del self.seat_claims[key]
                continue
            if state[0] not in self.holds:
                raise ValueError(f"seat {key[1]} claimed by a missing hold")
            self.seat_claims[key] = state

    def rows(self) -> dict[str, Any]:
        """The same shape as `projected_rows`; a check-in row makes a valid ticket checked in, as
        recovery reads it (shards/loader.py)."""
        tickets = {}
        for ticket_id, row in self.tickets.items():
            gate, at_s = self.checkins.get(ticket_id, (None, None))
            status = "checked_in" if row["status"] == "valid" and gate is not None else row["status"]
            tickets[ticket_id] = (row["event_id"], row["order_id"], row["user_id"], row["seat_no"],
                                  row["section_id"], status, at_s, gate, row["replaces"])
        return {
            "holds": {hold_id: (row["event_id"], row["user_id"], row["status"], row["section_id"],
                                tuple(row["seat_nos"]), row["quantity"], row["expires_at"])
                      for hold_id, row in self.holds.items()},
            "orders": {order_id: (row["event_id"], row["user_id"], row["status"])
                       for order_id, row in self.orders.items()},
            "tickets": tickets,
            "seat_claims": {key: (hold_id, state) for key, (hold_id, state, _order) in self.seat_claims.items()},
            "pools": {key: (held, sold) for key, (_capacity, held, sold) in self.pools.items()},
            "idempotency": sorted((user, key, fingerprint) for (user, key), fingerprint in self.idempotency.items()),
            "event_status": {event_id: status for event_id, status in self.events.items()
                             if event_id in self._status_changed()},
        }

    def _status_changed(self) -> set[uuid.UUID]:
        # An event's status transitions; its creation (from None) and edits are not status changes.
        return {_id(row[3]) for row in self.audit if row[2] == "event" and row[4] is not None}


def claim_matches(stored: tuple[uuid.UUID, str, uuid.UUID | None] | None,
                  first: tuple[uuid.UUID | None, str, uuid.UUID | None]) -> bool:
    """`_write_seats`' guard: same state and order, and the same hold unless the batch saw none."""
    if stored is None:
        return False
    hold_id, state, order_id = first
    return stored[1:] == (state, order_id) and (hold_id is None or stored[0] == hold_id)


# --- Postgres ------------------------------------------------------------------------------------


async def stored_rows(connection: asyncpg.Connection, event_id: uuid.UUID) -> dict[str, Any]:
    """One event's rows from a shard database, in the shape of `projected_rows`."""
    holds = await connection.fetch(
        """SELECT hold_id, event_id, user_id, status, section_id, seat_nos, quantity,
                  extract(epoch FROM expires_at)::float8 AS expires_at_s
           FROM holds WHERE event_id = $1""", event_id)
    orders = await connection.fetch("SELECT order_id, event_id, user_id, status FROM orders WHERE event_id = $1",
                                    event_id)
    tickets = await connection.fetch(
        """SELECT t.ticket_id, t.event_id, t.order_id, t.user_id, t.seat_no, t.section_id,
                  CASE WHEN t.status = 'valid' AND c.ticket_id IS NOT NULL THEN 'checked_in' ELSE t.status END
                      AS status,
                  extract(epoch FROM c.checked_in_at)::float8 AS checked_in_at_s, c.gate, t.replaces
           FROM tickets t LEFT JOIN checkins c ON c.ticket_id = t.ticket_id WHERE t.event_id = $1""", event_id)
    claims = await connection.fetch("SELECT seat_no, hold_id, state FROM seat_claims WHERE event_id = $1", event_id)
    pools = await connection.fetch("SELECT section_id, held, sold FROM ga_pools WHERE event_id = $1", event_id)
    status = await connection.fetchval("SELECT status FROM events WHERE event_id = $1", event_id)
    return {
        "holds": {r["hold_id"]: (r["event_id"], r["user_id"], r["status"], r["section_id"], tuple(r["seat_nos"]),
                                 r["quantity"], r["expires_at_s"]) for r in holds},
        "orders": {r["order_id"]: (r["event_id"], r["user_id"], r["status"]) for r in orders},
        "tickets": {r["ticket_id"]: (r["event_id"], r["order_id"], r["user_id"], r["seat_no"], r["section_id"],
                                     r["status"], r["checked_in_at_s"], r["gate"], r["replaces"]) for r in tickets},
        "seat_claims": {(event_id, r["seat_no"]): (r["hold_id"], r["state"]) for r in claims},
        "pools": {(event_id, r["section_id"]): (r["held"], r["sold"]) for r in pools},
        "event_status": status,
    }


def batches_of(run: Run) -> Iterator[list[Any]]:
    """The non-empty batches, in order."""
    return (batch for batch in run.batches if batch)


@contextlib.contextmanager
def scratch_database(cluster: Any, name: str) -> Iterator[str]:
    """A fresh migrated database `name` on the test cluster's Postgres, dropped afterwards."""
    from loadtest.isolated import create_database, drop_database

    dsn = create_database(str(cluster.state()["pg_dsns"][0]), name)
    try:
        yield dsn
    finally:
        drop_database(dsn)
