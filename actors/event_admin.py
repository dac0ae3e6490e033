"""Organizer commands handled by the actor shell: creating an event and changing its settings.

The core decides everything about inventory; these only translate an API document into the
core's layout and settings, and into the rows the writer inserts with the same fenced commit.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from actors.events import event_row, layout_of, section_rows, settings_of, windows_of
from actors.inventory import ErrorCode, EventStatus, LayoutError, Rejection
from actors.inventory.commands import ChangeEventStatus
from actors.inventory.results import Outcome
from actors.protocol import CreateEvent, EventDocument, ShellOutcome, UpdateEvent
from shards.slots import slot_of
from shards.writer import EventFieldsChanged, EventRowsCreated

if TYPE_CHECKING:
    from actors.shard import EventShard


def _reject(code: ErrorCode, detail: str) -> ShellOutcome:
    return ShellOutcome(Rejection(code, detail))


def create_event(shard: EventShard, request: CreateEvent, now_s: float) -> ShellOutcome:
    slot = slot_of(request.event_id)
    if slot not in shard.config.slots:
        return _reject(ErrorCode.VALIDATION_ERROR, f"event slot {slot} is not owned by shard {shard.config.shard_id}")
    if request.event_id in shard.documents:
        return _reject(ErrorCode.VALIDATION_ERROR, "an event with this id exists")
    try:
        layout = layout_of(request.document)
        settings = settings_of(request.document)
    except LayoutError as error:
        return _reject(ErrorCode.VALIDATION_ERROR, str(error))
    seats_max = shard.bounds.get("event_seats_max", 1_000_000)
    if layout.seat_count > seats_max:
        return _reject(ErrorCode.VALIDATION_ERROR, f"{layout.seat_count} seats exceed the maximum of {seats_max}")
    created_at = datetime.fromtimestamp(now_s, UTC)
    document: dict[str, Any] = {
        **request.document, "id": str(request.event_id), "status": settings.status.value,
        "organizer_id": request.organizer_id, "created_at": created_at.isoformat().replace("+00:00", "Z"),
    }
    shard.inventory.create_event(request.event_id, layout, settings)
    shard.documents[request.event_id] = document
    change = EventRowsCreated(
        event_row(request.event_id, slot, request.organizer_id, document, layout.seat_count, created_at),
        section_rows(request.event_id, document, layout))
    return ShellOutcome(EventDocument(document), (change,))


def update_event(shard: EventShard, request: UpdateEvent, now_s: float) -> Outcome | ShellOutcome:
    document = shard.documents.get(request.event_id)
    event = shard.inventory.events.get(request.event_id)
    if document is None or event is None:
        return _reject(ErrorCode.EVENT_NOT_FOUND, "no such event")
    updated = dict(document)
    fields: dict[str, Any] = {}
    if request.queue is not None:
        updated["queue"] = fields["queue"] = request.queue
    if request.sale_windows is not None:
        try:
            windows = windows_of(request.sale_windows)
            dataclasses.replace(event.settings, sale_windows=windows)  # validates the windows
        except LayoutError as error:
            return _reject(ErrorCode.VALIDATION_ERROR, str(error))
        updated["sale_windows"] = fields["sale_windows"] = request.sale_windows
    changes: list[Any] = []
    if request.status is not None and request.status != document["status"]:
        outcome = shard.inventory.apply(ChangeEventStatus(request.event_id, EventStatus(request.status),
                                                          request.actor), now_s)
        if isinstance(outcome.result, Rejection):
            return outcome
        updated["status"] = request.status
        changes.extend(outcome.changes)
    if request.sale_windows is not None:
        # Sale windows are event settings the core reads on every hold; they change only here.
        event.settings = dataclasses.replace(event.settings, sale_windows=windows_of(request.sale_windows))
    if fields:
        changes.append(EventFieldsChanged(request.event_id, fields))
    shard.documents[request.event_id] = updated
    return ShellOutcome(EventDocument(updated), tuple(changes))
