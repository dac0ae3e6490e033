"""The waiting room's routes (API.md "Waiting room"): join (optionally onto the waiting list of a
sold-out event) and poll, both hot routes of the edge. What the answers mean, and why `sold_out`
means nothing available now: router/waiting_room.py."""

from __future__ import annotations

import math
import time
from typing import Any
from uuid import UUID

from prometheus_client import Counter

from actors.event_bodies import parse_time
from actors.protocol import EventDocument, GetEvent
from router.auth import BUYERS, Principal, authorize
from router.deps import call_shard, client_of, parse_body, settings_of
from router.edge import HotReply, HotRequest, HotRoute
from router.events_api import availability_snapshot
from router.problems import ApiError
from router.schemas import QueueJoin
from router.views import expect, iso
from router.waiting_room import QueueStep, WaitingRoom

SOLD_OUT_ANSWERS = Counter("ticketing_queue_sold_out_answers_total",
                           "Waiting users told the event is sold out: nothing available now (they keep their place).")


class EventCache:
    """Per event, something read from its shard, kept `ttl_s` per worker (at most `entries_max`
    events; emptied when full): every poll must not cost a shard read. One for each event's
    `queue` settings."""

    def __init__(self, ttl_s: float, entries_max: int) -> None:
        self.ttl_s = ttl_s
        self.entries_max = entries_max
        self._entries: dict[UUID, tuple[float, Any]] = {}

    def get(self, event_id: UUID) -> Any:
        entry = self._entries.get(event_id)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, event_id: UUID, value: Any) -> None:
        if len(self._entries) >= self.entries_max:
            self._entries.clear()
        self._entries[event_id] = (time.monotonic() + self.ttl_s, value)


async def _queue_settings(request: HotRequest, event_id: UUID) -> dict[str, Any]:
    cache: EventCache = request.app.state.queue_settings
    queue: dict[str, Any] | None = cache.get(event_id)
    if queue is None:
        shard_id = client_of(request).shard_map.shard_of(event_id)
        reply = await call_shard(request, shard_id, GetEvent(event_id), read=True)
        document = expect(reply, EventDocument, "EVENT_NOT_FOUND", settings_of(request).retry_after_s).document
        queue = {**(document.get("queue") or {}), "opens_at_s": _opens_at_s(document.get("sale_windows") or []),
                 "per_person_limit": document.get("per_person_limit")}
        cache.put(event_id, queue)
    return queue


def _opens_at_s(windows: list[dict[str, Any]]) -> float:
    """When the public sale opens: the earliest window without a presale code (0: no such window,
    the sale is open). Presale buyers hold with their code; the line is for the public sale."""
    starts = [parse_time(window["starts_at"]) or 0.0 for window in windows if not window.get("code")]
    return min(starts) if starts else 0.0


async def _available(request: HotRequest, event_id: UUID) -> int:
    """Tickets of the event available now over its sections, from the availability snapshot."""
    view, _ = await availability_snapshot(request, event_id)
    return sum(section.available for section in view.sections)


async def _answer(request: HotRequest, principal: Principal, *, join: bool, waitlist_quantity: int = 0) -> HotReply:
    event_id = request.path_params["event_id"]
    queue = await _queue_settings(request, event_id)
    if not queue.get("enabled"):
        raise ApiError(409, "QUEUE_NOT_ENABLED", "this event sells without a waiting room: hold directly")
    settings = settings_of(request)
    if waitlist_quantity:
        _check_waitlist_quantity(waitlist_quantity, queue.get("per_person_limit"), settings.hold_quantity_max)
    available = await _available(request, event_id)
    cap = math.ceil(available * settings.queue_admit_stock_factor)
    room: WaitingRoom = request.app.state.waiting_room
    rate, token_seconds = int(queue["admit_per_second"]), int(queue["token_seconds"])
    sold_out = available == 0  # nothing to hold now; holds may come back (router/waiting_room.py)
    step = await room.step(event_id, principal.user_id, join=join, admit_per_second=rate, token_seconds=token_seconds,
                           cap=cap, opens_at_s=queue["opens_at_s"], sold_out=sold_out,
                           waitlist_quantity=waitlist_quantity)
    if step.status == "sold_out":
        SOLD_OUT_ANSWERS.inc()
        return HotReply(200, {"status": "sold_out"})  # the place is kept: returns reopen admission
    return HotReply(200, _body(request, step, principal.user_id, event_id, rate, token_seconds))


def _check_waitlist_quantity(quantity: int, per_person_limit: int | None, hold_quantity_max: int) -> None:
    limit = min(hold_quantity_max, per_person_limit or hold_quantity_max)
    if quantity > limit:
        raise ApiError(422, "VALIDATION_ERROR", f"waiting_list.quantity must be between 1 and {limit} for this event",
                       errors=[{"loc": ["body", "waiting_list", "quantity"], "msg": f"at most {limit}",
                                "type": "less_than_equal"}])


def _body(request: HotRequest, step: QueueStep, user_id: str, event_id: UUID, rate: int,
          token_seconds: int) -> dict[str, Any]:
    if step.status == "admitted" and step.admitted_at_s is not None:
        token, expires_at_s = request.app.state.queue_tokens.issue(user_id, event_id, token_seconds,
                                                                   now_s=step.admitted_at_s,
                                                                   quantity_max=step.quantity_max)
        return {"status": "admitted", "token": token, "expires_at": iso(expires_at_s)}
    if step.status == "early":
        return {"status": "waiting", "position": None, "eta_seconds": None}
    if step.status == "waiting" and step.position is not None:
        return {"status": "waiting", "position": step.position, "eta_seconds": math.ceil(step.position / rate)}
    if step.status == "waiting_list":
        return {"status": "waiting_list", "position": step.position}
    if step.status == "full":
        retry_after_s = settings_of(request).retry_after_s
        raise ApiError(429, "RATE_LIMITED", "the waiting room is full; retry later",
                       headers={"Retry-After": str(retry_after_s)})
    return {"status": "expired"}


async def join_queue(request: HotRequest) -> HotReply:
    """Join the event's waiting room (joining again keeps the place); on a sold-out event, with
    `{"waiting_list": {"quantity": n}}`, its waiting list."""
    principal = authorize(request, BUYERS)
    body = await _join_body(request)
    quantity = body.waiting_list.quantity if body.waiting_list is not None else 0
    return await _answer(request, principal, join=True, waitlist_quantity=quantity)


async def _join_body(request: HotRequest) -> QueueJoin:
    """The join's optional body: none (or only white space) is an ordinary join, like `{}`."""
    if not (await request.body()).strip():
        return QueueJoin()
    return await parse_body(request, QueueJoin)


async def poll_queue(request: HotRequest) -> HotReply:
    """Where the caller stands in the event's waiting room or on its waiting list."""
    return await _answer(request, authorize(request, BUYERS), join=False)


HOT_ROUTES = [
    HotRoute("POST", "/v1/events/{event_id}/queue", join_queue, "Join the event's waiting room (buyer)",
             ("waiting room",)),
    HotRoute("GET", "/v1/events/{event_id}/queue", poll_queue, "Your place in the event's waiting room (buyer)",
             ("waiting room",)),
]
