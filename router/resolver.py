"""The checkout resolver: settles what a checkout left in doubt (DESIGN §5, §9).

A hold pinned for payment (``payment_pending``) never expires, so if the process that charged it
died before confirming, or the client never retried after a 502, someone must decide. Every
`checkout_resolver_interval_s`, for holds pinned longer than `payment_timeout_s` (longer than any
gateway call can last), the resolver asks the checkout service to settle the hold: it looks the
charge up by its key and confirms (tickets issued) — or refunds, if the hold can no longer be
confirmed — and fails anything else, putting its inventory back on sale. A charge call that timed
out may still land at the gateway after that (a provider finishes what it started), so a hold
failed for want of a charge leaves a `payments` row in status `unknown`; later passes look that
charge up again and refund it if it appeared, until `checkout_resolver_unknown_charge_timeouts`
payment timeouts have passed.
The resolver also pays refunds recorded as owed (``pending``) until the gateway confirms them.

The steps are the service's own (router/checkout/service.py), with the same per-hold keys as the
checkout, so two router workers — or a worker and a retrying client — cannot double anything; a
short Redis lock per shard only avoids the duplicate work. What a pass cannot settle (a step
refused, the shard or the gateway down) is logged and counted in
``ticketing_checkout_unsettled_total`` and stepped over: scans are keyset-paginated, so stuck rows
never fill the page that later rows wait behind, and the next pass starts again from the oldest.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from prometheus_client import Counter

from cluster.settings import Settings
from router.checkout.service import CheckoutService, Unsettled
from router.http_metrics import at_zero
from router.periodic import ShardRounds, redis_lock
from router.problems import ApiError
from router.runtime import Runtime
from shards.checkout_queries import Cursor, PaymentRow, PinnedHold, QueryFailed

log = logging.getLogger(__name__)

# What the resolver's scans settle items as (`_settle_one`): pinned holds (CheckoutService.settle),
# owed refunds paid, charges it had not found (CheckoutService.recheck_charge); and the reasons for
# leaving an item unsettled that are known in advance (the others name the error: a problem code, an
# exception's type). Their series exist at 0 from the start (`at_zero`).
RESOLUTIONS = ("confirmed", "failed", "refunded", "settled_elsewhere", "refund_retried",
               "late_charge_found", "late_charge_refunded", "declined", "never_charged")
KNOWN_UNSETTLED = (("pinned_hold", "hold not found"), ("pending_refund", "pending"), ("pending_refund", "rejected"))
RESOLVED = at_zero(Counter("ticketing_checkout_resolutions_total", "Pinned holds settled by the resolver.",
                           ["result"]), *RESOLUTIONS)
UNSETTLED = at_zero(Counter("ticketing_checkout_unsettled_total",
                            "Items a resolver pass could not settle and left for the next pass, by kind and reason.",
                            ["kind", "reason"]), *KNOWN_UNSETTLED)
# A pass's bounds are settings: `checkout_resolver_page_rows_max` rows per page,
# `checkout_resolver_pass_pages_max` pages per scan per pass (a scan that has more continues from
# its cursor next pass) and `checkout_resolver_unknown_charge_timeouts`.
LOCK_KEY = "ticketing:resolver:{shard}"
Row = TypeVar("Row", PinnedHold, PaymentRow)


class CheckoutResolver:
    def __init__(self, runtime: Runtime, service: CheckoutService, settings: Settings) -> None:
        self.runtime = runtime
        self.service = service
        self.settings = settings
        # Where each (shard, scan) continues: the last row handled, or None to start from the oldest.
        self._cursors: dict[tuple[int, str], Cursor | None] = {}
        self._rounds = ShardRounds("checkout resolver", settings.shard_count, settings.checkout_resolver_interval_s,
                                   self._round)

    def start(self) -> None:
        self._rounds.start()

    async def stop(self) -> None:
        await self._rounds.stop()

    async def _round(self, shard_id: int) -> None:
        # Without Redis every worker resolves: the steps are idempotent (router/periodic.py).
        if await redis_lock(self.runtime.redis, LOCK_KEY.format(shard=shard_id),
                            self.settings.checkout_resolver_interval_s):
            await self.resolve_shard(shard_id)

    async def resolve_shard(self, shard_id: int) -> None:
        queries, service, settings = self.service.queries, self.service, self.settings
        timeout_s, rows_max = settings.payment_timeout_s, settings.checkout_resolver_page_rows_max
        horizon_s = timeout_s * settings.checkout_resolver_unknown_charge_timeouts
        await self._scan(shard_id, "pinned_hold",
                         lambda after: queries.pinned_holds(shard_id, timeout_s, after, rows_max),
                         lambda row: service.settle(shard_id, row.hold_id, row.user_id))
        await self._scan(shard_id, "pending_refund",
                         lambda after: queries.pending_refunds(shard_id, settings.checkout_resolver_interval_s,
                                                               after, rows_max),
                         lambda row: service.retry_refund(shard_id, row))
        await self._scan(shard_id, "unknown_charge",
                         lambda after: queries.unknown_charges(shard_id, timeout_s, horizon_s, after, rows_max),
                         lambda row: service.recheck_charge(shard_id, row))

    async def _scan(self, shard_id: int, kind: str, page: Callable[[Cursor | None], Awaitable[Sequence[Row]]],
                    settle: Callable[[Row], Awaitable[str]]) -> None:
        """Settle up to `checkout_resolver_pass_pages_max` pages of one scan, continuing from where the
        last pass stopped; each row is settled on its own, so one that fails never holds up the others."""
        rows_max = self.settings.checkout_resolver_page_rows_max
        for _ in range(self.settings.checkout_resolver_pass_pages_max):
            after = self._cursors.get((shard_id, kind))
            try:
                rows = await page(after)
            except QueryFailed as error:
                log.warning("resolver scan %s on shard %s failed: %s", kind, shard_id, error)
                return
            for row in rows:
                await self._settle_one(kind, row, settle)
            self._cursors[(shard_id, kind)] = rows[-1].cursor if len(rows) == rows_max else None
            if len(rows) < rows_max:
                return

    async def _settle_one(self, kind: str, row: Any, settle: Callable[[Any], Awaitable[str]]) -> None:
        try:
            result = await settle(row)
        except Unsettled as error:
            self._unsettled(kind, row, error.reason, error)
            return
        except ApiError as error:  # the shard is down or overloaded
            self._unsettled(kind, row, error.code.lower(), error)
            return
        except Exception as error:  # the gateway failed, or a bug: logged, counted, retried next pass
            self._unsettled(kind, row, type(error).__name__, error)
            return
        if result in ("pending", "rejected", "still_unknown"):
            if result != "still_unknown":
                self._unsettled(kind, row, result, None)
            return
        RESOLVED.labels("refund_retried" if kind == "pending_refund" else result).inc()

    @staticmethod
    def _unsettled(kind: str, row: Any, reason: str, error: BaseException | None) -> None:
        subject = getattr(row, "idempotency_key", None) or getattr(row, "hold_id", None)
        log.warning("checkout resolver could not settle %s %s (%s): %s", kind, subject, reason, error or reason)
        UNSETTLED.labels(kind, reason).inc()
