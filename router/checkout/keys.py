"""Idempotency keys the system makes itself, in a namespace no client can send.

Keys are scoped per user — ``(user_id, key)`` in the core and in ``idempotency_keys`` — and the
checkout's confirm and fail steps run under the hold owner's user id. A step whose key a client
could send is a step the owner can pre-empt: send ``DELETE /v1/holds/H`` under that key first, and
the step's command replays the release's answer (or IDEMPOTENCY_KEY_REUSED) for ever, leaving the
hold pinned (issue 10, defect 4). So every key made here starts with `SYSTEM_KEY_PREFIX`, a control
character that the router's Idempotency-Key validation (`router.deps.idempotency_key`) refuses;
tests/unit/test_checkout_keys.py keeps the two in step.

The confirm and fail steps have one key per hold, shared by the checkout and the resolver: a hold
is confirmed or failed once, and whoever comes second gets the first one's answer replayed
instead of a rejection to interpret. A key never exceeds the 255-character column: a subject that
would make it longer is replaced by its SHA-256, behind a different separator (``#`` instead of
``:``), so a hashed key cannot equal a plain one.

Gateway keys (``charge:<hold>``, ``refund:<hold>``, ``refund:order:<order>``) live in the gateway's
own key space, which clients never reach.
"""

from __future__ import annotations

import hashlib
from uuid import UUID

SYSTEM_KEY_PREFIX = "\x1f"
KEY_CHARS_MAX = 255  # idempotency_keys.key CHECK (length 1..255); the gateway has the same bound
_SEPARATORS = (":", "#")


def system_key(step: str, subject: str) -> str:
    """The key of a system-made step about `subject`; `step` is a fixed word without separators."""
    if not step or any(separator in step for separator in _SEPARATORS):
        raise ValueError(f"step names a fixed kind of step, without ':' or '#': {step!r}")
    key = f"{SYSTEM_KEY_PREFIX}{step}:{subject}"
    if len(key) <= KEY_CHARS_MAX:
        return key
    digest = hashlib.sha256(subject.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{SYSTEM_KEY_PREFIX}{step}#{digest}"


def pin_key(client_key: str | None, hold_id: UUID) -> str:
    """The pin is the client's own request: its key as sent, or the hold when there is none (a
    hold is checked out at most once)."""
    return client_key if client_key is not None else system_key("checkout", str(hold_id))


def confirm_key(hold_id: UUID) -> str:
    return system_key("confirm", str(hold_id))


def fail_key(hold_id: UUID) -> str:
    return system_key("fail", str(hold_id))


def order_refund_request_key(client_key: str | None, order_id: UUID) -> str:
    """A refund is the client's own request: its key, or the order when there is none."""
    return client_key if client_key is not None else system_key("refund", str(order_id))


def order_cancellation_key(order_id: UUID) -> str:
    """The request key of the event cancellation's refund of an order: one per order, so a
    cancellation resumed after a crash replays what it already did."""
    return system_key("cancel", str(order_id))


def charge_key(hold_id: UUID) -> str:
    """The gateway key of a hold's one charge."""
    return f"charge:{hold_id}"


def refund_key(hold_id: UUID) -> str:
    """The gateway key of the refund of a charge that bought nothing (the hold was not confirmed)."""
    return f"refund:{hold_id}"


def order_refund_key(order_id: UUID) -> str:
    """The gateway key of an order's refund (an order is refunded once)."""
    return f"refund:order:{order_id}"
