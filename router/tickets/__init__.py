"""Ticket services, apart from the routes that use them (routes: router/orders_api.py,
router/checkins_api.py):

- `codes` — the signed code's format (claims, payload bytes, base64url), standard library only;
- `keyring` — the Ed25519 key ring and its key files under ``<data_dir>/secrets/ticket_keys``;
- `qr` — QR images (PNG, SVG) of a code;
- `ticket_codes` — `TicketCodes`, what a router worker holds: sign a ticket view, verify a scan,
  render and cache its QR image.

The names a gate or a tool needs (`cluster/verify.py`, tests) are re-exported here; importing the
package does not import the QR renderer.
"""

from __future__ import annotations

from router.tickets.codes import CODE_CHARS_MAX, PLACE_BYTES_MAX, TicketClaims, TicketCodeInvalid
from router.tickets.keyring import KeyRing, KeyRingError

__all__ = ["CODE_CHARS_MAX", "PLACE_BYTES_MAX", "KeyRing", "KeyRingError", "TicketClaims", "TicketCodeInvalid"]
