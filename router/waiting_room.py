"""The waiting room (API.md "Waiting room", DESIGN §7): a fair line in Redis in front of a
queue-mode event, and the admission tokens that let its buyers hold.

`POST /v1/events/{id}/queue` joins (joining again keeps the place), `GET` polls; both are hot
routes (router/edge.py) and both are one call of `lua/waiting_room.lua`, which first runs the
event's admitter and then answers for the caller. The admitter is not a process: the event's
admission bucket lives in Redis and every step refills and spends it, so whichever worker of
whichever router calls, admission runs at the event's `admit_per_second` (at most
`queue_burst_s` of it at once after a quiet spell), in ticket order. A waiting user who has not
joined or polled for `queue_idle_s` is dropped when the line reaches them, without using an
admission, so people who left do not stall the line; they read `"status": "expired"` and may join
again at the back. An admitted user gets a token (router/queue_tokens.py: HMAC, bound to user and
event) that expires `token_seconds` after the admission, the same token on every poll, and sends
it as `X-Queue-Token` with `POST /v1/holds`, which the core refuses on a queue-mode event without
one (403 `QUEUE_TOKEN_REQUIRED`).

Users are stored by a digest of their id (fixed length, whatever the token's subject). The event's
queue settings come from its document (a shard read), cached per worker for
`queue_settings_cache_s`: enabling or disabling queue mode reaches every worker within that.
Redis not answering is 503 with Retry-After: without the line nobody can be admitted fairly.

Not built yet (issue 13): the shuffle of those who join before the sale opens, stock-aware
admission and `sold_out`, the waiting list after sell-out.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from prometheus_client import Counter
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from cluster.settings import Settings
from router.problems import ApiError

SCRIPT = (Path(__file__).resolve().parent.parent / "lua" / "waiting_room.lua").read_text()
KEY_PREFIX = "ticketing:queue"

STEPS = Counter("ticketing_queue_steps_total", "Waiting-room joins and polls by answer.", ["kind", "status"])
ADMITTED = Counter("ticketing_queue_admitted_total", "Users the waiting room admitted.")
DROPPED = Counter("ticketing_queue_dropped_total", "Waiting users dropped for not polling.")


@dataclass(frozen=True, slots=True)
class QueueStep:
    status: str  # waiting | admitted | expired | full
    position: int | None = None
    admitted_at_s: float | None = None
    line_length: int = 0


def user_digest(user_id: str) -> str:
    return hashlib.blake2b(user_id.encode(), digest_size=16).hexdigest()


class WaitingRoom:
    def __init__(self, runtime: Any, settings: Settings) -> None:
        self.runtime = runtime  # its Redis client is made at start-up, after this object
        self.settings = settings
        self._script: AsyncScript | None = None

    async def step(self, event_id: UUID, user_id: str, *, join: bool, admit_per_second: int,
                   token_seconds: int) -> QueueStep:
        """Run the event's admitter, then join or poll for `user_id`."""
        redis = self.runtime.redis
        retry_after_s = self.settings.retry_after_s
        if redis is None:
            raise _unavailable("the waiting room has no Redis configured", retry_after_s)
        if self._script is None or self._script.registered_client is not redis:
            self._script = redis.register_script(SCRIPT)
        settings = self.settings
        tag = f"{KEY_PREFIX}:{{{event_id}}}"
        keys = [f"{tag}:line", f"{tag}:seen", f"{tag}:admitted", f"{tag}:expired", f"{tag}:meta"]
        arguments: list[str | int] = [int(time.time() * 1000), user_digest(user_id), 1 if join else 0, admit_per_second,
                     max(1, math.floor(admit_per_second * settings.queue_burst_s)), int(settings.queue_idle_s * 1000),
                     token_seconds * 1000, settings.queue_scan_max, settings.queue_waiting_max,
                     int(settings.queue_key_ttl_s * 1000)]
        try:
            status, value, admitted_now, dropped_now, line_length = await self._script(keys, arguments)
        except (RedisError, OSError, TimeoutError) as error:
            raise _unavailable(f"waiting room: {type(error).__name__}: {error}", retry_after_s) from None
        status = status.decode() if isinstance(status, bytes) else str(status)
        STEPS.labels("join" if join else "poll", status).inc()
        if admitted_now:
            ADMITTED.inc(int(admitted_now))
        if dropped_now:
            DROPPED.inc(int(dropped_now))
        if status == "admitted":
            return QueueStep(status, admitted_at_s=int(value) / 1000, line_length=int(line_length))
        if status == "waiting":
            return QueueStep(status, position=int(value), line_length=int(line_length))
        return QueueStep(status, line_length=int(line_length))


def _unavailable(reason: str, retry_after_s: int) -> ApiError:
    return ApiError(503, "SHARD_UNAVAILABLE", "the waiting room is not answering; retry later",
                    headers={"Retry-After": str(retry_after_s)}, reason=reason)
