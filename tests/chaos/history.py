"""A history checker for concurrent HTTP clients: record what every client saw, then check the
cluster's final state against it.

Recording. Every request a client sends goes through `History.record`, which logs one
`Operation`: who (buyer), what (`hold`, `checkout`, `release`, `refund`), the exact request
(method, path, JSON body, `Idempotency-Key`), when it was invoked and completed, and its outcome:

* ``ok`` — a 2xx: the client was told the effect happened (an *acknowledged* operation);
* ``fail`` — a 4xx: the API promises nothing happened ("nothing half-done");
* ``unknown`` — a 5xx, a timeout or a connection error: it may or may not have happened.

Checking. `History.check` runs after the faults have stopped and returns a `Report` whose
`failures` map each check to the precise offending ids (empty lists mean the check passed):

1. ``unknown_resolved`` — every unknown operation is re-sent with its own `Idempotency-Key` until
   it gets a definite answer (bounded in attempts and time). The answer of the re-send stands for
   the original: the API promises that a replay returns the first response, so a 2xx here means
   the effect happened once, a 4xx that it never happened. Operations still unknown are listed.
2. ``hold_reads_back`` / ``order_reads_back`` — every acknowledged hold answers
   `GET /v1/holds/{id}` with 200 and a status consistent with what the client saw (confirmed after
   an acknowledged checkout, released after an acknowledged release, never confirmed without a
   checkout ...), and every acknowledged order answers `GET /v1/orders/{id}` with 200, confirmed
   or (after a refund) refunded.
3. ``stored_as_acknowledged`` — the same holds and orders are rows in their shard's database, with
   a status allowed by the history, and the API's status equals the database's once final.
4. ``at_most_one_effect`` — every hold and order row of the history's buyers is accounted for by
   one acknowledged operation: a retried or resolved request that created a second hold (or
   order) shows up here. Holds of still-unknown operations are allowed, one per operation.
5. ``seats`` — per seat: no seat has two live tickets, the claims in state ``sold`` are exactly
   the seats with a live ticket, and every ``held`` claim belongs to a live hold of that seat.
6. ``pools`` — per GA pool: ``held`` equals the live holds' quantities, ``sold`` equals the live
   tickets, and ``held + sold <= capacity``.
7. ``money`` (when given the gateway's store) — no charge without tickets or refund: every
   succeeded charge of the workload's holds keeps its money only for a confirmed order with all
   its tickets, else it is refunded in full; every confirmed order has exactly one succeeded charge
   (a free one none). Pending refunds must be paid by the resolver within a bounded wait
   (`tests/chaos/charges.py`).

Checks 3-6 read every shard database in one REPEATABLE READ snapshot per event, so expiries that
commit while the check runs cannot make a consistent state look inconsistent.

Use:

    history = History(headers=cluster.headers)
    response = await history.record(client, "buyer-7", "hold", "POST", "/v1/holds", body, key="k-1")
    ...  # faults stop, /readyz is 200 again
    report = await history.check(client, events={event_id: dsn, ...}, gateway_path=data / "gateway" / ...)
    assert report.ok, report.describe()
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from tests.chaos.charges import SETTLE_TIME_MAX_S, settled_money_check

OK, FAIL, UNKNOWN = "ok", "fail", "unknown"
HOLD_STATUSES = frozenset({"held", "payment_pending", "confirmed", "expired", "released", "failed"})
FINAL_HOLD_STATUSES = frozenset({"confirmed", "expired", "released", "failed"})
LIVE_HOLD_STATUSES = ("held", "payment_pending")
LIVE_TICKET_STATUSES = ("valid", "checked_in")
RESOLVE_ATTEMPTS_MAX = 20
RESOLVE_PAUSE_S = 0.5
RESOLVE_TIME_MAX_S = 120.0
READ_TIMEOUT_S = 15.0
READ_CONCURRENCY_MAX = 20


@dataclass
class Operation:
    index: int
    buyer: str
    kind: str  # hold | checkout | release | refund
    method: str
    path: str
    body: dict[str, Any] | None
    key: str | None
    invoked_s: float
    completed_s: float | None = None
    status: int | None = None
    outcome: str | None = None
    response: dict[str, Any] | None = None
    error: str | None = None
    resolution: Operation | None = None  # the re-send that settled an unknown outcome

    @property
    def settled(self) -> Operation:
        """The operation whose answer counts: the resolution of an unknown one, else itself."""
        return self.resolution if self.resolution is not None else self

    def describe(self) -> str:
        return (f"#{self.index} {self.buyer} {self.kind} {self.method} {self.path} key={self.key} -> "
                f"{self.status or self.error} ({self.outcome})")


def outcome_of(status: int) -> str:
    if 200 <= status < 300:
        return OK
    return FAIL if 400 <= status < 500 else UNKNOWN


@dataclass
class Report:
    failures: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not any(self.failures.values())

    def fail(self, check: str, message: str) -> None:
        self.failures[check].append(message)

    def describe(self, shown_max: int = 25) -> str:
        lines = [f"history: {dict(self.counts)}"]
        for check, messages in self.failures.items():
            if messages:
                lines.append(f"FAILED {check}: {len(messages)}")
                lines += [f"  {message}" for message in messages[:shown_max]]
        return "\n".join(lines)


class History:
    """The operations of many concurrent clients; `record` is safe from any number of tasks."""

    def __init__(self, headers: Callable[[str], dict[str, str]], *, request_timeout_s: float = 15.0,
                 checkout_timeout_s: float = 40.0) -> None:
        self.headers = headers  # buyer → its Authorization header
        self.operations: list[Operation] = []
        self.request_timeout_s = request_timeout_s
        self.checkout_timeout_s = checkout_timeout_s

    async def record(self, client: httpx.AsyncClient, buyer: str, kind: str, method: str, path: str,
                     body: dict[str, Any] | None = None, *, key: str | None = None) -> Operation:
        operation = Operation(len(self.operations), buyer, kind, method, path, body, key, time.monotonic())
        self.operations.append(operation)
        await self._send(client, operation)
        return operation

    async def _send(self, client: httpx.AsyncClient, operation: Operation) -> None:
        headers = self.headers(operation.buyer)
        if operation.key is not None:
            headers = {**headers, "Idempotency-Key": operation.key}
        timeout = self.checkout_timeout_s if operation.kind == "checkout" else self.request_timeout_s
        try:
            response = await client.request(operation.method, operation.path, json=operation.body, headers=headers,
                                            timeout=timeout)
        except httpx.HTTPError as error:  # timeouts and connection errors: the outcome is unknown
            operation.error, operation.outcome = type(error).__name__, UNKNOWN
        else:
            operation.status, operation.outcome = response.status_code, outcome_of(response.status_code)
            try:
                operation.response = response.json()
            except ValueError:
                operation.response = None
        operation.completed_s = time.monotonic()

    # --- checking --------------------------------------------------------------------------------

    async def check(self, client: httpx.AsyncClient, events: dict[str, str], *, gateway_path: Path | None = None,
                    money_settle_time_max_s: float = SETTLE_TIME_MAX_S) -> Report:
        """`events` maps each event id of the workload to its shard's DSN; with `gateway_path` (the
        simulated gateway's SQLite file) the money check runs too."""
        report = Report()
        report.counts.update(f"{op.kind}:{op.outcome}" for op in self.operations)
        await self.resolve(client, report)
        view = Acknowledged.of(self.operations)
        await self._read_back(client, view, report)
        for event_id, dsn in events.items():
            rows = await snapshot(dsn, uuid.UUID(event_id), sorted({op.buyer for op in self.operations}))
            check_stored(view, rows, report)
            check_effects(view, rows, report)
            check_seats(rows, report)
            check_pools(rows, report)
        if gateway_path is not None:
            await self._check_money(events, gateway_path, money_settle_time_max_s, report)
        return report

    async def _check_money(self, events: dict[str, str], gateway_path: Path, settle_time_max_s: float,
                           report: Report) -> None:
        checkout_holds = {op.path.split("/")[3] for op in self.operations if op.kind == "checkout"}
        money, waited_s = await settled_money_check(events, gateway_path, checkout_holds,
                                                    settle_time_max_s=settle_time_max_s)
        report.counts.update(money.counts)
        report.counts["money_settle_wait_s"] = round(waited_s)
        for problem in money.problems:
            report.fail("money", problem)
        for refund in money.pending_refunds:
            report.fail("money", f"refund {refund} still pending after {waited_s:.0f} s")

    async def resolve(self, client: httpx.AsyncClient, report: Report) -> None:
        """Re-send every unknown operation with its key until a definite answer (bounded)."""
        deadline = time.monotonic() + RESOLVE_TIME_MAX_S
        for operation in [op for op in self.operations if op.outcome == UNKNOWN]:
            for _ in range(RESOLVE_ATTEMPTS_MAX):
                again = Operation(-1, operation.buyer, operation.kind, operation.method, operation.path,
                                  operation.body, operation.key, time.monotonic())
                await self._send(client, again)
                if again.outcome != UNKNOWN:
                    operation.resolution = again
                    report.counts[f"resolved:{operation.kind}:{again.outcome}"] += 1
                    break
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(RESOLVE_PAUSE_S)
            if operation.resolution is None:
                report.fail("unknown_resolved", f"still unknown after re-sending: {operation.describe()}")

    async def _read_back(self, client: httpx.AsyncClient, view: Acknowledged, report: Report) -> None:
        gate = asyncio.Semaphore(READ_CONCURRENCY_MAX)

        async def read(buyer: str, path: str) -> tuple[int | str, dict[str, Any] | None]:
            async with gate:
                try:
                    response = await client.get(path, headers=self.headers(buyer), timeout=READ_TIMEOUT_S)
                except httpx.HTTPError as error:
                    return type(error).__name__, None
                return response.status_code, response.json() if response.status_code == 200 else None

        holds = list(view.holds.items())
        answers = await asyncio.gather(*(read(buyer, f"/v1/holds/{hold_id}") for hold_id, (buyer, _) in holds))
        for (hold_id, _), (status, body) in zip(holds, answers, strict=True):
            allowed = view.allowed_hold_statuses(hold_id)
            view.api_hold_status[hold_id] = body["status"] if body else None
            if body is None:
                report.fail("hold_reads_back", f"hold {hold_id}: GET answered {status}, expected 200 {sorted(allowed)}")
            elif body["status"] not in allowed:
                report.fail("hold_reads_back", f"hold {hold_id}: status {body['status']}, expected {sorted(allowed)}")
        orders = list(view.orders.items())
        answers = await asyncio.gather(*(read(buyer, f"/v1/orders/{order_id}") for order_id, (buyer, _) in orders))
        for (order_id, _), (status, body) in zip(orders, answers, strict=True):
            allowed = view.allowed_order_statuses(order_id)
            if body is None:
                report.fail("order_reads_back", f"order {order_id}: GET answered {status}, expected 200 {allowed}")
            elif body["status"] not in allowed:
                report.fail("order_reads_back", f"order {order_id}: status {body['status']}, expected {allowed}")
            elif any(ticket["status"] not in view.allowed_ticket_statuses(order_id) for ticket in body["tickets"]):
                report.fail("order_reads_back", f"order {order_id}: tickets {[t['status'] for t in body['tickets']]}")


@dataclass
class Acknowledged:
    """What the clients were told, after resolution: the holds and orders that exist for them."""

    holds: dict[str, tuple[str, Operation]] = field(default_factory=dict)  # hold id → (buyer, its hold op)
    orders: dict[str, tuple[str, str]] = field(default_factory=dict)  # order id → (buyer, hold id)
    by_hold: dict[str, list[Operation]] = field(default_factory=lambda: defaultdict(list))  # later ops
    by_order: dict[str, list[Operation]] = field(default_factory=lambda: defaultdict(list))
    unsettled_holds: Counter[str] = field(default_factory=Counter)  # buyer → hold ops still unknown
    api_hold_status: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def of(cls, operations: list[Operation]) -> Acknowledged:
        view = cls()
        for operation in operations:
            settled = operation.settled
            if operation.kind == "hold":
                if settled.outcome == OK and settled.response:
                    view.holds[settled.response["id"]] = (operation.buyer, operation)
                elif settled.outcome == UNKNOWN:
                    view.unsettled_holds[operation.buyer] += 1
                continue
            target = operation.path.split("/")[3]
            (view.by_order if operation.kind == "refund" else view.by_hold)[target].append(operation)
            if operation.kind == "checkout" and settled.outcome == OK and settled.response:
                view.orders[settled.response["order"]["id"]] = (operation.buyer, target)
        return view

    def _settled(self, operations: list[Operation], kind: str) -> set[str]:
        return {op.settled.outcome or UNKNOWN for op in operations if op.kind == kind}

    def allowed_hold_statuses(self, hold_id: str) -> set[str]:
        later = self.by_hold.get(hold_id, [])
        checkouts, releases = self._settled(later, "checkout"), self._settled(later, "release")
        required = ({"confirmed"} if OK in checkouts else set()) | ({"released"} if OK in releases else set())
        if required:  # two different acknowledged endings contradict each other: nothing is consistent
            return required if len(required) == 1 else set()
        allowed = {"held", "expired"}
        if checkouts:  # tried: it may be pinned, and an unknown or failed one may have confirmed or failed it
            allowed |= {"payment_pending", "failed"} | ({"confirmed"} if UNKNOWN in checkouts else set())
        if UNKNOWN in releases:
            allowed.add("released")
        return allowed

    def allowed_order_statuses(self, order_id: str) -> set[str]:
        refunds = self._settled(self.by_order.get(order_id, []), "refund")
        if OK in refunds:
            return {"refunded"}
        return {"confirmed", "refunded"} if UNKNOWN in refunds else {"confirmed"}

    def allowed_ticket_statuses(self, order_id: str) -> set[str]:
        return {{"confirmed": "valid", "refunded": "refunded"}[s] for s in self.allowed_order_statuses(order_id)}


# --- the database, one consistent snapshot per event -------------------------------------------


async def snapshot(dsn: str, event_id: uuid.UUID, buyers: list[str]) -> dict[str, Any]:
    connection = await asyncpg.connect(dsn, timeout=READ_TIMEOUT_S)
    try:
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            return {
                "event_id": event_id,
                "holds": await connection.fetch(
                    """SELECT hold_id::text, user_id, kind, section_id, seat_nos, quantity, status FROM holds
                       WHERE event_id = $1""", event_id),
                "orders": await connection.fetch(
                    "SELECT order_id::text, hold_id::text, user_id, status FROM orders WHERE event_id = $1",
                    event_id),
                "tickets": await connection.fetch(
                    "SELECT ticket_id::text, seat_no, section_id, status FROM tickets WHERE event_id = $1", event_id),
                "claims": await connection.fetch(
                    "SELECT seat_no, hold_id::text, state FROM seat_claims WHERE event_id = $1", event_id),
                "pools": await connection.fetch(
                    "SELECT section_id, capacity, held, sold FROM ga_pools WHERE event_id = $1", event_id),
                "buyers": set(buyers),
            }
    finally:
        await connection.close()


def check_stored(view: Acknowledged, rows: dict[str, Any], report: Report) -> None:
    holds = {row["hold_id"]: row for row in rows["holds"]}
    orders = {row["order_id"]: row for row in rows["orders"]}
    event_holds = {row["hold_id"] for row in rows["holds"]}
    for hold_id, (_, operation) in view.holds.items():
        if operation.body and operation.body.get("event_id") != str(rows["event_id"]):
            continue
        row = holds.get(hold_id)
        allowed = view.allowed_hold_statuses(hold_id)
        if row is None:
            report.fail("stored_as_acknowledged", f"hold {hold_id} acknowledged but not in the database")
        elif row["status"] not in allowed:
            report.fail("stored_as_acknowledged", f"hold {hold_id}: stored {row['status']}, expected {allowed}")
        elif (api := view.api_hold_status.get(hold_id)) in FINAL_HOLD_STATUSES and api != row["status"]:
            report.fail("stored_as_acknowledged", f"hold {hold_id}: API says {api}, database {row['status']}")
    for order_id, (_, hold_id) in view.orders.items():
        if hold_id not in event_holds:
            continue
        row = orders.get(order_id)
        allowed = view.allowed_order_statuses(order_id)
        if row is None:
            report.fail("stored_as_acknowledged", f"order {order_id} acknowledged but not in the database")
        elif row["status"] not in allowed:
            report.fail("stored_as_acknowledged", f"order {order_id}: stored {row['status']}, expected {allowed}")


def check_effects(view: Acknowledged, rows: dict[str, Any], report: Report) -> None:
    """Every stored hold and order of our buyers is one that a client was told about (or one per
    operation whose outcome stayed unknown)."""
    spare = Counter(view.unsettled_holds)
    for row in rows["holds"]:
        if row["user_id"] not in rows["buyers"] or row["hold_id"] in view.holds:
            continue
        if spare[row["user_id"]] > 0:
            spare[row["user_id"]] -= 1
            continue
        report.fail("at_most_one_effect", f"hold {row['hold_id']} of {row['user_id']} ({row['status']}) was "
                                          "never acknowledged: a duplicate or a phantom effect")
    for row in rows["orders"]:
        if row["user_id"] in rows["buyers"] and row["order_id"] not in view.orders:
            unsettled = any(op.settled.outcome == UNKNOWN for op in view.by_hold.get(row["hold_id"], [])
                            if op.kind == "checkout")
            if not unsettled:
                report.fail("at_most_one_effect", f"order {row['order_id']} of {row['user_id']} for hold "
                                                  f"{row['hold_id']} ({row['status']}) was never acknowledged")


def check_seats(rows: dict[str, Any], report: Report) -> None:
    live = Counter(row["seat_no"] for row in rows["tickets"]
                   if row["seat_no"] is not None and row["status"] in LIVE_TICKET_STATUSES)
    for seat_no, count in live.items():
        if count > 1:
            report.fail("seats", f"seat {seat_no} sold twice: {count} live tickets")
    sold = {row["seat_no"] for row in rows["claims"] if row["state"] == "sold"}
    if sold != set(live):
        report.fail("seats", f"sold claims without a live ticket {sorted(sold - set(live))}, "
                             f"live tickets without a sold claim {sorted(set(live) - sold)}")
    live_holds = {row["hold_id"]: set(row["seat_nos"]) for row in rows["holds"]
                  if row["status"] in LIVE_HOLD_STATUSES and row["seat_nos"]}
    for claim in rows["claims"]:
        if claim["state"] == "held" and claim["seat_no"] not in live_holds.get(claim["hold_id"], ()):
            report.fail("seats", f"seat {claim['seat_no']} claimed by hold {claim['hold_id']}, which is not live")
    claimed = {(claim["hold_id"], claim["seat_no"]) for claim in rows["claims"] if claim["state"] == "held"}
    for hold_id, seat_nos in live_holds.items():
        if missing := {seat_no for seat_no in seat_nos if (hold_id, seat_no) not in claimed}:
            report.fail("seats", f"live hold {hold_id} has no claim on seats {sorted(missing)}")


def check_pools(rows: dict[str, Any], report: Report) -> None:
    for pool in rows["pools"]:
        section = pool["section_id"]
        held = sum(row["quantity"] for row in rows["holds"]
                   if row["kind"] == "ga" and row["section_id"] == section and row["status"] in LIVE_HOLD_STATUSES)
        sold = sum(1 for row in rows["tickets"]
                   if row["seat_no"] is None and row["section_id"] == section
                   and row["status"] in LIVE_TICKET_STATUSES)
        if (pool["held"], pool["sold"]) != (held, sold):
            report.fail("pools", f"pool {section}: counters held={pool['held']} sold={pool['sold']}, live holds "
                                 f"{held} and live tickets {sold}")
        if pool["held"] + pool["sold"] > pool["capacity"]:
            report.fail("pools", f"pool {section}: {pool['held']} + {pool['sold']} > capacity {pool['capacity']}")
