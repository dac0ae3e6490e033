"""Signed ticket codes: what a QR code holds and what a gate verifies with no network (API.md).

A code is ``v1.<kid>.<payload>.<signature>``. ``kid`` names the Ed25519 key that signed it,
``payload`` is the compact binary record below and ``signature`` is the Ed25519 signature of the
ASCII bytes ``v1.<kid>.<payload>`` (everything before the last dot); payload and signature are
base64url without padding.

Payload byte layout (version 1, all integers big-endian)::

    offset  size  field
    0       1     payload format, 0x01
    1       16    ticket id (UUID bytes)
    17      16    event id (UUID bytes)
    33      4     issued at, uint32 seconds since the Unix epoch (good until 2106)
    37      1     place kind: 0x01 seat label, 0x02 GA section id
    38      1     place length L in bytes, 1..PLACE_BYTES_MAX
    39      L     place, UTF-8

No bytes may follow. A seat ``A-12-7`` gives a 45-byte payload, 60 base64url characters, and with
the 86-character signature and an 8-character kid a 159-character code (QR version 9 at level M).
The signature and the two UUIDs alone take 129 characters, so a shorter code would need a shorter
signature scheme or truncated ids; neither is worth it.

Errors: decoding raises only `TicketCodeInvalid` (with a short ``reason``); `KeyRing.verify`
(router/tickets/keyring.py) keeps that promise for any input string.
"""

from __future__ import annotations

import base64
import re
import struct
import uuid
from dataclasses import dataclass
from typing import Literal

CODE_VERSION = "v1"
PAYLOAD_FORMAT = 0x01
# A place label longer than this is a data bug, and every byte grows the QR code.
PLACE_BYTES_MAX = 64
# Longer inputs are rejected before any decoding work, so a scanner fed junk stays cheap.
CODE_CHARS_MAX = 512
ISSUED_AT_S_MAX = 2**32 - 1

PlaceKind = Literal["seat", "section"]
_KIND_TO_BYTE: dict[str, int] = {"seat": 0x01, "section": 0x02}
_BYTE_TO_KIND: dict[int, PlaceKind] = {0x01: "seat", 0x02: "section"}
_HEADER = struct.Struct(">B16s16sIBB")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*", re.ASCII)


class TicketCodeInvalid(Exception):
    """The code is not a valid ticket for any key we hold; ``reason`` says why (API 422 TICKET_INVALID)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class TicketClaims:
    ticket_id: uuid.UUID
    event_id: uuid.UUID
    place: str
    place_kind: PlaceKind
    issued_at_s: int

    def __post_init__(self) -> None:
        # Checked here so that a claim that cannot be encoded never exists, on either side.
        if self.place_kind not in _KIND_TO_BYTE:
            raise ValueError(f"place_kind must be 'seat' or 'section', not {self.place_kind!r}")
        size = len(self.place.encode("utf-8", errors="strict"))
        if not 1 <= size <= PLACE_BYTES_MAX:
            raise ValueError(f"place must be 1..{PLACE_BYTES_MAX} UTF-8 bytes, got {size}")
        if not 0 <= self.issued_at_s <= ISSUED_AT_S_MAX:
            raise ValueError("issued_at_s must fit in an unsigned 32-bit integer")


def encode_payload(claims: TicketClaims) -> bytes:
    place = claims.place.encode("utf-8")
    header = _HEADER.pack(PAYLOAD_FORMAT, claims.ticket_id.bytes, claims.event_id.bytes,
                          claims.issued_at_s, _KIND_TO_BYTE[claims.place_kind], len(place))
    return header + place


def decode_payload(payload: bytes) -> TicketClaims:
    if len(payload) < _HEADER.size:
        raise TicketCodeInvalid("payload too short")
    fmt, ticket_id, event_id, issued_at_s, kind, size = _HEADER.unpack_from(payload)
    if fmt != PAYLOAD_FORMAT:
        raise TicketCodeInvalid("unknown payload format")
    if kind not in _BYTE_TO_KIND:
        raise TicketCodeInvalid("unknown place kind")
    if not 1 <= size <= PLACE_BYTES_MAX:
        raise TicketCodeInvalid("bad place length")
    end = _HEADER.size + size
    if len(payload) < end:
        raise TicketCodeInvalid("payload truncated")
    if len(payload) > end:
        raise TicketCodeInvalid("trailing bytes after payload")
    try:
        place = payload[_HEADER.size:end].decode("utf-8", errors="strict")
        return TicketClaims(uuid.UUID(bytes=ticket_id), uuid.UUID(bytes=event_id), place,
                            _BYTE_TO_KIND[kind], issued_at_s)
    except ValueError as error:  # UnicodeDecodeError is a ValueError
        raise TicketCodeInvalid("bad place encoding") from error


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict base64url without padding: only the alphabet, and only the canonical encoding.

    Rejecting non-canonical spellings (unused low bits set) keeps one ticket to one code string.
    """
    if not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url_encode(data) != text:
        raise ValueError("non-canonical base64url")
    return data
