"""The router ⇄ actor wire encoding round-trips every message exactly, hot types and others."""

from __future__ import annotations

import pickle
import uuid

import pytest

from actors.inventory.commands import CheckIn, HoldBestAvailable, HoldGeneralAdmission, HoldSeats
from actors.inventory.errors import ErrorCode
from actors.inventory.holds import HoldStatus
from actors.inventory.results import HoldItem, HoldView, Rejection
from actors.protocol import GetAvailability, Unavailable
from actors.wire import decode_replies, decode_requests, encode_replies, encode_requests

pytestmark = pytest.mark.unit

EVENT = uuid.uuid4()


def test_requests_round_trip() -> None:
    requests = [
        HoldGeneralAdmission(EVENT, "u1", uuid.uuid4(), "floor", 2, None, "k1"),
        HoldSeats(EVENT, "u2", uuid.uuid4(), ("A-1-1", "A-1-2"), "FANCLUB", None),
        HoldBestAvailable(EVENT, "u3", uuid.uuid4(), "A", 4, True, None, "k3"),
        HoldGeneralAdmission(EVENT, "u4", uuid.uuid4(), "floor", 1, None, None, True),
        CheckIn(uuid.uuid4(), "north"),
        GetAvailability(EVENT),
    ]
    decoded = decode_requests(pickle.loads(pickle.dumps(encode_requests(requests))))
    assert decoded == requests
    assert [type(item) for item in decoded] == [type(item) for item in requests]


def test_replies_round_trip_with_their_enums() -> None:
    replies = [
        HoldView(uuid.uuid4(), EVENT, HoldStatus.HELD, 1.5e9, (HoldItem("A-1-1", "A", 100),), 100, "EUR"),
        HoldView(uuid.uuid4(), EVENT, HoldStatus.CONFIRMED, 1.5e9, (HoldItem(None, "floor", 5),) * 2, 10, "EUR",
                 uuid.uuid4()),
        Rejection(ErrorCode.SEATS_UNAVAILABLE, "taken", ("A-1-1",)),
        Rejection(ErrorCode.TICKET_ALREADY_USED, "used", first_checked_in_at_s=1.5e9, gate="north"),
        Unavailable("commit failed"),
        None,
    ]
    decoded = decode_replies(pickle.loads(pickle.dumps(encode_replies(replies))))
    assert decoded == replies
    assert decoded[0].status is HoldStatus.HELD and decoded[2].code is ErrorCode.SEATS_UNAVAILABLE
    assert isinstance(decoded[0].hold_id, uuid.UUID) and decoded[0].hold_id == replies[0].hold_id
