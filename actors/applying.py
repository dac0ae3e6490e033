"""Applying one call's requests to a shard's state, synchronously: no await between check and mutation.

Most requests are the core's own commands (`actors.inventory.commands`) and go straight to
`ShardInventory.apply`. The shell's requests (`actors.protocol`) are handled or unwrapped here:
event admin (`actors.event_admin`) and checkout's money records (`actors.payments`). The actor
commits what this returns (`actors.actor`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from actors.catalog import ShardState
from actors.event_admin import create_event, update_event
from actors.inventory import InvariantViolation, ShardInventory
from actors.inventory.commands import USER_COMMAND_TYPES
from actors.inventory.results import Outcome
from actors.isolation import ApplyCrashed
from actors.payments import checkout_outcome
from actors.protocol import (
    Attributed,
    CompleteCheckout,
    CreateEvent,
    RecordPayment,
    RefundPaidOrder,
    ShellOutcome,
    UpdateEvent,
    core_command,
)
from shards.records import AUDIT_CONTEXT_END, AuditContext

log = logging.getLogger(__name__)

# Requests the shell handles itself (or unwraps) before the core; everything else is the core's.
SHELL_REQUESTS = frozenset({CreateEvent, UpdateEvent, CompleteCheckout, RecordPayment, RefundPaidOrder, Attributed})


@dataclass(frozen=True, slots=True)
class ApplyRules:
    """What applying needs besides the state: fixed for an actor's life."""

    shard_id: int
    slots: Collection[int]
    event_seats_max: int
    # False only for a negative control (STYLE §10): user commands lose their idempotency key.
    idempotency: bool = True


def apply_all(state: ShardState, rules: ApplyRules, requests: list[Any], now_s: float) -> list[Outcome | ShellOutcome]:
    """Apply one call's requests in order; their outcomes, aligned with `requests`.

    A module function, with the core's `apply` called straight from the loop: Ray wraps every
    method of an actor class (private ones too) in a tracing shim, a Python frame with ``*args``
    and ``**kwargs`` that cost ~0.2 µs per command when this loop called a method per command
    (py-spy showed the shim on every command's stack). A broken invariant exits the process
    whichever command broke it, so one ``try`` around the whole batch is enough. Any other
    exception leaves the commands before it applied without a commit and its own perhaps half
    applied: `ApplyCrashed` says which, and the actor isolates it (actors/isolation.py).
    """
    inventory = state.inventory
    core_apply = inventory.apply if rules.idempotency else functools.partial(_apply_without_key, inventory)
    outcomes: list[Outcome | ShellOutcome] = []
    append = outcomes.append
    try:
        for request in requests:
            append(core_apply(request, now_s) if type(request) not in SHELL_REQUESTS
                   else _apply_shell(state, rules, request, now_s))
    except InvariantViolation:
        log.critical("invariant broken in shard %s: exiting so Ray restarts and recovery rebuilds", rules.shard_id,
                     exc_info=True)
        os._exit(70)
    except Exception as error:
        raise ApplyCrashed(len(outcomes), error) from error
    return outcomes


def _apply_shell(state: ShardState, rules: ApplyRules, request: Any, now_s: float) -> Outcome | ShellOutcome:
    kind = type(request)
    if kind is Attributed:
        return _apply_attributed(state, rules, request, now_s)
    if kind is CreateEvent:
        return create_event(state, rules.slots, rules.event_seats_max, request, now_s)
    if kind is UpdateEvent:
        return update_event(state, request, now_s)
    return checkout_outcome(state.inventory, request, now_s)


def _apply_attributed(state: ShardState, rules: ApplyRules, request: Attributed, now_s: float
                      ) -> Outcome | ShellOutcome:
    """The wrapped request applied as if bare, its changes (if any) bracketed by its audit context
    (shards/records.py `AuditContext`): a replay or a rejection changes nothing and gets none."""
    inner = request.request
    if type(inner) in SHELL_REQUESTS:
        outcome = _apply_shell(state, rules, inner, now_s)
    elif rules.idempotency:
        outcome = state.inventory.apply(inner, now_s)
    else:
        outcome = _apply_without_key(state.inventory, inner, now_s)
    if not outcome.changes:
        return outcome
    context = AuditContext(request.actor, request.actor_role, request.request_id)
    return ShellOutcome(outcome.result, (context, *outcome.changes, AUDIT_CONTEXT_END), outcome.replayed)


def event_of(request: Any) -> Any:
    return getattr(core_command(request), "event_id", None)


def _apply_without_key(inventory: ShardInventory, command: Any, now_s: float) -> Outcome:
    if isinstance(command, USER_COMMAND_TYPES):
        command = dataclasses.replace(command, idempotency_key=None)
    return inventory.apply(command, now_s)
