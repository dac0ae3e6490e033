"""The core's limits for tests and benchmarks: the deployment's defaults (one place:
`cluster.settings`), with the overrides a test needs."""

from __future__ import annotations

import dataclasses
from typing import Any

from actors.inventory import InventoryLimits
from cluster.settings import ShardBounds


def core_limits(**overrides: Any) -> InventoryLimits:
    """`items_max` sets both per-hold maxima (seats named, GA/best-available quantity)."""
    items_max = overrides.pop("items_max", None)
    if items_max is not None:
        overrides.update(hold_seats_max=items_max, hold_quantity_max=items_max)
    return dataclasses.replace(ShardBounds.defaults().inventory_limits(), **overrides)
