"""Dynamic pricing: the rule that proposes a section's next price, and the command that sets it.

A section opts in with ``DynamicPricing(floor_cents, ceiling_cents)`` (layout.py). Its price is
then state of the event (``EventInventory.prices``), changed only by ``SetSectionPrice``, which
emits ``SectionPriceChanged`` (persisted to ``sections.price_cents`` and audited in the same group
commit). Holds keep the price they were placed at and tickets the price they were sold at, so a
change reprices nothing already held or sold.

The rule (``next_price``) is deterministic and bounded; the shard actor runs it every
``pricing_interval_s`` (``propose_prices``) and applies what it proposes through the ordinary
command path:

- *target*: ``floor + (ceiling - floor) × taken / for_sale``, where ``taken`` is held + sold and
  ``for_sale`` the capacity less blocked seats. Held counts as demand: a hold is a buyer who wants
  the seat now, and counting only sales would lag a flash sale by a hold's lifetime. The price so
  reaches its ceiling as the section sells out, and falls back toward its floor when holds expire
  or tickets are refunded.
- *rate*: one step moves at most ``step_max_percent`` of the current price (at least one cent,
  so a price of 0 can still rise), so a burst of holds cannot jump the price in one interval and
  buyers see it move gradually.
- *bounds*: every result is clamped to ``[floor, ceiling]``; the core refuses any other price
  (``VALIDATION_ERROR``) and Postgres checks it again (``sections_dynamic_price_bounds``).

- *demand*, when the shard actor supplies live signals (``Demand``, ``DemandRule``; without them the
  share alone, as above): the target follows the strongest of the share taken; the **pace** — the
  section would sell out within ``velocity_horizon_s`` at the last round's net take (held + sold
  now minus at the last round) is full demand, half as fast is half; the **waiting room** — as many
  people waiting (line and waiting list) as units left is full demand; and the **time to the
  event** — in the last ``last_call_s`` before the start the share's pull fades linearly to
  nothing, so stock nobody is racing for drifts toward the floor while pace and queue still count.
  Strongest, not a sum: each signal alone justifies its price, and one cannot be diluted by the
  others' silence.
"""

from __future__ import annotations

from typing import NamedTuple

from actors.inventory.changes import Change, SectionPriceChanged
from actors.inventory.commands import SetSectionPrice
from actors.inventory.errors import ErrorCode, invariant
from actors.inventory.event import EventInventory
from actors.inventory.results import Rejection, SectionPriceView

PERCENT = 100


class Demand(NamedTuple):
    """An event's live signals beyond its counters, gathered by the shard actor each round."""

    seconds_to_start: float | None = None  # None: unknown
    waiting: int = 0  # users in the event's waiting room: its line and its waiting list


class DemandRule(NamedTuple):
    """How the signals weigh (settings ``pricing_*``): see the module docstring."""

    interval_s: float
    velocity_horizon_s: float  # 0: pace ignored
    last_call_s: float  # 0: no last call


def demand_share(taken: int, for_sale: int, taken_delta: int, demand: Demand, rule: DemandRule) -> float:
    """How much of the way from floor to ceiling the target lies, in [0, 1]."""
    if for_sale <= 0:
        return 0.0
    taken = min(max(taken, 0), for_sale)
    remaining = for_sale - taken
    if remaining == 0:
        return 1.0
    share = taken / for_sale
    start_s = demand.seconds_to_start
    if rule.last_call_s > 0 and start_s is not None and start_s < rule.last_call_s:
        share *= max(0.0, start_s) / rule.last_call_s
    pace = 0.0
    if rule.velocity_horizon_s > 0 and taken_delta > 0:
        sell_out_s = remaining * rule.interval_s / taken_delta
        pace = min(1.0, rule.velocity_horizon_s / sell_out_s)
    queue = min(1.0, max(0, demand.waiting) / remaining)
    return max(share, pace, queue)


def next_price(current: int, floor: int, ceiling: int, taken: int, for_sale: int, step_max_percent: int,
               share: float | None = None) -> int:
    """The price one step after ``current``: toward the demand target, by at most the step bound.
    The target is `share` of the way from floor to ceiling (`demand_share`), or the share taken."""
    if for_sale <= 0:
        return min(max(current, floor), ceiling)
    taken = min(max(taken, 0), for_sale)
    if share is None:
        target = floor + (ceiling - floor) * taken // for_sale
    else:
        target = floor + int((ceiling - floor) * min(max(share, 0.0), 1.0))
    step = max(1, current * step_max_percent // PERCENT)
    moved = min(target, current + step) if target > current else max(target, current - step)
    return min(max(moved, floor), ceiling)


def propose_prices(event: EventInventory, step_max_percent: int, demand: Demand | None = None,
                   rule: DemandRule | None = None, taken_before: list[int] | None = None) -> list[tuple[str, int]]:
    """(section id, next price) for each dynamic section whose price would change now; with
    `demand` and `rule`, toward the demand target (`taken_before`: each section's held + sold at
    the last round, for the pace)."""
    proposals = []
    for section in event.layout.sections:
        pricing = section.pricing
        if pricing is None:
            continue
        index = section.index
        current = event.prices[index]
        taken, for_sale = event.held[index] + event.sold[index], section.capacity - event.blocked[index]
        share = None
        if demand is not None and rule is not None:
            delta = taken - taken_before[index] if taken_before is not None and index < len(taken_before) else 0
            share = demand_share(taken, for_sale, delta, demand, rule)
        proposed = next_price(current, pricing.floor_cents, pricing.ceiling_cents, taken, for_sale,
                              step_max_percent, share)
        if proposed != current:
            proposals.append((section.section_id, proposed))
    return proposals


def set_price(event: EventInventory, command: SetSectionPrice, now_s: float
              ) -> tuple[SectionPriceView, list[Change]] | Rejection:
    section = event.layout.section_by_id.get(command.section_id)
    if section is None or section.pricing is None:
        return Rejection(ErrorCode.VALIDATION_ERROR, f"no dynamically priced section {command.section_id!r}")
    pricing = section.pricing
    price_cents = command.price_cents
    if not pricing.floor_cents <= price_cents <= pricing.ceiling_cents:
        return Rejection(ErrorCode.VALIDATION_ERROR, f"price outside [{pricing.floor_cents}, {pricing.ceiling_cents}]")
    view = SectionPriceView(event.event_id, section.section_id, price_cents)
    from_cents = event.prices[section.index]
    if from_cents == price_cents:
        return view, []
    event.set_price(section, price_cents)
    check_prices(event)
    changed: Change = SectionPriceChanged(event.event_id, section.section_id, from_cents, price_cents, command.actor,
                                          now_s)
    return view, [changed]


def check_prices(event: EventInventory) -> None:
    """A dynamic section's price is within its bounds; a fixed section's is the layout's."""
    for section in event.layout.sections:
        price_cents, pricing = event.prices[section.index], section.pricing
        if pricing is None:
            invariant(price_cents == section.price_cents, "section %s: a fixed price moved", section.section_id)
        else:
            invariant(pricing.floor_cents <= price_cents <= pricing.ceiling_cents,
                      "section %s: price %d outside its bounds", section.section_id, price_cents)
        invariant(event.pool_item[section.index].price_cents == price_cents,
                  "section %s: the GA item's price is stale", section.section_id)
