"""What the router sends a shard actor and what comes back, besides the core's own commands.

Mutations go through ``ShardActor.apply`` (answered after their group commit): the core's
commands (`actors.inventory.commands`) plus the shell-level `CreateEvent` and `UpdateEvent`.
Reads go through ``ShardActor.read`` (answered from memory, or from Postgres for history that
memory no longer keeps). Replies are the core's typed results, `Unavailable` when the shard could
not commit, `Refused` when poison isolation left the command out, or None for "not found". All
are plain picklable values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from uuid import UUID


@dataclass(frozen=True, slots=True)
class CreateEvent:
    """Create an event from its validated API document (times as RFC 3339 strings)."""

    event_id: UUID
    organizer_id: str
    document: dict[str, Any]


@dataclass(frozen=True, slots=True)
class UpdateEvent:
    """PATCH: change status, queue settings or sale windows (None leaves a field as it is)."""

    event_id: UUID
    actor: str
    status: str | None = None
    queue: dict[str, Any] | None = None
    sale_windows: list[dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class GetEvent:
    event_id: UUID


@dataclass(frozen=True, slots=True)
class GetAvailability:
    event_id: UUID


@dataclass(frozen=True, slots=True)
class GetSeatMap:
    event_id: UUID
    section_id: str | None = None


@dataclass(frozen=True, slots=True)
class GetHold:
    hold_id: UUID
    user_id: str | None


@dataclass(frozen=True, slots=True)
class GetOrder:
    order_id: UUID
    user_id: str | None


@dataclass(frozen=True, slots=True)
class GetTicket:
    ticket_id: UUID
    user_id: str | None


@dataclass(frozen=True, slots=True)
class GetUserTickets:
    user_id: str
    event_id: UUID | None = None


Query = GetEvent | GetAvailability | GetSeatMap | GetHold | GetOrder | GetTicket | GetUserTickets


class ShellOutcome(NamedTuple):
    """What a shell-level command (event admin, payments) decided: like the core's
    `Outcome`, with results and changes of the shell's own types."""

    result: Any
    changes: tuple[Any, ...] = ()
    replayed: bool = False


class Unavailable(NamedTuple):
    """The shard could not commit (or is rebuilding): nothing of this request was acknowledged."""

    reason: str


class SlotMoved(NamedTuple):
    """This shard does not serve the request's slot — a move took it away or has not handed it
    over yet (shards/slot_moves.py): nothing of the request was applied. The router reads the
    shard map again and sends the request to the slot's owner."""

    slot: int


class Refused(NamedTuple):
    """Poison isolation convicted this command: Postgres refuses what it would store, so it was
    left out of its batch (whose other commands committed) and nothing of it was applied.

    ``code`` is the API's: VALIDATION_ERROR when a value of the request cannot be stored (a data
    exception), INTERNAL_ERROR otherwise (a constraint the shell should never have let it break).
    ``detail`` names the command, never the database's message (the actor logs that).
    """

    code: str
    detail: str


class EventDocument(NamedTuple):
    """An event as the API shows it (an `actors.catalog.EventBody`)."""

    document: Mapping[str, Any]


class SeatMapView(NamedTuple):
    sections: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]  # (section_id, ((row label, seats), ...))


class AvailabilityView(NamedTuple):
    event_id: UUID
    currency: str
    sections: tuple[Any, ...]  # actors.inventory.results.SectionAvailability


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    """A charge or refund as the gateway reported it; stored in `payments` (upserted by key)."""

    payment_id: UUID
    event_id: UUID
    hold_id: UUID
    order_id: UUID | None
    user_id: str
    kind: str  # charge | refund
    gateway: str
    gateway_ref: str | None
    idempotency_key: str
    amount_cents: int
    currency: str
    status: str  # pending | succeeded | declined | failed | unknown


@dataclass(frozen=True, slots=True)
class CompleteCheckout:
    """Payment succeeded: confirm the pinned hold and record the charge in the same commit
    (``payment`` is None for a free hold: nothing was charged, nothing is recorded)."""

    confirm: Any  # actors.inventory.commands.ConfirmCheckout
    payment: PaymentRecord | None
    holders: tuple[tuple[str, str], ...] = ()  # (name, email) per ticket, in ticket order


@dataclass(frozen=True, slots=True)
class RefundPaidOrder:
    """Refund an order and, in the same commit, record the money owed back as a pending refund
    (``payment``, kind ``refund``, status ``pending``; its amount is set by the shard to what the
    refund covered). None for an order nothing was charged for. The gateway refund follows the
    commit and is retried until the gateway confirms it (router/checkout, router/resolver.py)."""

    refund: Any  # actors.inventory.commands.RefundOrder
    payment: PaymentRecord | None


@dataclass(frozen=True, slots=True)
class RecordPayment:
    payment: PaymentRecord


@dataclass(frozen=True, slots=True)
class Attributed:
    """A request as an identified caller made it, for the audit log (docs/organizers.md "Audit").

    Only the audited requests travel wrapped (event edits, check-ins, transfers, checkout's
    confirmation and refunds): the shell applies ``request`` as if it came bare and brackets its
    changes with `shards.records.AuditContext` records, so the writer stamps the audit rows they
    cause with this actor, role and request id. Hold commands never do: holds are counted, not
    audited, and the hot path stays as it was. ``actor`` is who acted (a validator for a
    check-in, an organizer for an organizer's refund), which the core's records do not always say.
    """

    request: Any
    actor: str
    actor_role: str
    request_id: str | None


class Caller(NamedTuple):
    """Who makes a request, as the router knows it: the token's subject and role, and the request id."""

    actor: str
    actor_role: str
    request_id: str | None


def attributed(request: Any, caller: Caller | None) -> Any:
    """`request` wrapped as `caller`'s (`Attributed`), or as it is when nobody is named (the resolver)."""
    if caller is None:
        return request
    return Attributed(request, caller.actor, caller.actor_role, caller.request_id)


class Ack(NamedTuple):
    """A shell command that changes no inventory was committed."""

    ok: bool = True


def core_command(request: Any) -> Any:
    """The inventory command inside a shell wrapper (CompleteCheckout, RefundPaidOrder, Attributed), or the request."""
    if isinstance(request, Attributed):
        request = request.request
    if isinstance(request, CompleteCheckout):
        return request.confirm
    if isinstance(request, RefundPaidOrder):
        return request.refund
    return request
