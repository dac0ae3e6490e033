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
from actors.inventory.results import OrderView, Outcome, Rejection
from actors.metrics import ShardMetrics
from actors.protocol import ShellOutcome, core_command

HOLD_COMMANDS = (HoldSeats, HoldGeneralAdmission, HoldBestAvailable)


def record_outcomes(metrics: ShardMetrics, requests: list[Any], outcomes: list[Outcome | ShellOutcome]) -> None:
    shard = metrics.shard
    for request, outcome in zip(requests, outcomes, strict=True):
        request = core_command(request)
        if outcome.replayed:
            continue
        result = outcome.result
        if isinstance(result, Rejection):
            metrics.conflicts.labels(shard, result.code.value).inc()
            if isinstance(request, CheckIn):
                metrics.checkins.labels(shard, result.code.value.lower()).inc()
            continue
        if isinstance(request, HOLD_COMMANDS):
            metrics.holds.labels(shard, "created").inc()
        elif isinstance(request, ReleaseHold):
            metrics.holds.labels(shard, "released").inc()
        elif isinstance(request, ConfirmCheckout) and isinstance(result, OrderView):
            metrics.holds.labels(shard, "converted").inc()
            metrics.tickets_issued.inc(len(result.tickets))
        elif isinstance(request, CheckIn):
            metrics.checkins.labels(shard, "admitted").inc()
