"""Ticket codes and QR images for the API: signing a ticket view, verifying a scanned code,
rendering (and caching) its QR image. One `TicketCodes` per router worker (`app.state.ticket_codes`)."""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

from actors.inventory.results import TicketView
from router.tickets.codes import TicketClaims
from router.tickets.keyring import KeyRing
from router.tickets.qr import qr_png, qr_svg
from shards.slots import ID_VERSION


def issued_at_s(ticket_id: uuid.UUID) -> int:
    """Ticket ids are version-8 UUIDs whose top 48 bits are the issue time in Unix milliseconds,
    so a ticket's code is the same every time it is rendered without storing the time."""
    if ticket_id.version != ID_VERSION:
        return 0
    return (ticket_id.int >> 80) // 1000


def claims_of(ticket: TicketView) -> TicketClaims:
    if ticket.seat is not None:
        return TicketClaims(ticket.ticket_id, ticket.event_id, ticket.seat, "seat", issued_at_s(ticket.ticket_id))
    return TicketClaims(ticket.ticket_id, ticket.event_id, ticket.section_id, "section",
                        issued_at_s(ticket.ticket_id))


class TicketCodes:
    """One per router worker: the deployment's key ring and a small cache of rendered QR images."""

    def __init__(self, data_dir: Path, qr_cache_entries_max: int) -> None:
        self.ring = KeyRing.load_or_create(data_dir)
        self._images: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._images_max = qr_cache_entries_max

    def code(self, ticket: TicketView) -> str:
        return self.ring.sign(claims_of(ticket))

    def verify(self, code: str) -> TicketClaims:
        return self.ring.verify(code)

    def public_keys(self) -> list[dict[str, Any]]:
        return list(self.ring.public_keys())

    async def image(self, code: str, kind: str) -> bytes:
        """PNG or SVG of `code`; rendering costs ~25 ms of CPU, so it runs off the event loop and
        the newest images are cached (the output is deterministic)."""
        key = (code, kind)
        cached = self._images.get(key)
        if cached is not None:
            self._images.move_to_end(key)
            return cached
        render = qr_png if kind == "png" else qr_svg
        image = await asyncio.to_thread(render, code)
        if self._images_max:
            self._images[key] = image
            while len(self._images) > self._images_max:
                self._images.popitem(last=False)
        return image
