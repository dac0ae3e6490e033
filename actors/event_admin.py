"""Organizer commands handled by the actor shell: creating an event and changing its settings.

The core decides everything about inventory; these only translate an API document into the
core's layout and settings, and into the rows the writer inserts with the same fenced commit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from actors.event_bodies import (
    event_row,
    layout_of,
    normalized_sections,
    queue_required,
    section_rows,
    settings_of,
    windows_of,
)
from actors.inventory import ErrorCode, EventStatus, LayoutError, Rejection
from actors.inventory.commands import ChangeEventStatus
from actors.inventory.results import Outcome
from actors.protocol import CreateEvent, EventDocument, ShellOutcome, UpdateEvent
from actors.reads import with_cancellation
from shards.records import EventFieldsChanged, EventRowsCreated
from shards.slots import slot_of

if TYPE_CHECKING:
    from actors.catalog import EventBody, ShardState


def _reject(code: ErrorCode, detail: str) -> ShellOutcome:
    return ShellOutcome(Rejection(code, detail))


def create_event(state: ShardState, slots: Collection[int], event_seats_max: int, request: CreateEvent,
                 now_s: float) -> ShellOutcome:
    """A new event on this shard (whose `slots` must include the event's)."""
    slot = slot_of(request.event_id)
    if slot not in slots:
        return _reject(ErrorCode.VALIDATION_ERROR, f"event slot {slot} is not owned by this shard")
    if request.event_id in state.catalog:
        return _reject(ErrorCode.VALIDATION_ERROR, "an event with this id exists")
    try:
        layout = layout_of(request.document)
        settings = settings_of(request.document)
    except LayoutError as error:
        return _reject(ErrorCode.VALIDATION_ERROR, str(error))
    if layout.seat_count > event_seats_max:
        return _reject(ErrorCode.VALIDATION_ERROR,
                       f"{layout.seat_count} seats exceed the maximum of {event_seats_max}")
    created_at = datetime.fromtimestamp(now_s, UTC)
    # The router validated the body against the API's schema (router/schemas.py); completed here.
    document = cast("EventBody", {
        **request.document, "sections": normalized_sections(request.document["sections"]),
        "id": str(request.event_id), "status": settings.status.value,
        "organizer_id": request.organizer_id, "created_at": created_at.isoformat().replace("+00:00", "Z"),
    })
    state.inventory.create_event(request.event_id, layout, settings)
    state.catalog.put(request.event_id, document)
    change = EventRowsCreated(
        event_row(request.event_id, slot, request.organizer_id, document, layout.seat_count, created_at),
        section_rows(request.event_id, document, layout))
    return ShellOutcome(EventDocument(document), (change,))


def update_event(state: ShardState, request: UpdateEvent, now_s: float) -> Outcome | ShellOutcome:
    document = state.catalog.get(request.event_id)
    event = state.inventory.events.get(request.event_id)
    if document is None or event is None:
        return _reject(ErrorCode.EVENT_NOT_FOUND, "no such event")
    updated = document.copy()
    fields: dict[str, Any] = {}
    if request.queue is not None:
        updated["queue"] = fields["queue"] = request.queue  # type: ignore[typeddict-item]
    if request.sale_windows is not None:
        try:
            windows = windows_of(request.sale_windows)
            dataclasses.replace(event.settings, sale_windows=windows)  # validates the windows
        except LayoutError as error:
            return _reject(ErrorCode.VALIDATION_ERROR, str(error))
        updated["sale_windows"] = fields["sale_windows"] = request.sale_windows  # type: ignore[typeddict-item]
    changes: list[Any] = []
    if request.status is not None and request.status != document["status"]:
        outcome = state.inventory.apply(ChangeEventStatus(request.event_id, EventStatus(request.status),
                                                          request.actor), now_s)
        if isinstance(outcome.result, Rejection):
            return outcome
        updated["status"] = request.status
        changes.extend(outcome.changes)
    if request.sale_windows is not None:
        # Sale windows are event settings the core reads on every hold; they change only here.
        event.settings = dataclasses.replace(event.settings, sale_windows=windows_of(request.sale_windows))
    if request.queue is not None:  # queue mode likewise (the core refuses holds without admission)
        event.settings = dataclasses.replace(event.settings, queue_required=queue_required(request.queue))
    if fields:
        before = {name: document.get(name) for name in fields}  # for the audit log's from → to
        changes.append(EventFieldsChanged(request.event_id, fields, before, now_s))
    state.catalog.put(request.event_id, updated)
    return ShellOutcome(EventDocument(with_cancellation(state, request.event_id, updated)), tuple(changes))
