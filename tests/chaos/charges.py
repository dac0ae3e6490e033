"""The history checker's money check: no charge without tickets or refund.

After the faults, the payment gateway's charges are compared with the shard databases (issue 10:
"no charge without tickets or refund"):

* every succeeded charge of one of the workload's holds either keeps its money for a confirmed
  order of that hold — the same amount, and as many live tickets as the hold had units — or was
  refunded in full (a refunded order keeps money only for tickets still live, i.e. transferred
  away); a charge for a hold no shard database has is a failure too;
* every confirmed order has exactly one succeeded charge that kept its money, and a free order
  (total 0) none; a hold is never charged twice.

Refunds are paid after their commit (a pending ``payments`` row first, then the gateway, retried
by the checkout resolver), and pinned holds with a charge are confirmed or refunded by the
resolver after ``payment_timeout_s``. So the check waits, bounded by `settle_time_max_s`, until
no refund is pending and nothing is wrong; what is still wrong then is reported, pending refunds
by key.

Each pass reads the shard databases first (one REPEATABLE READ snapshot per event) and the gateway
after: the gateway only ever gains charges and refunds, so an order or refund the databases show
already has its money movement at the gateway when it is read.

The simulated gateway keeps its charges in SQLite (`router.checkout.gateway.SimulatedGateway`,
``<data>/gateway/gateway.sqlite3``); it is read here in read-only mode.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections import Counter, defaultdict
from contextlib import closing
from pathlib import Path
from typing import NamedTuple

import asyncpg

CHARGE_KEY_PREFIX = "charge:"  # router.checkout.keys.charge_key
CHARGE_DESCRIPTION_PREFIX = "hold "  # CheckoutService._charge's description
LIVE_TICKET_STATUSES = ("valid", "checked_in")
SETTLE_TIME_MAX_S = 90.0
SETTLE_PAUSE_S = 1.0
READ_TIMEOUT_S = 15.0


class GatewayCharge(NamedTuple):
    charge_id: str
    key: str
    description: str
    status: str
    amount_cents: int
    refunded_cents: int

    @property
    def hold_id(self) -> str | None:
        """The hold the charge was for, by its key or, failing that, its description."""
        for text, prefix in ((self.key, CHARGE_KEY_PREFIX), (self.description, CHARGE_DESCRIPTION_PREFIX)):
            if text.startswith(prefix):
                try:
                    return str(uuid.UUID(text[len(prefix):]))
                except ValueError:
                    continue
        return None


def gateway_charges(path: Path) -> list[GatewayCharge]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=READ_TIMEOUT_S)) as connection:
        rows = connection.execute(
            "SELECT id, idempotency_key, description, status, amount_cents, refunded_cents FROM charges").fetchall()
    return [GatewayCharge(*row) for row in rows]


async def money_rows(dsn: str, event_id: uuid.UUID) -> dict[str, list[asyncpg.Record]]:
    connection = await asyncpg.connect(dsn, timeout=READ_TIMEOUT_S)
    try:
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            return {
                "holds": await connection.fetch(
                    "SELECT hold_id::text, status, quantity, total_cents FROM holds WHERE event_id = $1", event_id),
                "orders": await connection.fetch(
                    "SELECT order_id::text, hold_id::text, status, total_cents FROM orders WHERE event_id = $1",
                    event_id),
                "live_tickets": await connection.fetch(
                    """SELECT order_id::text, count(*) AS n FROM tickets
                       WHERE event_id = $1 AND status = ANY($2::text[]) GROUP BY order_id""",
                    event_id, list(LIVE_TICKET_STATUSES)),
                "pending_refunds": await connection.fetch(
                    """SELECT idempotency_key, hold_id::text, amount_cents FROM payments
                       WHERE event_id = $1 AND kind = 'refund' AND status = 'pending'""", event_id),
            }
    finally:
        await connection.close()


class MoneyCheck(NamedTuple):
    problems: list[str]
    pending_refunds: list[str]
    counts: Counter[str]


def check_money(databases: list[dict[str, list[asyncpg.Record]]], charges: list[GatewayCharge],
                checkout_holds: set[str]) -> MoneyCheck:
    """One pass over one reading of the databases and the gateway (see the module docstring)."""
    holds = {row["hold_id"]: row for rows in databases for row in rows["holds"]}
    orders = {row["hold_id"]: row for rows in databases for row in rows["orders"]}
    live = {row["order_id"]: row["n"] for rows in databases for row in rows["live_tickets"]}
    ours = set(holds) | checkout_holds
    by_hold: dict[str, list[GatewayCharge]] = defaultdict(list)
    for charge in charges:
        if (hold_id := charge.hold_id) is not None and hold_id in ours:
            by_hold[hold_id].append(charge)
    problems: list[str] = []
    counts: Counter[str] = Counter()
    for hold_id, found in by_hold.items():
        problems += _charges_problems(hold_id, found, holds.get(hold_id), orders.get(hold_id), live, counts)
    for order in orders.values():
        if order["status"] == "confirmed":
            problems += _confirmed_order_problems(order, by_hold.get(order["hold_id"], []), counts)
    pending = [f"{row['idempotency_key']} ({row['amount_cents']} cents, hold {row['hold_id']})"
               for rows in databases for row in rows["pending_refunds"]]
    return MoneyCheck(problems, pending, counts)


def _charges_problems(hold_id: str, found: list[GatewayCharge], hold: asyncpg.Record | None,
                      order: asyncpg.Record | None, live: dict[str, int], counts: Counter[str]) -> list[str]:
    """A hold's charges: at most one succeeded, and none keeping money it should not."""
    succeeded = [charge for charge in found if charge.status == "succeeded"]
    counts["charges_checked"] += len(found)
    counts["charges_refunded"] += sum(1 for charge in succeeded if charge.refunded_cents == charge.amount_cents)
    problems = []
    if len(succeeded) > 1:
        problems.append(f"hold {hold_id} charged {len(succeeded)} times: {[c.charge_id for c in succeeded]}")
    if hold is None:
        return [*problems, f"charges {[c.charge_id for c in found]} for hold {hold_id}, which no database has"]
    return problems + [problem for charge in succeeded
                       if (problem := _kept_money_problem(charge, hold, order, live)) is not None]


def _confirmed_order_problems(order: asyncpg.Record, found: list[GatewayCharge], counts: Counter[str]) -> list[str]:
    """Exactly one succeeded charge kept for a paid order, none at all for a free one."""
    counts["orders_confirmed"] += 1
    if order["total_cents"] == 0:
        counts["orders_free"] += 1
        return [f"free order {order['order_id']} has charges {[c.charge_id for c in found]}"] if found else []
    kept = [charge for charge in found if charge.status == "succeeded" and charge.refunded_cents == 0]
    if len(kept) == 1:
        return []
    return [f"confirmed order {order['order_id']} of hold {order['hold_id']} has {len(kept)} succeeded charges "
            "that kept their money, not 1"]


def _kept_money_problem(charge: GatewayCharge, hold: asyncpg.Record, order: asyncpg.Record | None,
                        live: dict[str, int]) -> str | None:
    """Why a succeeded charge keeps money it should not, or None."""
    kept_cents = charge.amount_cents - charge.refunded_cents
    if kept_cents == 0:
        return None
    where = f"charge {charge.charge_id} of hold {hold['hold_id']} ({hold['status']}) keeps {kept_cents} cents"
    if order is None:
        return f"{where} without an order and without a refund"
    tickets = live.get(order["order_id"], 0)
    if order["status"] == "confirmed" and (kept_cents, tickets) != (order["total_cents"], hold["quantity"]):
        return (f"{where} for confirmed order {order['order_id']} of {order['total_cents']} cents with {tickets} "
                f"live tickets of {hold['quantity']}")
    if order["status"] != "confirmed" and tickets == 0:
        return f"{where} for {order['status']} order {order['order_id']} without live tickets"
    return None


async def settled_money_check(events: dict[str, str], gateway_path: Path, checkout_holds: set[str], *,
                              settle_time_max_s: float = SETTLE_TIME_MAX_S) -> tuple[MoneyCheck, float]:
    """Check until nothing is wrong and no refund is pending, or `settle_time_max_s` passed; the
    last pass and the seconds waited."""
    started = time.monotonic()
    while True:
        databases = [await money_rows(dsn, uuid.UUID(event_id)) for event_id, dsn in events.items()]
        charges = await asyncio.to_thread(gateway_charges, gateway_path)  # after the databases: see above
        result = check_money(databases, charges, checkout_holds)
        waited_s = time.monotonic() - started
        if not (result.problems or result.pending_refunds) or waited_s > settle_time_max_s:
            return result, waited_s
        await asyncio.sleep(SETTLE_PAUSE_S)
