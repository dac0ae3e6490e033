"""The webhook relay: delivers each shard's outbox rows to the webhooks that asked for them.

Every router process runs one (a background task of the app's lifespan), and every
`webhook_relay_interval_s` it takes each shard in turn; only the relay that holds the shard's
advisory lock (`shards.webhooks.RELAY_LOCK_KEY`) reads that shard's outbox, so a shard has one
reader at a time and rows are taken in commit order (``outbox_id``). A round reads the oldest
`webhook_relay_batch_rows_max` unpublished rows and walks each event's rows in order: a row is
delivered to every live webhook of the event's organizer subscribed to its topic, and an event's
next row waits until every delivery of the row before it succeeded or was dead-lettered, so a
consumer sees one event's changes in the order they happened. Different events proceed
concurrently, at most `webhook_deliveries_in_flight_max` POSTs at once per process.

A delivery follows the Standard Webhooks specification: ``POST`` of
``{"type", "timestamp", "data"}`` signed by the ``standardwebhooks`` package with the webhook's
secret, headers ``webhook-id`` (the same on every attempt: ``msg_<shard>_<outbox_id>``, for the
consumer's deduplication), ``webhook-timestamp`` and ``webhook-signature``. A 2xx answer is
success; anything else (another status, a timeout, a refused connection) is a failed attempt,
retried after `webhook_retry_base_s` × 2^(attempt-1) (at most `webhook_retry_max_s`) until
`webhook_attempts_max` attempts, after which the delivery is dead (``result: dead``), counted and
alerted on (`WebhookDeadLetters`). Each attempt is a row in ``webhook_deliveries``; a row whose
deliveries are all done is marked published.

At least once, not exactly once: a relay that dies between a consumer's 2xx and recording it sends
that delivery again (the same ``webhook-id``). A webhook deleted while a row waits gets nothing
more; one registered while rows wait receives them.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from prometheus_client import Counter, Gauge
from standardwebhooks import Webhook as Signer

from cluster.settings import Settings
from router.http_metrics import at_zero
from router.periodic import ShardRounds
from shards.pools import QUERY_ERRORS
from shards.webhooks import OutboxRelayQueries, OutboxRow, Webhook, WebhookRegistry

log = logging.getLogger(__name__)

RESULTS = ("succeeded", "failed", "dead")
DELIVERIES = at_zero(Counter("ticketing_webhook_deliveries_total",
                             "Webhook delivery attempts, by result (failed: retried later; dead: the last attempt).",
                             ["result"]), *RESULTS)
PUBLISHED = Counter("ticketing_outbox_published_total", "Outbox rows whose every delivery is done.")
OUTBOX_LAG = Gauge("ticketing_outbox_lag_seconds",
                   "Age of the oldest unpublished outbox row (0 when none waits), by shard.",
                   ["shard"], multiprocess_mode="livemax")
ERROR_CHARS_MAX = 500  # of an error's text kept in the delivery log


class WebhookRelay:
    def __init__(self, registry: WebhookRegistry, queries: OutboxRelayQueries, settings: Settings) -> None:
        self.registry = registry
        self.queries = queries
        self.settings = settings
        self._rounds = ShardRounds("webhook relay", settings.shard_count, settings.webhook_relay_interval_s,
                                   self._round)
        self._in_flight = asyncio.Semaphore(settings.webhook_deliveries_in_flight_max)
        self._client: httpx.AsyncClient | None = None
        for shard_id in range(settings.shard_count):
            OUTBOX_LAG.labels(str(shard_id)).set(0)

    def start(self) -> None:
        timeout_s = self.settings.webhook_delivery_timeout_s
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s), follow_redirects=False, trust_env=False,
            limits=httpx.Limits(max_connections=self.settings.webhook_deliveries_in_flight_max))
        self._rounds.start()

    async def stop(self) -> None:
        await self._rounds.stop()
        if self._client is not None:
            await self._client.aclose()

    async def _round(self, shard_id: int) -> None:
        await self.relay_shard(shard_id)
        OUTBOX_LAG.labels(str(shard_id)).set(await self.queries.oldest_unpublished_age_s(shard_id))

    async def relay_shard(self, shard_id: int) -> None:
        """One round on one shard, if no other relay holds it (module docstring)."""
        async with self.queries.holding(shard_id, self.settings.db_call_timeout_s) as connection:
            if connection is None:
                return
            rows = await self.queries.unpublished(connection, self.settings.webhook_relay_batch_rows_max)
            by_event: dict[Any, list[OutboxRow]] = {}
            for row in rows:
                by_event.setdefault(row.event_id, []).append(row)
            done = await asyncio.gather(*(self._relay_event(shard_id, event_rows) for event_rows in by_event.values()))
            published = [outbox_id for ids in done for outbox_id in ids]
            if published:
                await self.queries.mark_published(connection, published)
                PUBLISHED.inc(len(published))

    async def _relay_event(self, shard_id: int, rows: list[OutboxRow]) -> list[int]:
        """Deliver one event's rows in order, stopping at the first not yet done: the ids done."""
        done = []
        for row in rows:
            try:
                if not await self._relay_row(shard_id, row):
                    break
            except QUERY_ERRORS as error:
                log.warning("webhook relay: outbox row %s of shard %s: %s", row.outbox_id, shard_id, error)
                break
            done.append(row.outbox_id)
        return done

    async def _relay_row(self, shard_id: int, row: OutboxRow) -> bool:
        """Attempt the row's due deliveries; True when every delivery succeeded or is dead."""
        webhooks = await self.registry.subscribed(row.organizer_id, row.topic)
        if not webhooks:
            return True
        last = await self.registry.last_attempts(shard_id, row.outbox_id)
        now = datetime.now(UTC)
        due, waiting = [], False
        for webhook in webhooks:
            attempt, result, next_attempt_at = last.get(webhook.webhook_id, (0, "failed", None))
            if result in ("succeeded", "dead"):
                continue
            if next_attempt_at is not None and next_attempt_at > now:
                waiting = True
                continue
            due.append((webhook, attempt + 1))
        outcomes = await asyncio.gather(*(self._deliver(shard_id, row, webhook, attempt) for webhook, attempt in due))
        return not waiting and all(outcomes)

    async def _deliver(self, shard_id: int, row: OutboxRow, webhook: Webhook, attempt: int) -> bool:
        """One attempt, logged: True when it is final (succeeded, or dead)."""
        message_id = f"msg_{shard_id}_{row.outbox_id}"
        body = orjson.dumps({"type": row.topic, "timestamp": row.created_at.isoformat().replace("+00:00", "Z"),
                             "data": row.payload}).decode()
        status_code, error = await self._post(webhook, message_id, body)
        if status_code is not None and 200 <= status_code < 300:
            result, next_attempt_at = "succeeded", None
        elif attempt >= self.settings.webhook_attempts_max:
            result, next_attempt_at = "dead", None
            log.warning("webhook %s: message %s dead after %s attempts (%s)", webhook.webhook_id, message_id,
                        attempt, error or status_code)
        else:
            result, next_attempt_at = "failed", datetime.now(UTC) + timedelta(seconds=self.backoff_s(attempt))
        DELIVERIES.labels(result).inc()
        await self.registry.record_attempt(webhook.webhook_id, shard_id, row.outbox_id, message_id, row.event_id,
                                           row.topic, attempt, result, status_code, error, next_attempt_at)
        return result != "failed"

    def backoff_s(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1-based): exponential, capped."""
        return min(self.settings.webhook_retry_base_s * 2 ** (attempt - 1), self.settings.webhook_retry_max_s)

    async def _post(self, webhook: Webhook, message_id: str, body: str) -> tuple[int | None, str | None]:
        if self._client is None:
            raise RuntimeError("WebhookRelay.start() was not called")
        sent_at = datetime.now(UTC)
        headers = {"content-type": "application/json", "webhook-id": message_id,
                   "webhook-timestamp": str(int(sent_at.timestamp())),
                   "webhook-signature": Signer(webhook.secret).sign(message_id, sent_at, body)}
        async with self._in_flight:
            try:
                response = await self._client.post(webhook.url, content=body.encode(), headers=headers)
            except httpx.HTTPError as error:
                return None, f"{type(error).__name__}: {error}"[:ERROR_CHARS_MAX]
        if 200 <= response.status_code < 300:
            return response.status_code, None
        return response.status_code, f"HTTP {response.status_code}"
