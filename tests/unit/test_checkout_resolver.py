"""The resolver's scans cannot be starved (issue 10, defect 4).

A pass used to read the 100 oldest pinned holds (`LIMIT 100`) and settle them; holds it could not
settle stayed the oldest, so 100 of them hid every later hold for ever. Now scans are keyset
pages that step over what could not be settled (logged and counted), and the next pass starts
again from the oldest. The queries and the service are stand-ins here; the SQL is exercised by the
e2e checkout tests against a running cluster.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from cluster.settings import Settings
from router.checkout.service import Unsettled
from router.resolver import CheckoutResolver
from shards.checkout_queries import Cursor, PinnedHold

pytestmark = pytest.mark.unit

ROWS_PER_PAGE_MAX = Settings().checkout_resolver_page_rows_max
PAGES_PER_PASS_MAX = Settings().checkout_resolver_pass_pages_max
STUCK = ROWS_PER_PAGE_MAX  # a full page of holds nobody can settle, older than the rest
T0 = datetime(2027, 1, 1, tzinfo=UTC)


class Queries:
    def __init__(self, holds: list[PinnedHold]) -> None:
        self.holds = holds

    async def pinned_holds(self, shard_id: int, older_than_s: float, after: Cursor | None,
                           limit: int) -> list[PinnedHold]:
        rows = sorted(self.holds, key=lambda hold: hold.cursor)
        return [hold for hold in rows if after is None or hold.cursor > after][:limit]

    async def pending_refunds(self, *arguments: Any) -> list[Any]:
        return []

    async def unknown_charges(self, *arguments: Any) -> list[Any]:
        return []


class Service:
    def __init__(self, holds: list[PinnedHold]) -> None:
        self.queries = Queries(holds)
        self.settled: list[uuid.UUID] = []

    async def settle(self, shard_id: int, hold_id: uuid.UUID, user_id: str) -> str:
        if user_id == "stuck":
            raise Unsettled("fail", "IDEMPOTENCY_KEY_REUSED")
        self.settled.append(hold_id)
        self.queries.holds = [hold for hold in self.queries.holds if hold.hold_id != hold_id]
        return "failed"


def pinned(n: int, user: str) -> PinnedHold:
    hold_id = uuid.UUID(int=n + 1)
    return PinnedHold(hold_id, user, (T0 + timedelta(seconds=n), hold_id))


def unsettled_count() -> float:
    return REGISTRY.get_sample_value("ticketing_checkout_unsettled_total",
                                     {"kind": "pinned_hold", "reason": "IDEMPOTENCY_KEY_REUSED"}) or 0.0


def test_a_page_of_stuck_holds_does_not_hide_the_holds_behind_it() -> None:
    holds = [pinned(n, "stuck") for n in range(STUCK)] + [pinned(STUCK + n, "buyer") for n in range(5)]
    service = Service(holds)
    resolver = CheckoutResolver(None, service, Settings(shard_count=1))  # type: ignore[arg-type]
    counted = unsettled_count()
    asyncio.run(resolver.resolve_shard(0))
    assert sorted(service.settled) == sorted(hold.hold_id for hold in holds[STUCK:])
    assert unsettled_count() - counted == STUCK
    assert resolver._cursors[(0, "pinned_hold")] is None  # the next pass starts from the oldest again


def test_a_pass_is_bounded_and_the_next_one_continues_where_it_stopped() -> None:
    total = ROWS_PER_PAGE_MAX * PAGES_PER_PASS_MAX + 3
    service = Service([pinned(n, "stuck") for n in range(total - 1)] + [pinned(total, "buyer")])
    resolver = CheckoutResolver(None, service, Settings(shard_count=1))  # type: ignore[arg-type]
    asyncio.run(resolver.resolve_shard(0))
    assert service.settled == []
    asyncio.run(resolver.resolve_shard(0))
    assert service.settled == [uuid.UUID(int=total + 1)]
