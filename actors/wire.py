"""A compact encoding of the batches that cross Ray between the router and a shard actor.

Ray pickles whatever an actor call carries. The core's commands are frozen slotted dataclasses
with UUID fields, and pickling one of those costs ~6 µs each way (dataclass state restored in
Python, UUIDs through `__reduce__`), against ~0.25 µs for a tuple of bytes, str and int
(measured, batches of 64). So the hot messages — hold commands, the queue gate, hold views and
rejections — travel as tagged tuples of primitives; anything else travels as itself (tag 0).
The encoding is private to one deployment's router and actors (they run the same code) and is
never stored, so it can change freely between versions deployed together.
"""

from __future__ import annotations

import uuid
from typing import Any

from actors.inventory.commands import HoldBestAvailable, HoldGeneralAdmission, HoldSeats
from actors.inventory.errors import ErrorCode
from actors.inventory.holds import HoldStatus
from actors.inventory.results import HoldItem, HoldView, Rejection
from actors.protocol import QueueGate

AS_IS, GA, SEATS, BEST, GATE, HOLD_VIEW, REJECTION = range(7)

_new_object = object.__new__
_set = object.__setattr__
_SAFE_UNKNOWN = uuid.SafeUUID.unknown
_HOLD_STATUS = {status.value: status for status in HoldStatus}
_ERROR_CODE = {code.value: code for code in ErrorCode}


def _uuid(data: bytes) -> uuid.UUID:
    """uuid.UUID(bytes=data) without its argument checks (the bytes came from a UUID)."""
    value = _new_object(uuid.UUID)
    _set(value, "int", int.from_bytes(data, "big"))
    _set(value, "is_safe", _SAFE_UNKNOWN)
    return value


def encode_request(request: Any) -> tuple[Any, ...]:
    kind = type(request)
    if kind is HoldGeneralAdmission:
        return (GA, request.event_id.bytes, request.user_id, request.hold_id.bytes, request.section_id,
                request.quantity, request.presale_code, request.idempotency_key)
    if kind is HoldSeats:
        return (SEATS, request.event_id.bytes, request.user_id, request.hold_id.bytes, request.seats,
                request.presale_code, request.idempotency_key)
    if kind is HoldBestAvailable:
        return (BEST, request.event_id.bytes, request.user_id, request.hold_id.bytes, request.section_id,
                request.quantity, request.adjacent, request.presale_code, request.idempotency_key)
    if kind is QueueGate:
        return (GATE, request.admitted, encode_request(request.command))
    return (AS_IS, request)


def decode_request(wire: tuple[Any, ...]) -> Any:
    tag = wire[0]
    if tag == GA:
        return HoldGeneralAdmission(_uuid(wire[1]), wire[2], _uuid(wire[3]), wire[4], wire[5], wire[6], wire[7])
    if tag == SEATS:
        return HoldSeats(_uuid(wire[1]), wire[2], _uuid(wire[3]), wire[4], wire[5], wire[6])
    if tag == BEST:
        return HoldBestAvailable(_uuid(wire[1]), wire[2], _uuid(wire[3]), wire[4], wire[5], wire[6], wire[7],
                                 wire[8])
    if tag == GATE:
        return QueueGate(decode_request(wire[2]), wire[1])
    return wire[1]


def encode_reply(reply: Any) -> tuple[Any, ...]:
    kind = type(reply)
    if kind is HoldView:
        return (HOLD_VIEW, reply.hold_id.bytes, reply.event_id.bytes, reply.status.value, reply.expires_at_s,
                tuple(tuple(item) for item in reply.items), reply.total_cents, reply.currency,
                None if reply.order_id is None else reply.order_id.bytes)
    if kind is Rejection:
        return (REJECTION, reply.code.value, reply.detail, reply.unavailable, reply.available,
                reply.first_checked_in_at_s, reply.gate)
    return (AS_IS, reply)


def decode_reply(wire: tuple[Any, ...]) -> Any:
    tag = wire[0]
    if tag == HOLD_VIEW:
        items = tuple(HoldItem._make(item) for item in wire[5])
        order_id = None if wire[8] is None else _uuid(wire[8])
        return HoldView(_uuid(wire[1]), _uuid(wire[2]), _HOLD_STATUS[wire[3]], wire[4], items, wire[6], wire[7],
                        order_id)
    if tag == REJECTION:
        return Rejection(_ERROR_CODE[wire[1]], wire[2], wire[3], wire[4], wire[5], wire[6])
    return wire[1]


def encode_requests(requests: list[Any]) -> list[tuple[Any, ...]]:
    return [encode_request(request) for request in requests]


def decode_requests(wire: list[tuple[Any, ...]]) -> list[Any]:
    return [decode_request(item) for item in wire]


def encode_replies(replies: list[Any]) -> list[tuple[Any, ...]]:
    return [encode_reply(reply) for reply in replies]


def decode_replies(wire: list[tuple[Any, ...]]) -> list[Any]:
    return [decode_reply(item) for item in wire]
