"""Waiting-room admission tokens (API.md "Waiting room", header ``X-Queue-Token``).

A token admits one user to one event until it expires. It is an HMAC-SHA256-signed, compact
string, so every router worker verifies it without a round trip to Redis:
``<base64url(event_id 16 bytes | expires_at uint32 | SHA-256(user_id) first 16 bytes)>.<base64url(mac)>``.
A digest of the user id rather than the id itself: every token has the same length (92
characters), whatever the id (a long non-ASCII subject once made tokens too long to be accepted),
and a token does not show whom it admits.
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

    def issue(self, user_id: str, event_id: UUID, ttl_s: int, now_s: float | None = None) -> tuple[str, int]:
        expires_at = int((time.time() if now_s is None else now_s) + ttl_s)
        payload = event_id.bytes + struct.pack(">I", expires_at) + _user_digest(user_id)
        mac = hmac.new(self.key, payload, hashlib.sha256).digest()
        return f"{_b64(payload)}.{_b64(mac)}", expires_at

    def admits(self, token: str | None, user_id: str, event_id: UUID, now_s: float | None = None) -> bool:
        if not token or len(token) > TOKEN_CHARS_MAX or token.count(".") != 1:
            return False
        payload_text, mac_text = token.split(".")
        try:
            payload, mac = _unb64(payload_text), _unb64(mac_text)
        except ValueError:
            return False
        if not hmac.compare_digest(hmac.new(self.key, payload, hashlib.sha256).digest(), mac) or len(payload) < 20:
            return False
        (expires_at,) = struct.unpack(">I", payload[16:20])
        return (payload[:16] == event_id.bytes and hmac.compare_digest(payload[20:], _user_digest(user_id))
                and (time.time() if now_s is None else now_s) < expires_at)


def _user_digest(user_id: str) -> bytes:
    return hashlib.sha256(user_id.encode()).digest()[:USER_DIGEST_BYTES]
