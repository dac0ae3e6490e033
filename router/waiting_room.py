"""The waiting room (API.md "Waiting room", DESIGN §7): a fair line in Redis in front of a
queue-mode event, the waiting list after a sell-out, and the admission tokens that let their
buyers hold.

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

Stock-aware: the admitter never has admissions for more tickets outstanding (admitted, not yet
used for a hold: `holds_api` marks them used) than `queue_admit_stock_factor` × the event's
available tickets, from the worker's availability snapshot (router/snapshots.py,
`read_snapshot_s`; an admission used less than that long ago still counts, since the cached stock
may not show its hold yet). An admission from the line counts as one ticket, one from the waiting
list as the quantity it is for.

Sold out means *nothing left to hold now*: with no ticket available, every user waiting in the
line reads `"status": "sold_out"` and keeps the place, even while holds are out that may still
come back. API.md's parenthetical reads "nothing left and no holds that may come back"; we answer
earlier on purpose. The issue's acceptance wants every waiting user told within 2 s of the last
ticket being held (while 50 holds are outstanding), and that answer is what lets them choose the
waiting list, to which released holds then go first. An event whose holds all lapse is not sold
out again: tickets become available, and admission resumes in order.

The waiting list: a join on a sold-out event with `{"waiting_list": {"quantity": n}}` (n from 1 to
the event's `per_person_limit` and `hold_quantity_max`) moves the user from the line, keeping the
line's ticket (so the list is in arrival order), or from nowhere, to the waiting list; joining
again keeps the place and takes the new quantity (also when tickets are back but fewer than the
user wanted: asking for fewer lets the admitter offer them). For anyone not on the list, on an
event that is not sold out, the body is ignored: it is an ordinary join, since the user can buy
now. Who is on the list answers
`{"status": "waiting_list", "position": n}` and is never dropped for not polling (they asked to be
offered tickets, as on pretix's waiting list). The admitter serves the waiting list before the
line, in order, admitting each entry whose quantity fits in what the stock can serve; one that
does not fit is passed over, not waited for. The trade-off: when tickets come back one at a time,
a request for four may be passed over again and again by requests for one (starvation); waiting
for it instead would leave tickets unsold behind one large request. The token of a waiting-list
admission carries its quantity, and `POST /v1/holds` refuses a hold for more tickets (422); it
caps each hold, the per-person limit caps the sum. An unused admission ages out after
`token_seconds` like any other, and its user then reads `expired`.

ETA error: the first answer that gives a user a position in the line records when it was given and
its ETA (position ÷ rate, as shown); the user's first `admitted` answer returns them once, and the
router observes |actual − predicted| in `ticketing_queue_eta_error_seconds`, labelled `late`
(admitted after the ETA) or `early` (on time or before). Users admitted at once never saw an ETA
and are not counted; moving to the waiting list discards the ETA. A user who waited through a
sell-out is counted late by the time the event was sold out: the ETA cannot foresee returns.

Fair start: who joins before the sale opens (the earliest public sale window) waits unplaced
(`"position": null`); the first step after the opening places them in a random order — a seeded
Fisher-Yates in the script, its seed kept in Redis and logged, `opening_order` recomputes it —
ahead of everyone who joins later, FIFO.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from uuid import UUID

from prometheus_client import Counter, Histogram
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from cluster.queue_keys import event_keys
from cluster.settings import Settings
from router.http_metrics import at_zero
from router.problems import ApiError

LUA = Path(__file__).resolve().parent.parent / "lua"
log = logging.getLogger(__name__)

SCRIPT = (LUA / "waiting_room.lua").read_text()
SPEND_SCRIPT = (LUA / "waiting_room_spend.lua").read_text()

# The answers of a join or poll (`QueueStep.status`) and what marking an admission used may end as;
# each series exists at 0 from the start (`at_zero`), so "line full" reads 0, not "no data".
STEP_KINDS = ("join", "poll")
STEP_STATUSES = ("waiting", "sold_out", "waiting_list", "early", "admitted", "expired", "full")
SPEND_RESULTS = ("marked", "already", "failed")
STEPS = at_zero(Counter("ticketing_queue_steps_total", "Waiting-room joins and polls by answer.", ["kind", "status"]),
                *((kind, status) for kind in STEP_KINDS for status in STEP_STATUSES))
ADMITTED = Counter("ticketing_queue_admitted_total", "Users the waiting room admitted (waiting list included).")
LINE_LENGTH = Histogram("ticketing_queue_line_length", "Users waiting in the line, as each join or poll saw it.",
                        buckets=(10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000))
DROPPED = Counter("ticketing_queue_dropped_total", "Waiting users dropped for not polling.")
SHUFFLED = Counter("ticketing_queue_shuffled_total", "Early joiners placed in random order at a sale's opening.")
SPENT = at_zero(Counter("ticketing_queue_admissions_used_total",
                        "Holds made with a waiting-room admission, by whether it was marked used.", ["result"]),
                *SPEND_RESULTS)
WAITLIST_LENGTH = Histogram("ticketing_queue_waitlist_length",
                            "Users on the waiting list after a sell-out, as each join or poll saw it.",
                            buckets=(1, 10, 100, 1_000, 10_000, 100_000, 1_000_000))
WAITLIST_ADMITTED = Counter("ticketing_queue_waitlist_admitted_total",
                            "Users admitted from the waiting list (released tickets offered in order).")
ETA_ERROR = Histogram("ticketing_queue_eta_error_seconds",
                      "How far the first ETA a waiting user was given missed their admission, by direction "
                      "(late: admitted after it; early: on time or before).", ["direction"],
                      buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1_800, 3_600))


@dataclass(frozen=True, slots=True)
class QueueStep:
    # waiting | sold_out (in line, nothing available) | waiting_list | early (joined before the
    # opening: no position yet) | admitted | expired | full
    status: str
    position: int | None = None
    admitted_at_s: float | None = None
    quantity_max: int = 0  # admitted from the waiting list: the tickets the admission is for (0: no limit)
    line_length: int = 0


@dataclass(frozen=True, slots=True)
class StepArguments:
    """`lua/waiting_room.lua`'s ARGV, in its order (its header says what each one means)."""

    now_ms: int
    user: str
    join: bool
    rate: int
    burst: int
    idle_ms: int
    admitted_ms: int
    scan_max: int
    waiting_max: int
    key_ttl_ms: int
    cap: int
    settle_ms: int
    opens_ms: int
    seed: int
    waitlist_quantity: int = 0
    sold_out: bool = False

    def argv(self) -> list[str | int]:
        return [self.now_ms, self.user, int(self.join), self.rate, self.burst, self.idle_ms, self.admitted_ms,
                self.scan_max, self.waiting_max, self.key_ttl_ms, self.cap, self.settle_ms, self.opens_ms, self.seed,
                self.waitlist_quantity, int(self.sold_out)]


class StepReply(NamedTuple):
    """What `lua/waiting_room.lua` returns, in its order."""

    status: str
    value: int
    admitted_now: int
    expired_now: int
    line_length: int
    shuffled_now: int
    waitlist_length: int
    waitlist_admitted_now: int
    quantity: int
    placed_ms: int
    eta_s: int

    @classmethod
    def of(cls, raw: list[Any]) -> StepReply:
        status = raw[0].decode() if isinstance(raw[0], bytes) else str(raw[0])
        return cls(status, *(int(value) for value in raw[1:]))


def user_digest(user_id: str) -> str:
    return hashlib.blake2b(user_id.encode(), digest_size=16).hexdigest()


PARK_MILLER_MODULUS = 2_147_483_647  # the shuffle's generator: x -> 48271 x mod (2^31 - 1)


def opening_order(digests: list[str], seed: int) -> list[str]:
    """The line order `lua/waiting_room.lua` gives those who joined before the opening, from the
    seed it keeps (and the router logs): Fisher-Yates over the sorted digests."""
    members = sorted(digests)
    state = seed
    for i in range(len(members), 1, -1):
        state = state * 48271 % PARK_MILLER_MODULUS
        j = state % i
        members[i - 1], members[j] = members[j], members[i - 1]
    return members


class WaitingRoom:
    def __init__(self, runtime: Any, settings: Settings) -> None:
        self.runtime = runtime  # its Redis client is made at start-up, after this object
        self.settings = settings
        self._scripts: dict[str, AsyncScript] = {}

    def _script(self, source: str) -> AsyncScript:
        redis = self.runtime.redis
        if redis is None:
            raise _unavailable("the waiting room has no Redis configured", self.settings.retry_after_s)
        script = self._scripts.get(source)
        if script is None or script.registered_client is not redis:
            script = self._scripts[source] = redis.register_script(source)
        return script

    async def step(self, event_id: UUID, user_id: str, *, join: bool, admit_per_second: int,
                   token_seconds: int, cap: int, opens_at_s: float, sold_out: bool = False,
                   waitlist_quantity: int = 0) -> QueueStep:
        """Run the event's admitter (admissions for at most `cap` tickets outstanding, -1: no limit;
        the line opens, shuffling who joined early, at `opens_at_s`), then join or poll for
        `user_id`; `sold_out`: nothing is available now; `waitlist_quantity` > 0: join the waiting
        list for that many tickets (when sold out), or change the quantity of a user on it."""
        script = self._script(SCRIPT)
        settings = self.settings
        arguments = StepArguments(
            now_ms=int(time.time() * 1000), user=user_digest(user_id), join=join, rate=admit_per_second,
            burst=max(1, math.floor(admit_per_second * settings.queue_burst_s)),
            idle_ms=int(settings.queue_idle_s * 1000), admitted_ms=token_seconds * 1000,
            scan_max=settings.queue_scan_max, waiting_max=settings.queue_waiting_max,
            key_ttl_ms=int(settings.queue_key_ttl_s * 1000), cap=cap,
            settle_ms=int(settings.read_snapshot_s * 1000) + 100,
            opens_ms=int(opens_at_s * 1000), seed=secrets.randbelow(PARK_MILLER_MODULUS - 1) + 1,
            waitlist_quantity=waitlist_quantity, sold_out=sold_out)
        keys = event_keys(event_id)
        try:
            reply = StepReply.of(await script(keys, arguments.argv()))
        except (RedisError, OSError, TimeoutError) as error:
            raise _unavailable(f"waiting room: {type(error).__name__}: {error}", settings.retry_after_s) from None
        await self._observe(event_id, reply, join)
        if reply.status == "admitted":
            return QueueStep(reply.status, admitted_at_s=reply.value / 1000, quantity_max=reply.quantity,
                             line_length=reply.line_length)
        if reply.status in ("waiting", "sold_out", "waiting_list"):
            return QueueStep(reply.status, position=reply.value, line_length=reply.line_length)
        return QueueStep(reply.status, line_length=reply.line_length)

    async def _observe(self, event_id: UUID, reply: StepReply, join: bool) -> None:
        """The step's metrics; the opening's seed is logged (the order can be recomputed from it)."""
        STEPS.labels("join" if join else "poll", reply.status).inc()
        LINE_LENGTH.observe(reply.line_length)
        WAITLIST_LENGTH.observe(reply.waitlist_length)
        if reply.admitted_now:
            ADMITTED.inc(reply.admitted_now)
        if reply.waitlist_admitted_now:
            WAITLIST_ADMITTED.inc(reply.waitlist_admitted_now)
        if reply.expired_now:
            DROPPED.inc(reply.expired_now)
        if reply.status == "admitted" and reply.placed_ms:
            error_s = (reply.value - reply.placed_ms) / 1000 - reply.eta_s
            ETA_ERROR.labels("late" if error_s > 0 else "early").observe(abs(error_s))
        if reply.shuffled_now:
            seed = await self.runtime.redis.hget(event_keys(event_id)[4], "shuffle_seed")
            SHUFFLED.inc(reply.shuffled_now)
            log.info("waiting room of %s opened: %d early joiners shuffled with seed %s", event_id,
                     reply.shuffled_now, seed.decode() if isinstance(seed, bytes) else seed)

    async def spend(self, event_id: UUID, user_id: str) -> None:
        """`user_id` held with its admission: it no longer counts against the stock. Best effort:
        a failure only leaves the admission counted until it expires, so it is logged, not raised."""
        try:
            keys = event_keys(event_id)
            marked = await self._script(SPEND_SCRIPT)([keys[2], keys[5], keys[8]],
                                                      [user_digest(user_id), int(time.time() * 1000)])
        except (ApiError, RedisError, OSError, TimeoutError) as error:
            SPENT.labels("failed").inc()
            log.warning("waiting room: could not mark %s's admission used: %s", event_id, error)
            return
        SPENT.labels("marked" if marked else "already").inc()


def _unavailable(reason: str, retry_after_s: int) -> ApiError:
    return ApiError(503, "SHARD_UNAVAILABLE", "the waiting room is not answering; retry later",
                    headers={"Retry-After": str(retry_after_s)}, reason=reason)
