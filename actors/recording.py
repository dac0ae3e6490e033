"""Count what the committed outcomes did, for the actor's metrics (after COMMIT, never before)."""

from __future__ import annotations

from typing import Any

from actors.inventory.commands import (
    CheckIn,
    ConfirmCheckout,
    HoldBestAvailable,
    HoldGeneralAdmission,
    HoldSeats,
    ReleaseHold,
)
from actors.inventory.results import HoldView, OrderView, Outcome, Rejection
from actors.protocol import ShellOutcome, core_command
from actors.shard_metrics import ShardMetrics

HOLD_COMMANDS = (HoldSeats, HoldGeneralAdmission, HoldBestAvailable)
_HOLD_COMMAND_TYPES = frozenset(HOLD_COMMANDS)


def record_outcomes(metrics: ShardMetrics, requests: list[Any], outcomes: list[Outcome | ShellOutcome]) -> None:
    # Holds placed by bare hold commands, the bulk of any batch, are counted here and added once
    # per batch: with a `labels(...).inc()` per command this function cost 1.5 µs per hold, now
    # 0.1 (measured, batches of 64 GA holds).
    created = 0
    for request, outcome in zip(requests, outcomes, strict=True):
        if type(request) in _HOLD_COMMAND_TYPES and type(outcome.result) is HoldView and not outcome.replayed:
            created += 1
        else:
            _record_one(metrics, request, outcome)
    if created:
        metrics.holds_created.inc(created)


def _record_one(metrics: ShardMetrics, request: Any, outcome: Outcome | ShellOutcome) -> None:
    shard = metrics.shard
    request = core_command(request)
    if outcome.replayed:
        return
    result = outcome.result
    if isinstance(result, Rejection):
        metrics.conflicts.labels(shard, result.code.value).inc()
        if isinstance(request, CheckIn):
            metrics.checkins.labels(shard, result.code.value.lower()).inc()
        return
    if isinstance(request, HOLD_COMMANDS):
        metrics.holds_created.inc()
    elif isinstance(request, ReleaseHold):
        metrics.holds.labels(shard, "released").inc()
    elif isinstance(request, ConfirmCheckout) and isinstance(result, OrderView):
        metrics.holds.labels(shard, "converted").inc()
        metrics.tickets_issued.inc(len(result.tickets))
    elif isinstance(request, CheckIn):
        metrics.checkins.labels(shard, "admitted").inc()
