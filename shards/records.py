"""The shell's change records: what an actor's commit writes besides the core's records
(`actors.inventory.changes`) — a new event's rows, an organizer's edits, money, ticket holders.

They live beside the writer that folds them (`shards/writer.py`), as plain NamedTuples the actor
builds (`actors/event_admin.py`, `actors/payments.py`) and the group committer carries.
"""

from __future__ import annotations

from typing import Any, NamedTuple
from uuid import UUID


class EventRowsCreated(NamedTuple):
    """A new event's rows (see `shards.event_rows`); written first in its batch."""

    event: dict[str, Any]
    sections: list[dict[str, Any]]


class EventFieldsChanged(NamedTuple):
    """Organizer changes to an event's queue settings or sale windows; ``before`` holds the same
    fields as they were and ``at_s`` the time, for the audit log."""

    event_id: UUID
    fields: dict[str, Any]
    before: dict[str, Any]
    at_s: float


class AuditContext(NamedTuple):
    """Who caused the records that follow, up to the next `AuditContext` (`AUDIT_CONTEXT_END`
    closes a request's records): the writer stamps the audit rows of those records with it.

    The actor shell emits one before and one after the changes of an `actors.protocol.Attributed`
    request, so a command applied without one (the expiry timer's, a resolver's) never inherits
    the context of the command before it in the same batch. Writes nothing by itself.
    """

    actor: str | None
    actor_role: str | None
    request_id: str | None


AUDIT_CONTEXT_END = AuditContext(None, None, None)


class PaymentRecorded(NamedTuple):
    """Upsert a `payments` row by (gateway, idempotency_key): the gateway is the source of truth
    for money, so a later report (refund succeeded, outcome resolved) overwrites the earlier one."""

    payment_id: UUID
    event_id: UUID
    hold_id: UUID
    order_id: UUID | None
    user_id: str
    kind: str
    gateway: str
    gateway_ref: str | None
    idempotency_key: str
    amount_cents: int
    currency: str
    status: str
    at_s: float


class TicketHoldersRecorded(NamedTuple):
    ticket_ids: tuple[UUID, ...]
    names: tuple[str, ...]
    emails: tuple[str, ...]
