"""Compact tables for the many small things an event owns: tickets, orders, users.

A million-seat event sells hundreds of thousands of tickets. As a dict of objects each ticket
would cost 300+ bytes (a UUID object, a dataclass, a dict entry); the budget for the whole event
is 64 bytes per seat (docs/inventory.md). So ids live side by side in one ``bytearray`` (16 bytes
each, the serial is the position) and :class:`KeyTable` indexes them with open addressing in an
``array('i')``: about 16 + 7 bytes per key instead of ~200.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable

KEY_BYTES = 16
_EMPTY = -1
# Linear probing stays short (≈2.5 probes on a hit) up to this load; beyond it we double.
_LOAD_MAX = 0.75


def user_key(user_id: str) -> bytes:
    """The 16-byte key of a user id (a JWT ``sub``, any length).

    Users are stored by a 128-bit BLAKE2b digest rather than by their string, so every user costs
    the same 16 bytes. The core never needs the string back: changes carry the ``user_id`` taken
    from the command that caused them. A collision needs ~2^64 users (birthday bound).
    """
    return hashlib.blake2b(user_id.encode(), digest_size=KEY_BYTES).digest()


class KeyTable:
    """Append-only table of 16-byte keys; each key gets the next serial (0, 1, 2, ...).

    Lookups hash the key (``hash(bytes)``: per process, never persisted) into a power-of-two slot
    array holding serials. Growing rehashes every key once, in one pass: a pause of ~0.2 s at
    ~800k keys; the alternative, pre-sizing for the event's capacity, costs 8 bytes per seat even
    for events that never sell out.
    """

    __slots__ = ("_count", "_keys", "_mask", "_slots")

    def __init__(self, expected_count: int = 0) -> None:
        self._keys = bytearray()
        self._count = 0
        size = 8
        while size * _LOAD_MAX < expected_count:
            size *= 2
        self._slots = array("i", [_EMPTY]) * size
        self._mask = size - 1

    def __len__(self) -> int:
        return self._count

    def key(self, serial: int) -> bytes:
        offset = serial * KEY_BYTES
        return bytes(self._keys[offset : offset + KEY_BYTES])

    def find(self, key: bytes) -> int:
        """The serial of ``key``, or -1."""
        keys, slots, mask = self._keys, self._slots, self._mask
        index = hash(key) & mask
        while True:
            serial = slots[index]
            if serial == _EMPTY:
                return _EMPTY
            offset = serial * KEY_BYTES
            if keys[offset : offset + KEY_BYTES] == key:
                return serial
            index = (index + 1) & mask

    def add(self, key: bytes) -> int:
        """Append ``key`` (the caller has checked it is new) and return its serial."""
        if len(key) != KEY_BYTES:
            raise ValueError(f"keys are {KEY_BYTES} bytes, got {len(key)}")
        serial = self._count
        if serial + 1 > self._mask * _LOAD_MAX:
            self._grow()
        self._keys += key
        self._count = serial + 1
        slots, mask = self._slots, self._mask
        index = hash(key) & mask
        while slots[index] != _EMPTY:
            index = (index + 1) & mask
        slots[index] = serial
        return serial

    def intern(self, key: bytes) -> int:
        """The serial of ``key``, adding it if new."""
        serial = self.find(key)
        return serial if serial != _EMPTY else self.add(key)

    def extend(self, keys: Iterable[bytes]) -> None:
        """Bulk load (recovery): append many new keys."""
        for key in keys:
            self.add(key)

    def memory_bytes(self) -> int:
        return len(self._keys) + len(self._slots) * self._slots.itemsize

    def _place(self, key: bytes, serial: int) -> None:
        slots, mask = self._slots, self._mask
        index = hash(key) & mask
        while slots[index] != _EMPTY:
            index = (index + 1) & mask
        slots[index] = serial

    def _grow(self) -> None:
        size = len(self._slots) * 2
        self._slots = array("i", [_EMPTY]) * size
        self._mask = size - 1
        keys = self._keys
        for serial in range(self._count):
            offset = serial * KEY_BYTES
            self._place(bytes(keys[offset : offset + KEY_BYTES]), serial)
