"""The event cancellation: refund every order of a cancelled event, durably and resumably.

`PATCH /v1/events/{id}` with ``"status": "cancelled"`` is one actor command: sales stop at once
(holds, checkouts, transfers and check-ins are refused from that commit on; a checkout whose
payment was in flight fails and its charge is refunded). Everything after is this saga, which
keeps no state of its own: what is left to do is what the shard's database says — the confirmed
orders of cancelled events (`shards.checkout_queries.CheckoutQueries.cancelled_orders`). So a
router that dies halfway leaves the rest to the next pass of any router, and nothing is done
twice:

- every `cancellation_interval_s` each router worker takes each shard whose Redis lock it wins
  (without Redis every worker works: every step is idempotent; the lock only saves duplicate
  work) and refunds up to `cancellation_pass_orders_max` orders, at most
  `cancellation_refunds_in_flight_max` at once and `cancellation_refunds_per_s` per second (payment
  providers rate-limit refunds);
- an order is refunded by the checkout service's own refund (`CheckoutService.refund_order` with
  ``cancellation``): one actor command voids every ticket the order's tickets became (``cancelled``)
  and records the whole order's money as owed in the same commit, then the gateway is paid with
  the order's one refund key. A crash between the two leaves the debt recorded, and the checkout
  resolver pays it; the gateway key makes a second payment of the same order impossible. The
  command carries one key per order, so a repeat replays the first outcome or answers
  ORDER_ALREADY_REFUNDED, which is success;
- an order that fails (shard or database down, a bug) is retried after
  `cancellation_retry_base_s` × 2^(failures-1), at most `cancellation_retry_max_s`, and counted.

Holders learn of it from the outbox: each ticket's ``ticket.cancelled`` and each order's
``order.refunded`` rows (webhooks, e-mail) are written in the refund's own commit. Progress shows
on the event (``cancellation: {orders_total, orders_refunded}``, actors/reads.py) and in
``ticketing_cancellation_backlog_orders``; `TicketingCancellationStalled` fires when a backlog stops
shrinking (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from uuid import UUID

from prometheus_client import Counter, Gauge

from actors.inventory.changes import SYSTEM_ACTOR
from actors.inventory.results import OrderView
from actors.protocol import Caller, GetOrder
from cluster.settings import Settings
from router.checkout import CheckoutService, RefundRequest, keys
from router.http_metrics import at_zero
from router.periodic import ShardRounds, redis_lock
from router.problems import ApiError
from router.runtime import Runtime
from shards.checkout_queries import QueryFailed

log = logging.getLogger(__name__)

RESULTS = ("refunded", "already_refunded", "failed")
REFUNDS = at_zero(Counter("ticketing_cancellation_refunds_total",
                          "Orders of cancelled events refunded by the cancellation, by result "
                          "(already_refunded: done before; failed: retried with backoff).", ["result"]), *RESULTS)
BACKLOG = Gauge("ticketing_cancellation_backlog_orders",
                "Orders of cancelled events not refunded yet, by shard.", ["shard"], multiprocess_mode="livemax")
LOCK_KEY = "ticketing:cancellation:{shard}"
# The audit log's actor for what the cancellation does (the organizer's PATCH is audited as theirs).
CALLER = Caller(SYSTEM_ACTOR, "system", None)


class CancellationSaga:
    def __init__(self, runtime: Runtime, service: CheckoutService, settings: Settings) -> None:
        self.runtime = runtime
        self.service = service
        self.settings = settings
        self._in_flight = asyncio.Semaphore(settings.cancellation_refunds_in_flight_max)
        self._next_start_s = 0.0  # the pace: when the next refund may start (monotonic clock)
        # order id → (failures, monotonic time of the next attempt); only orders that failed.
        self._backoff: dict[UUID, tuple[int, float]] = {}
        self._rounds = ShardRounds("cancellation", settings.shard_count, settings.cancellation_interval_s, self._round)
        for shard_id in range(settings.shard_count):
            BACKLOG.labels(str(shard_id)).set(0)

    def start(self) -> None:
        self._rounds.start()

    async def stop(self) -> None:
        await self._rounds.stop()

    async def _round(self, shard_id: int) -> None:
        if await redis_lock(self.runtime.redis, LOCK_KEY.format(shard=shard_id), self.settings.cancellation_interval_s):
            await self.cancel_shard(shard_id)

    async def cancel_shard(self, shard_id: int) -> int:
        """One pass on one shard: refund up to `cancellation_pass_orders_max` due orders; how many
        were refunded (or found refunded)."""
        queries = self.service.queries
        try:
            BACKLOG.labels(str(shard_id)).set(await queries.cancellation_backlog(shard_id))
            rows = await queries.cancelled_orders(shard_id, None, self.settings.cancellation_pass_orders_max)
        except QueryFailed as error:
            log.warning("cancellation scan on shard %s failed: %s", shard_id, error)
            return 0
        now_s = time.monotonic()
        due = [order_id for order_id, _ in rows if self._backoff.get(order_id, (0, 0.0))[1] <= now_s]
        done = await asyncio.gather(*(self._refund(shard_id, order_id) for order_id in due))
        return sum(done)

    async def _refund(self, shard_id: int, order_id: UUID) -> bool:
        async with self._in_flight:
            await self._pace()
            try:
                result = await self.refund(shard_id, order_id)
            except Exception as error:  # the shard, its database or the gateway failed; or a bug
                self._failed(order_id, error)
                return False
        self._backoff.pop(order_id, None)
        REFUNDS.labels(result).inc()
        return True

    async def refund(self, shard_id: int, order_id: UUID) -> str:
        """Refund one order of a cancelled event: ``refunded``, or ``already_refunded``."""
        order = await self.service.read(shard_id, GetOrder(order_id, None))
        if not isinstance(order, OrderView):
            raise LookupError(f"order {order_id} not found on shard {shard_id}")
        if order.status == "refunded":
            return "already_refunded"
        request = RefundRequest(shard_id, SYSTEM_ACTOR, order, True, keys.order_cancellation_key(order_id), CALLER,
                                cancellation=True)
        try:
            await self.service.refund_order(request)
        except ApiError as error:
            if error.code == "ORDER_ALREADY_REFUNDED":
                return "already_refunded"
            raise
        return "refunded"

    async def _pace(self) -> None:
        """Start at most `cancellation_refunds_per_s` refunds per second (per worker)."""
        now_s = time.monotonic()
        start_s = max(now_s, self._next_start_s)
        self._next_start_s = start_s + 1.0 / self.settings.cancellation_refunds_per_s
        if start_s > now_s:
            await asyncio.sleep(start_s - now_s)

    def _failed(self, order_id: UUID, error: BaseException) -> None:
        failures = self._backoff.get(order_id, (0, 0.0))[0] + 1
        if len(self._backoff) >= self.settings.cancellation_pass_orders_max * 4 and order_id not in self._backoff:
            self._backoff.pop(next(iter(self._backoff)))  # bounded: the oldest failure is forgotten
        delay_s = min(self.settings.cancellation_retry_base_s * 2 ** (failures - 1),
                      self.settings.cancellation_retry_max_s)
        self._backoff[order_id] = (failures, time.monotonic() + delay_s)
        REFUNDS.labels("failed").inc()
        log.warning("cancellation refund of order %s failed (%s time(s)), retried in %.1f s: %s", order_id,
                    failures, delay_s, error)
