"""Events, availability and the seat map (API.md "Events", "Availability and seat map")."""

from __future__ import annotations

import math
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl
from uuid import UUID

from fastapi import APIRouter, Request
from pydantic import TypeAdapter, ValidationError

from actors.protocol import (
    AvailabilityView,
    CreateEvent,
    EventDocument,
    GetAvailability,
    GetEvent,
    GetSeatMap,
    SeatMapView,
    UpdateEvent,
    attributed,
)
from cluster.settings import Settings
from router.auth import ANY_ROLE, ORGANIZERS, authorize
from router.deps import call_shard, caller_of, client_of, parse_body, settings_of
from router.edge import HotReply, HotRequest, HotRoute, Incoming
from router.jsonbody import JSONBody
from router.problems import PROBLEM, ApiError
from router.schemas import EventCreate, EventPatch, Identifier
from router.snapshots import ReadSnapshots
from router.views import availability_body, expect, seat_map_body

router = APIRouter(tags=["events"])


def _event_body(document: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in document.items() if key != "organizer_id"}


async def _event(request: Request, event_id: UUID) -> dict[str, Any]:
    shard_id = client_of(request).shard_map.shard_of(event_id)
    reply = await call_shard(request, shard_id, GetEvent(event_id), read=True)
    view = expect(reply, EventDocument, "EVENT_NOT_FOUND", settings_of(request).retry_after_s)
    return dict(view.document)


@router.post("/v1/events", status_code=201, summary="Create an event (organizer, admin)",
             responses={401: PROBLEM, 403: PROBLEM, 422: PROBLEM, 503: PROBLEM})
async def create_event(request: Request) -> JSONBody:
    principal = authorize(request, ORGANIZERS)
    body = await parse_body(request, EventCreate)
    settings = settings_of(request)
    if not settings.min_hold_seconds <= body.hold_seconds <= settings.max_hold_seconds:
        raise ApiError(422, "VALIDATION_ERROR",
                       f"hold_seconds must be in [{settings.min_hold_seconds}, {settings.max_hold_seconds}]")
    seats = sum(row.seats for section in body.sections if section.kind == "seated" for row in section.rows)
    if seats > settings.event_seats_max:
        raise ApiError(422, "VALIDATION_ERROR", f"{seats} seats exceed the maximum of {settings.event_seats_max}")
    event_id = uuid.uuid4()
    shard_id = client_of(request).shard_map.shard_of(event_id)
    command = CreateEvent(event_id, principal.user_id, body.model_dump(mode="json"))
    reply = await call_shard(request, shard_id, attributed(command, caller_of(request, principal)))
    document = expect(reply, EventDocument, "EVENT_NOT_FOUND", settings.retry_after_s).document
    await request.app.state.events_cache.invalidate()  # the listing's cached pages (router/events_cache.py)
    return JSONBody(_event_body(document), status_code=201)


@router.get("/v1/events/{event_id}", summary="One event", responses={404: PROBLEM, 422: PROBLEM})
async def get_event(request: Request, event_id: UUID) -> JSONBody:
    return JSONBody(_event_body(await _event(request, event_id)))


@router.patch("/v1/events/{event_id}", summary="Change status, queue settings or sale windows (organizer)",
              responses={401: PROBLEM, 403: PROBLEM, 404: PROBLEM, 409: PROBLEM, 422: PROBLEM})
async def patch_event(request: Request, event_id: UUID) -> JSONBody:
    principal = authorize(request, ORGANIZERS)
    body = await parse_body(request, EventPatch)
    document = await _event(request, event_id)
    if principal.role != "admin" and document.get("organizer_id") != principal.user_id:
        raise ApiError(403, "FORBIDDEN", "only the event's organizer may change it")
    patch = body.model_dump(mode="json", exclude_none=True)
    command = UpdateEvent(event_id, principal.user_id, patch.get("status"), patch.get("queue"),
                          patch.get("sale_windows"))
    shard_id = client_of(request).shard_map.shard_of(event_id)
    reply = await call_shard(request, shard_id, attributed(command, caller_of(request, principal)))
    updated = expect(reply, EventDocument, "EVENT_NOT_FOUND", settings_of(request).retry_after_s).document
    await request.app.state.events_cache.invalidate()  # the listing's cached pages (router/events_cache.py)
    return JSONBody(_event_body(updated))


async def availability_snapshot(request: Incoming, event_id: UUID) -> tuple[AvailabilityView, float]:
    """The event's availability and when it was read: this worker's snapshot (router/snapshots.py)
    or, when it is older than `read_snapshot_s`, a fresh read of the shard actor's memory."""

    async def read() -> AvailabilityView:
        shard_id = client_of(request).shard_map.shard_of(event_id)
        reply = await call_shard(request, shard_id, GetAvailability(event_id), read=True)
        view: AvailabilityView = expect(reply, AvailabilityView, "EVENT_NOT_FOUND", settings_of(request).retry_after_s)
        return view

    snapshots: ReadSnapshots = request.app.state.read_snapshots
    view, as_of_s = await snapshots.get(("availability", event_id), read)
    return view, as_of_s


async def availability(request: HotRequest) -> HotReply:
    """What is left, per section: public, from a snapshot at most `read_snapshot_s` old (a hot route)."""
    view, as_of_s = await availability_snapshot(request, request.path_params["event_id"])
    return HotReply(200, availability_body(view, as_of_s), freshness_headers(settings_of(request), as_of_s))


def freshness_headers(settings: Settings, as_of_s: float) -> tuple[tuple[bytes, bytes], ...]:
    """How old a public read is, for browsers and CDNs (RFC 9111): `Age` in whole seconds since
    its `as_of`, and `Cache-Control` letting a shared cache keep it as long as the router does
    (`read_snapshot_s`, rounded up to whole seconds); `no-cache` when the router keeps none."""
    age = max(0, int(time.time() - as_of_s))
    ttl_s = settings.read_snapshot_s
    control = b"public, max-age=%d" % math.ceil(ttl_s) if ttl_s > 0 else b"no-cache"
    return (b"cache-control", control), (b"age", str(age).encode())


_SECTION = TypeAdapter(Identifier)


def _section_query(query_string: bytes) -> str | None:
    """The `section` query parameter (the last one when repeated, as Starlette reads it)."""
    if not query_string:
        return None
    values = [value for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
              if name == "section"]
    if not values:
        return None
    try:
        return _SECTION.validate_python(values[-1])
    except ValidationError as error:
        message = error.errors(include_url=False)[0]["msg"]
        raise ApiError(422, "VALIDATION_ERROR", f"query.section: {message}",
                       errors=[{"loc": ["query", "section"], "msg": message, "type": "value_error"}]) from None


async def seats(request: HotRequest) -> HotReply:
    """The seat map, one string per row: public, from a snapshot at most `read_snapshot_s` old (a
    hot route)."""
    event_id = request.path_params["event_id"]
    section = _section_query(request.query_string)

    async def read() -> SeatMapView:
        shard_id = client_of(request).shard_map.shard_of(event_id)
        reply = await call_shard(request, shard_id, GetSeatMap(event_id, section), read=True)
        seat_map: SeatMapView = expect(reply, SeatMapView, "EVENT_NOT_FOUND", settings_of(request).retry_after_s)
        return seat_map

    snapshots: ReadSnapshots = request.app.state.read_snapshots
    view, as_of_s = await snapshots.get(("seats", event_id, section), read)
    if section is not None and not view.sections:
        raise ApiError(422, "VALIDATION_ERROR", f"event has no seated section {section!r}")
    return HotReply(200, seat_map_body(view), freshness_headers(settings_of(request), as_of_s))


HOT_ROUTES = [
    HotRoute("GET", "/v1/events/{event_id}/availability", availability, "What is left, per section (public)",
             ("events",)),
    HotRoute("GET", "/v1/events/{event_id}/seats", seats, "Seat map: one string per row (public)", ("events",),
             query={"section": {**_SECTION.json_schema(), "description": "Only this seated section"}}),
]


@router.get("/v1/me", tags=["auth"], summary="Who the bearer token says you are")
async def me(request: Request) -> JSONBody:
    principal = authorize(request, ANY_ROLE)
    return JSONBody({"sub": principal.user_id, "role": principal.role})
