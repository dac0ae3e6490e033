"""Commands on holds that memory no longer keeps, answered from Postgres.

Memory keeps every live hold but only the newest ended ones (`InventoryLimits.closed_holds_max`),
and none of those survive a restart. The core answers a command on a hold it does not know with
HOLD_NOT_FOUND, which for a hold that exists is wrong: a DELETE of a hold confirmed before the
restart must be 409 HOLD_NOT_ACTIVE, a checkout of an expired one 410 HOLD_EXPIRED (API.md), and
the checkout saga decides what to do with a charge from exactly that answer. So before a batch is
applied, each command on a hold unknown to memory that is not a keyed retry (whose recorded
answer stands, and the core gives it) is looked up (`shards.lookup`); one whose hold ended is
answered here with the rejection the core gives for an ended hold it still knows, and never
reaches the core (nothing changes, no idempotency key is recorded: the same answer comes from
here every time). A hold Postgres does not know either goes to the core (404).
"""

from __future__ import annotations

from typing import Any

from actors.inventory import ShardInventory
from actors.inventory.commands import BeginCheckout, FailCheckout, ReleaseHold
from actors.inventory.errors import ErrorCode
from actors.inventory.holds import LIVE_HOLD_STATUSES, HoldStatus
from actors.inventory.results import HoldView, Rejection
from actors.protocol import Attributed, CompleteCheckout, Unavailable, core_command

# The requests that name an existing hold (`CompleteCheckout` wraps the core's ConfirmCheckout).
HOLD_REQUESTS = frozenset({ReleaseHold, BeginCheckout, FailCheckout, CompleteCheckout})


async def answer_ended_holds(inventory: ShardInventory, lookup: Any, requests: list[Any]) -> dict[int, Any]:
    """Replies for the requests on ended holds memory forgot, by index; {} for most batches."""
    answers: dict[int, Any] = {}
    if lookup is None:  # the negative-control actor trusts memory alone
        return answers
    from shards.lookup import LookupFailed

    for index, request in enumerate(requests):
        if type(request.request if type(request) is Attributed else request) not in HOLD_REQUESTS:
            continue
        command = core_command(request)
        if inventory.knows_hold(command.hold_id) or _is_replay(inventory, command):
            continue
        try:
            view = await lookup.hold(command.hold_id, command.user_id)
        except LookupFailed:
            answers[index] = Unavailable("the hold could not be read from Postgres")
            continue
        if isinstance(view, HoldView) and view.status not in LIVE_HOLD_STATUSES:
            answers[index] = ended_hold_rejection(command, view.status)
    return answers


def _is_replay(inventory: ShardInventory, command: Any) -> bool:
    """A retry of a command that was applied: its key's recorded answer is the answer (the keys of
    the batch were fetched from Postgres before this runs), not the hold's status now."""
    key = getattr(command, "idempotency_key", None)
    return key is not None and inventory.idempotency.lookup(command.user_id, key) is not None


def ended_hold_rejection(command: Any, status: HoldStatus) -> Rejection:
    """What the core answers for an ended hold it knows (actors/inventory/core.py)."""
    if isinstance(command, BeginCheckout) and status is HoldStatus.EXPIRED:
        return Rejection(ErrorCode.HOLD_EXPIRED, "the hold has expired")
    return Rejection(ErrorCode.HOLD_NOT_ACTIVE, f"the hold is {status}")
