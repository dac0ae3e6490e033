"""The pure inventory core: everything the shard actor decides, as plain synchronous Python.

No I/O, no clock, no randomness: callers pass ``now_s`` (POSIX seconds) and every new id
(``uuid.UUID``). ``ShardInventory.apply(command, now_s)`` returns an ``Outcome`` (a typed result
and the change records to persist). See docs/inventory.md for the state layout and decisions.

Modules: ``errors`` (codes, invariant), ``layout`` (sections, seat numbers, labels), ``sales``
(status, windows, settings), ``commands``, ``changes``, ``results``, ``holds``, ``tickets``,
``compact`` (id tables), ``seating`` (best-available), ``event`` (one event's arrays),
``holding`` / ``ticketing`` (decisions), ``invariants``, ``idempotency``, ``shard`` (the
container), ``recovery`` (loading rows), ``replay`` (reference projection of changes to rows),
``native`` (imports the mypyc-compiled build of all this when it is current).
"""

from actors.inventory import native as _native

# The mypyc-compiled modules, when a current build exists (native.py); then every submodule
# import below finds its extension module first. Hence the imports after code (E402).
_build_dir, NATIVE_STATUS = _native.choose()
NATIVE = _build_dir is not None
if _build_dir is not None:
    __path__.insert(0, str(_build_dir))

from actors.inventory.errors import ErrorCode, InvariantViolation, LayoutError, invariant  # noqa: E402
from actors.inventory.layout import GeneralAdmissionSpec, Layout, RowSpec, SeatedSectionSpec  # noqa: E402
from actors.inventory.results import Outcome, Rejection  # noqa: E402
from actors.inventory.sales import EventSettings, EventStatus, SaleWindow  # noqa: E402
from actors.inventory.shard import InventoryLimits, ShardInventory  # noqa: E402

__all__ = [
    "NATIVE",
    "NATIVE_STATUS",
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
