"""The pure inventory core: everything the shard actor decides, as plain synchronous Python.

No I/O, no clock, no randomness: callers pass ``now_s`` (POSIX seconds) and every new id
(``uuid.UUID``). ``ShardInventory.apply(command, now_s)`` returns an ``Outcome`` (a typed result
and the change records to persist). See docs/inventory.md for the state layout and decisions.

Modules: ``errors`` (codes, invariant), ``layout`` (sections, seat numbers, labels), ``sales``
(status, windows, settings), ``commands``, ``changes``, ``results``, ``holds``, ``tickets``,
``compact`` (id tables), ``seating`` (best-available), ``event`` (one event's arrays),
``hold_decisions`` / ``ticket_decisions`` (the rules), ``invariants``, ``idempotency``,
``core`` (`ShardInventory`, the container every command enters by), ``recovery`` (loading rows).

Usually these modules run compiled by mypyc. The shell chooses that before this package is
imported (``cluster/native.py``, called from ``actors/__init__.py``); nothing here knows.
"""

from actors.inventory.core import InventoryLimits, ShardInventory
from actors.inventory.errors import ErrorCode, InvariantViolation, LayoutError, invariant
from actors.inventory.layout import GeneralAdmissionSpec, Layout, RowSpec, SeatedSectionSpec
from actors.inventory.results import Outcome, Rejection
from actors.inventory.sales import EventSettings, EventStatus, SaleWindow

__all__ = [
    "ErrorCode",
    "EventSettings",
    "EventStatus",
    "GeneralAdmissionSpec",
    "InvariantViolation",
    "InventoryLimits",
    "Layout",
    "LayoutError",
    "Outcome",
    "Rejection",
    "RowSpec",
    "SaleWindow",
    "SeatedSectionSpec",
    "ShardInventory",
    "invariant",
]
