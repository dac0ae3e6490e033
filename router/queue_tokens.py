"""Waiting-room admission tokens (API.md "Waiting room", header ``X-Queue-Token``).

A token admits one user to one event until it expires, for at most a number of tickets per hold
when it is a waiting-list admission. It is an HMAC-SHA256-signed, compact string, so every router
worker verifies it without a round trip to Redis:
``<base64url(event_id 16 bytes | expires_at uint32 | quantity_max uint32 | SHA-256(user_id) first
16 bytes)>.<base64url(mac)>``. ``quantity_max`` is 0 for an admission from the line (no limit
beyond the event's own) and the quantity asked for on the waiting list otherwise; `POST /v1/holds`
refuses a hold for more tickets with it (router/holds_api.py). Four bytes, because
`hold_quantity_max` may reach 100,000.
A digest of the user id rather than the id itself: every token has the same length (98
characters), whatever the id (a long non-ASCII subject once made tokens too long to be accepted),
and a token does not show whom it admits. Tokens of the format before ``quantity_max`` (36-byte
payload, 92 characters) are still accepted, without a limit, so that admissions handed out before
an upgrade keep working until they expire (`token_seconds` at most).
The key is derived with a fixed label from a secret of its own (``TICKETING_QUEUE_TOKEN_SECRET``,
or ``<data>/secrets/queue_token_secret``, see `cluster/secrets.py`). It used to be derived from the
JWT secret, which is empty when JWTs are verified with a public key: anyone could then mint
admission tokens. An empty or short secret is refused here, so that cannot come back.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import time
from uuid import UUID

from cluster.secrets import ensure_queue_token_secret
from cluster.settings import Settings

KEY_LABEL = b"ticketing queue token v1"
# Protocol constants of the token format, not settings: every router must accept the same tokens,
# and the OpenAPI publishes the header's maximum length (router/openapi.py).
TOKEN_CHARS_MAX = 512
# A security floor, not a tunable: 16 bytes of entropy at least; generated secrets are 32 random
# bytes, base64url (43 characters).
SECRET_BYTES_MIN = 16
USER_DIGEST_BYTES = 16  # of SHA-256(user id): collisions need 2^64 work, and the MAC binds them anyway
# The payload's layout: event id, expiry, quantity_max, user digest; and the layout before quantity_max.
PAYLOAD_BYTES = 16 + 4 + 4 + USER_DIGEST_BYTES
LEGACY_PAYLOAD_BYTES = 16 + 4 + USER_DIGEST_BYTES


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class QueueTokens:
    def __init__(self, secret: str | bytes) -> None:
        secret_bytes = secret.encode() if isinstance(secret, str) else secret
        if len(secret_bytes) < SECRET_BYTES_MIN:
            raise ValueError(f"the queue token secret must have at least {SECRET_BYTES_MIN} bytes")
        self.key = hmac.new(secret_bytes, KEY_LABEL, hashlib.sha256).digest()

    @classmethod
    def for_deployment(cls, settings: Settings) -> QueueTokens:
        """The deployment's tokens: the configured secret, else the generated one. Never the JWT
        key, whatever the JWT configuration."""
        return cls(settings.queue_token_secret or ensure_queue_token_secret(settings.resolved_data_dir))

    def issue(self, user_id: str, event_id: UUID, ttl_s: int, now_s: float | None = None,
              quantity_max: int = 0) -> tuple[str, int]:
        """A token for `user_id` on `event_id`, valid `ttl_s`; `quantity_max` > 0: each hold made with
        it may take at most that many tickets (a waiting-list admission)."""
        expires_at = int((time.time() if now_s is None else now_s) + ttl_s)
        payload = event_id.bytes + struct.pack(">II", expires_at, quantity_max) + _user_digest(user_id)
        mac = hmac.new(self.key, payload, hashlib.sha256).digest()
        return f"{_b64(payload)}.{_b64(mac)}", expires_at

    def admission(self, token: str | None, user_id: str, event_id: UUID, now_s: float | None = None) -> int | None:
        """None when `token` does not admit `user_id` to `event_id` now; else the most tickets one
        hold may take with it (0: no limit)."""
        if not token or len(token) > TOKEN_CHARS_MAX or token.count(".") != 1:
            return None
        payload_text, mac_text = token.split(".")
        try:
            payload, mac = _unb64(payload_text), _unb64(mac_text)
        except ValueError:
            return None
        if not hmac.compare_digest(hmac.new(self.key, payload, hashlib.sha256).digest(), mac):
            return None
        if len(payload) == PAYLOAD_BYTES:
            expires_at, quantity_max = struct.unpack(">II", payload[16:24])
        elif len(payload) == LEGACY_PAYLOAD_BYTES:
            (expires_at,), quantity_max = struct.unpack(">I", payload[16:20]), 0
        else:
            return None
        admitted = (payload[:16] == event_id.bytes
                    and hmac.compare_digest(payload[-USER_DIGEST_BYTES:], _user_digest(user_id))
                    and (time.time() if now_s is None else now_s) < expires_at)
        return int(quantity_max) if admitted else None

    def admits(self, token: str | None, user_id: str, event_id: UUID, now_s: float | None = None) -> bool:
        return self.admission(token, user_id, event_id, now_s) is not None


def _user_digest(user_id: str) -> bytes:
    return hashlib.sha256(user_id.encode()).digest()[:USER_DIGEST_BYTES]
