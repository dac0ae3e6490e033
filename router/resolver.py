"""The checkout resolver: settles what a checkout left in doubt (DESIGN §5, §9).

A hold pinned for payment (``payment_pending``) never expires, so if the process that charged it
died before confirming, or the client never retried after a 502, someone must decide. Every
`checkout_resolver_interval_s`, for holds pinned longer than `payment_timeout_s` (longer than any
gateway call can last), the resolver looks the charge up by its key: a succeeded charge is
confirmed (tickets issued) — or refunded if the hold can no longer be confirmed — and anything
else fails the hold, putting its inventory back on sale. A charge call that timed out may still
land at the gateway after that (a provider finishes what it started), so a hold failed for want of
a charge leaves a `payments` row in status `unknown`; later passes look that charge up again and
refund it if it appeared, until `UNKNOWN_CHARGE_HORIZON` timeouts have passed. The resolver also
retries refunds recorded as pending. Every step is idempotent (keys per hold), so two router
workers resolving the same hold cannot double anything; a short Redis lock per shard only avoids
the duplicate work.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from prometheus_client import Counter

from actors.inventory.commands import ConfirmCheckout, FailCheckout
from actors.inventory.holds import HoldStatus
from actors.inventory.results import HoldItem, HoldView, OrderView, Rejection
from actors.protocol import CompleteCheckout, PaymentRecord, RecordPayment
from cluster.settings import Settings
from router.checkout import charge_key, payment_record, refund_key, settled_order
from router.payments import PaymentGateway
from router.runtime import Runtime
from router.shard_client import ShardClient
from shards.slots import new_id, slot_of_id

log = logging.getLogger(__name__)

RESOLVED = Counter("ticketing_checkout_resolutions_total", "Pinned holds settled by the resolver.", ["result"])
HOLDS_PER_PASS_MAX = 100
# How many payment timeouts a charge whose outcome was unknown is looked up again before the
# resolver concludes it never happened.
UNKNOWN_CHARGE_HORIZON = 10
LOCK_KEY = "ticketing:resolver:{shard}"


class CheckoutResolver:
    def __init__(self, runtime: Runtime, client: ShardClient, gateway: PaymentGateway, settings: Settings) -> None:
        self.runtime = runtime
        self.client = client
        self.gateway = gateway
        self.settings = settings
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.checkout_resolver_interval_s)
            for shard_id in range(self.settings.shard_count):
                try:
                    if await self._lock(shard_id):
                        await self.resolve_shard(shard_id)
                except Exception as error:  # a pass that fails is retried at the next interval
                    log.warning("checkout resolver pass on shard %s failed: %s", shard_id, error)

    async def _lock(self, shard_id: int) -> bool:
        redis = self.runtime.redis
        if redis is None:
            return True
        try:
            ttl_ms = int(self.settings.checkout_resolver_interval_s * 1000)
            return bool(await redis.set(LOCK_KEY.format(shard=shard_id), "1", nx=True, px=ttl_ms))
        except Exception:
            return True  # without Redis every worker resolves; the steps are idempotent

    async def resolve_shard(self, shard_id: int) -> None:
        pool = await self.runtime.pool(shard_id)
        pinned = await pool.fetch(
            """SELECT h.hold_id, h.event_id, h.user_id, h.quantity, h.total_cents, e.currency, h.expires_at
               FROM holds h JOIN events e USING (event_id)
               WHERE h.status = 'payment_pending' AND h.updated_at < now() - make_interval(secs => $1)
               ORDER BY h.updated_at LIMIT $2""", self.settings.payment_timeout_s, HOLDS_PER_PASS_MAX)
        for row in pinned:
            await self.resolve_hold(shard_id, row)
        pending = await pool.fetch(
            """SELECT p.*, h.user_id AS owner FROM payments p JOIN holds h USING (hold_id)
               WHERE p.kind = 'refund' AND p.status = 'pending'
                 AND p.updated_at < now() - make_interval(secs => $1) LIMIT $2""",
            self.settings.checkout_resolver_interval_s, HOLDS_PER_PASS_MAX)
        for row in pending:
            await self.retry_refund(shard_id, row)
        unknown = await pool.fetch(
            """SELECT p.*, h.user_id AS owner, h.quantity, h.total_cents, h.expires_at,
                      p.created_at < now() - make_interval(secs => $2) AS past_horizon
               FROM payments p JOIN holds h USING (hold_id)
               WHERE p.kind = 'charge' AND p.status = 'unknown'
                 AND p.updated_at < now() - make_interval(secs => $1) LIMIT $3""",
            self.settings.payment_timeout_s, self.settings.payment_timeout_s * UNKNOWN_CHARGE_HORIZON,
            HOLDS_PER_PASS_MAX)
        for row in unknown:
            await self.recheck_charge(shard_id, row)

    async def resolve_hold(self, shard_id: int, row: Any) -> None:
        hold = HoldView(row["hold_id"], row["event_id"], HoldStatus.PAYMENT_PENDING, row["expires_at"].timestamp(),
                        tuple(HoldItem(None, "", 0) for _ in range(row["quantity"])), row["total_cents"],
                        row["currency"].strip())
        user_id = row["user_id"]
        charge = await self.gateway.lookup(charge_key(hold.hold_id))
        gateway = self.settings.payment_gateway
        if charge is None or charge.status != "succeeded":
            # Declined: settled. Not found: maybe never, maybe still landing — look again later.
            status = "unknown" if charge is None else "declined"
            record = payment_record(hold, user_id, gateway, charge_key(hold.hold_id), charge, "charge", status)
            await self.client.apply(shard_id, RecordPayment(record), retryable=True)
            await self.client.apply(shard_id, FailCheckout(user_id, hold.hold_id, f"resolver:{hold.hold_id}:fail"),
                                    retryable=True)
            RESOLVED.labels("failed").inc()
            return
        slot = slot_of_id(hold.hold_id) or 0
        confirm = ConfirmCheckout(user_id, hold.hold_id, new_id(slot), tuple(new_id(slot) for _ in hold.items),
                                  f"resolver:{hold.hold_id}:confirm")
        record = payment_record(hold, user_id, gateway, charge_key(hold.hold_id), charge, "charge", "succeeded")
        reply = await self.client.apply(shard_id, CompleteCheckout(confirm, record), retryable=True)
        if isinstance(reply, OrderView):
            RESOLVED.labels("confirmed").inc()
            return
        if isinstance(reply, Rejection):
            if await settled_order(self.client, shard_id, hold.hold_id, user_id) is not None:
                RESOLVED.labels("confirmed_elsewhere").inc()  # the checkout itself won the race
                return
            await self._refund(shard_id, hold, user_id, charge)
            RESOLVED.labels("refunded").inc()

    async def _refund(self, shard_id: int, hold: HoldView, user_id: str, charge: Any) -> None:
        status = "succeeded"
        try:
            await self.gateway.refund(charge_id=charge.id, amount_cents=charge.amount_cents,
                                      idempotency_key=refund_key(hold.hold_id))
        except Exception:
            status = "pending"
        record = payment_record(hold, user_id, self.settings.payment_gateway, refund_key(hold.hold_id), charge,
                                "refund", status)
        await self.client.apply(shard_id, RecordPayment(record), retryable=True)

    async def recheck_charge(self, shard_id: int, row: Any) -> None:
        """A hold was failed because its charge was not found; refund the charge if it landed since."""
        hold = HoldView(row["hold_id"], row["event_id"], HoldStatus.FAILED, row["expires_at"].timestamp(),
                        (), row["total_cents"], row["currency"].strip())
        charge = await self.gateway.lookup(row["idempotency_key"])
        gateway = self.settings.payment_gateway
        if charge is not None and charge.status == "succeeded":
            if await settled_order(self.client, shard_id, hold.hold_id, row["owner"]) is None:
                await self._refund(shard_id, hold, row["owner"], charge)
                RESOLVED.labels("late_charge_refunded").inc()
            status = "succeeded"
        elif charge is not None:
            status = "declined"
        elif row["past_horizon"]:
            status = "failed"  # no charge appeared in all that time: it never happened
        else:
            return
        record = payment_record(hold, row["owner"], gateway, row["idempotency_key"], charge, "charge", status)
        await self.client.apply(shard_id, RecordPayment(record), retryable=True)

    async def retry_refund(self, shard_id: int, row: Any) -> None:
        try:
            await self.gateway.refund(charge_id=row["gateway_ref"], amount_cents=row["amount_cents"],
                                      idempotency_key=row["idempotency_key"])
        except Exception as error:
            log.info("pending refund %s still failing: %s", row["idempotency_key"], error)
            return
        record = PaymentRecord(uuid.uuid4(), row["event_id"], row["hold_id"], row["order_id"], row["owner"], "refund",
                               row["gateway"], row["gateway_ref"], row["idempotency_key"], row["amount_cents"],
                               row["currency"].strip(), "succeeded")
        await self.client.apply(shard_id, RecordPayment(record), retryable=True)
        RESOLVED.labels("refund_retried").inc()
