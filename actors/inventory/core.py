"""The shard-level container: many events, one command path, the reads the API needs.

``ShardInventory.apply(command, now_s)`` is the only way state changes. It routes the command
to its event, decides, mutates, checks the invariants the command touched, and returns an
:class:`Outcome`: a typed result plus the change records to persist. Hold expiry goes through the
same path (``expire_due`` issues :class:`ExpireHold` commands), so the writer sees expiries
exactly like any other command. Nothing here reads a clock or generates an id.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

from actors.inventory import hold_decisions, pricing, ticket_decisions
from actors.inventory.changes import SYSTEM_ACTOR, Change, EventSoldOut, EventStatusChanged, IdempotencyRecorded
from actors.inventory.commands import (
    USER_COMMAND_TYPES,
    BeginCheckout,
    ChangeEventStatus,
    CheckIn,
    Command,
    ConfirmCheckout,
    ExpireHold,
    FailCheckout,
    HoldBestAvailable,
    HoldGeneralAdmission,
    HoldSeats,
    RefundOrder,
    ReleaseHold,
    SetSectionPrice,
    TransferTicket,
    UserCommand,
)
from actors.inventory.errors import ErrorCode, invariant
from actors.inventory.event import NOBODY, EventInventory
from actors.inventory.holds import Hold, HoldStatus
from actors.inventory.idempotency import (
    IdempotencyCache,
    Recorded,
    fingerprint,
)
from actors.inventory.invariants import check_all
from actors.inventory.layout import Layout
from actors.inventory.results import (
    EventStatusView,
    HoldView,
    OrderView,
    Outcome,
    Rejection,
    SeatMapRow,
    SectionAvailability,
    TicketView,
)
from actors.inventory.sales import EventSettings, EventStatus

_NOT_FOUND = -1
# expire_due pops this many due holds one by one before it sorts the heap instead (_pop_due).
_POPS_BEFORE_SORT = 256
_new = tuple.__new__
# Rejections not recorded under the command's idempotency key: a retry must be decided anew, since
# what refused it may be over (the event created by then; the buyer admitted from the queue).
_UNRECORDED = frozenset({ErrorCode.EVENT_NOT_FOUND, ErrorCode.QUEUE_TOKEN_REQUIRED})
# Generated ids carry their event's slot in bits 68-75 under version 8 (`shards.slots.new_id`).
_ID_VERSION = 8
_ID_SLOT_SHIFT = 68


def _slot_of_ids(command: Any) -> int | None:
    """The slot a keyed user command's hold, order or ticket id carries (every such command names
    one), None when that id is not one of ours."""
    value = getattr(command, "hold_id", None) or getattr(command, "order_id", None) or getattr(
        command, "ticket_id", None)
    if not isinstance(value, UUID) or value.version != _ID_VERSION:
        return None
    return int((value.int >> _ID_SLOT_SHIFT) & 0xFF)


_H = TypeVar("_H", HoldSeats, HoldGeneralAdmission, HoldBestAvailable)


@dataclass(frozen=True, slots=True)
class InventoryLimits:
    """Bounds of the core (STYLE §3). No defaults here: the shell builds them from its settings
    (`cluster.settings.ShardBounds.inventory_limits`), where each default lives, once."""

    hold_seats_max: int  # seats named in one HoldSeats
    hold_quantity_max: int  # tickets in one GA or best-available hold
    # Keys kept in memory; how long keys live is the shell's business (idempotency.py).
    idempotency_keys_max: int
    # Ended holds kept in memory so a late DELETE or checkout still gets HOLD_NOT_ACTIVE or
    # HOLD_EXPIRED rather than HOLD_NOT_FOUND. Commands and reads on an older one are answered
    # from Postgres by the shell (actors/ended_holds.py, actors/reads.py).
    closed_holds_max: int


class ShardInventory:
    def __init__(self, limits: InventoryLimits) -> None:
        self.limits = limits
        self.events: dict[UUID, EventInventory] = {}
        self.idempotency = IdempotencyCache(self.limits.idempotency_keys_max)
        # Hold indexes are keyed by ``hold_id.int``: UUID.__hash__ is Python code (~0.3 µs on the
        # reference machine) and a hold touches these dicts three times.
        self._holds: dict[int, Hold] = {}  # live holds (held, payment_pending)
        self._closed: OrderedDict[int, Hold] = OrderedDict()
        # (expires_at_s, sequence, hold_id.int): the sequence breaks ties in arrival order. The
        # entry names the hold by its index key rather than holding the object: a tuple of plain
        # numbers is untracked by the garbage collector after its first pass, so the heap (one
        # entry per hold ever taken until it is popped) adds nothing to later full collections.
        self._expiry: list[tuple[float, int, int]] = []
        self._sequence = itertools.count()
        self._handlers: dict[type[Any], Callable[[Any, float], Outcome]] = {
            HoldSeats: self._hold_seats,
            HoldGeneralAdmission: self._hold_pool,
            HoldBestAvailable: self._hold_best,
            ReleaseHold: self._release,
            ExpireHold: self._expire,
            BeginCheckout: self._begin_checkout,
            ConfirmCheckout: self._confirm_checkout,
            FailCheckout: self._fail_checkout,
            RefundOrder: self._refund,
            TransferTicket: self._transfer,
            CheckIn: self._check_in,
            ChangeEventStatus: self._change_status,
            SetSectionPrice: self._set_price,
        }

    # --- events --------------------------------------------------------------------------------

    def create_event(self, event_id: UUID, layout: Layout, settings: EventSettings) -> EventInventory:
        if event_id in self.events:
            raise ValueError(f"event {event_id} already exists on this shard")
        event = self.events[event_id] = EventInventory(event_id, layout, settings)
        return event

    def adopt_event(self, event: EventInventory, live_holds: Iterable[Hold]) -> None:
        """Recovery: take over an event rebuilt from rows, with its live holds, and check it."""
        check_all(event)
        pricing.check_prices(event)
        self.events[event.event_id] = event
        for hold in live_holds:
            self._track(hold)

    def knows_hold(self, hold_id: UUID) -> bool:
        """Whether commands on this hold are decided here: it is live, or ended recently enough."""
        key = hold_id.int
        return key in self._holds or key in self._closed

    def forget_event(self, event_id: UUID) -> None:
        """Recovery refused this event's rows: drop it and its holds, so nothing of it is served
        while the shard's other events are (the shell answers its calls as unavailable)."""
        event = self.events.pop(event_id, None)
        if event is None:
            return
        for index in (self._holds, self._closed):
            for hold_key in [key for key, hold in index.items() if hold.event is event]:
                del index[hold_key]

    # --- the command path ----------------------------------------------------------------------

    def apply(self, command: Command, now_s: float) -> Outcome:
        handler = self._handlers[type(command)]
        if isinstance(command, USER_COMMAND_TYPES) and command.idempotency_key is not None:
            return self._apply_once(command, command.idempotency_key, handler, now_s)
        return handler(command, now_s)

    def expire_due(self, now_s: float) -> list[Outcome]:
        """Expire every held hold with ``expires_at_s <= now_s``, in (expires_at_s, arrival) order:
        O(k log n) for k due holds, or one C sort when many are due (see ``_pop_due``)."""
        outcomes = []
        holds = self._holds
        for expires_at_s, _, hold_key in self._pop_due(now_s):
            hold = holds.get(hold_key)  # None once ended: only live holds are in the index
            if hold is not None and hold.status is HoldStatus.HELD and hold.expires_at_s == expires_at_s:
                outcomes.append(self.apply(ExpireHold(hold.hold_id), now_s))
        return outcomes

    def _pop_due(self, now_s: float) -> list[tuple[float, int, int]]:
        """Remove and return the due heap entries, smallest first.

        A tick normally finds a few due holds: ``heappop`` each. After a stall or a restart
        thousands are due at once, and 50k heappops (Python-level calls, ~16 tuple comparisons
        each) cost more than sorting the whole heap in C: a sorted list is a valid heap, so the
        due entries are then one prefix and the rest stays a heap.
        """
        heap = self._expiry
        due: list[tuple[float, int, int]] = []
        while heap and heap[0][0] <= now_s:
            if len(due) == _POPS_BEFORE_SORT:
                heap.sort()
                cut = bisect.bisect_right(heap, (now_s, math.inf))
                due += heap[:cut]
                del heap[:cut]
                break
            due.append(heapq.heappop(heap))
        return due

    def _apply_once(
        self, command: UserCommand, key: str, handler: Callable[[Any, float], Outcome], now_s: float
    ) -> Outcome:
        request = fingerprint(command)
        recorded = self.idempotency.lookup(command.user_id, key)
        if recorded is not None:
            if recorded.fingerprint != request:
                return Outcome(
                    Rejection(
                        ErrorCode.IDEMPOTENCY_KEY_REUSED,
                        "this idempotency key was used for a different request",
                    )
                )
            return Outcome(recorded.result, (), replayed=True)
        outcome = handler(command, now_s)
        result = outcome.result
        if isinstance(result, Rejection) and result.code in _UNRECORDED:
            return outcome
        self.idempotency.record(command.user_id, key, Recorded(request, result, now_s))
        return Outcome(result, (*outcome.changes, IdempotencyRecorded(command.user_id, key, request, result, now_s,
                                                                        _slot_of_ids(command))))

    def _track(self, hold: Hold) -> None:
        hold_key = hold.hold_id.int
        self._holds[hold_key] = hold
        heapq.heappush(self._expiry, (hold.expires_at_s, next(self._sequence), hold_key))

    def _close(self, hold: Hold) -> None:
        del self._holds[hold.hold_id.int]
        self._closed[hold.hold_id.int] = hold
        if len(self._closed) > self.limits.closed_holds_max:
            self._closed.popitem(last=False)

    # --- holds ---------------------------------------------------------------------------------

    def _hold_seats(self, command: HoldSeats, now_s: float) -> Outcome:
        return self._hold(command, hold_decisions.hold_seats, now_s, self.limits.hold_seats_max)

    def _hold_pool(self, command: HoldGeneralAdmission, now_s: float) -> Outcome:
        return self._hold(command, hold_decisions.hold_pool, now_s, self.limits.hold_quantity_max)

    def _hold_best(self, command: HoldBestAvailable, now_s: float) -> Outcome:
        return self._hold(command, hold_decisions.hold_best, now_s, self.limits.hold_quantity_max)

    def _hold(
        self, command: _H, place: Callable[[EventInventory, _H, float, int], hold_decisions.Placed], now_s: float,
        items_max: int,
    ) -> Outcome:
        event = self.events.get(command.event_id)
        if event is None:
            return Outcome(Rejection(ErrorCode.EVENT_NOT_FOUND, "no such event"))
        hold_key = command.hold_id.int
        if hold_key in self._holds or hold_key in self._closed:
            return Outcome(Rejection(ErrorCode.VALIDATION_ERROR, "hold id already used"))
        placed = place(event, command, now_s, items_max)
        if isinstance(placed, Rejection):
            return Outcome(placed)
        hold, changes, view = placed
        self._holds[hold_key] = hold
        heapq.heappush(self._expiry, (hold.expires_at_s, next(self._sequence), hold_key))  # _track, inlined
        # tuple.__new__ skips Outcome's generated __new__ (see hold_decisions.py); ``replayed`` is False.
        return _new(Outcome, (view, changes, False))

    def _owned_hold(self, hold_id: UUID, user_id: str) -> Hold | Rejection:
        hold = self._holds.get(hold_id.int) or self._closed.get(hold_id.int)
        if hold is None or hold.event.find_user(user_id) != hold.user:
            return Rejection(ErrorCode.HOLD_NOT_FOUND, "no such hold")
        return hold

    def _end(
        self, hold: Hold, to_status: HoldStatus, actor: str, now_s: float, rejection: Rejection | None = None
    ) -> Outcome:
        changes = hold_decisions.end_hold(hold, to_status, actor, now_s)
        self._close(hold)
        return _new(Outcome, (rejection or hold.event.hold_view(hold), changes, False))

    def _release(self, command: ReleaseHold, now_s: float) -> Outcome:
        hold = self._owned_hold(command.hold_id, command.user_id)
        if isinstance(hold, Rejection):
            return Outcome(hold)
        if hold.status is not HoldStatus.HELD:
            return Outcome(Rejection(ErrorCode.HOLD_NOT_ACTIVE, f"the hold is {hold.status}"))
        if hold.expires_at_s <= now_s:  # due, but the expiry tick has not run yet
            return self._end(
                hold,
                HoldStatus.EXPIRED,
                SYSTEM_ACTOR,
                now_s,
                Rejection(ErrorCode.HOLD_NOT_ACTIVE, "the hold has expired"),
            )
        return self._end(hold, HoldStatus.RELEASED, command.user_id, now_s)

    def _expire(self, command: ExpireHold, now_s: float) -> Outcome:
        hold = self._holds.get(command.hold_id.int)
        if hold is None or hold.status is not HoldStatus.HELD or hold.expires_at_s > now_s:
            return Outcome(Rejection(ErrorCode.HOLD_NOT_ACTIVE, "nothing to expire"))
        return self._end(hold, HoldStatus.EXPIRED, SYSTEM_ACTOR, now_s)

    def _begin_checkout(self, command: BeginCheckout, now_s: float) -> Outcome:
        hold = self._owned_hold(command.hold_id, command.user_id)
        if isinstance(hold, Rejection):
            return Outcome(hold)
        if hold.status is HoldStatus.EXPIRED:
            return Outcome(Rejection(ErrorCode.HOLD_EXPIRED, "the hold has expired"))
        if hold.status is not HoldStatus.HELD:
            return Outcome(Rejection(ErrorCode.HOLD_NOT_ACTIVE, f"the hold is {hold.status}"))
        if hold.expires_at_s <= now_s:
            return self._end(
                hold,
                HoldStatus.EXPIRED,
                SYSTEM_ACTOR,
                now_s,
                Rejection(ErrorCode.HOLD_EXPIRED, "the hold has expired"),
            )
        if hold.event.settings.status is EventStatus.CANCELLED:
            return Outcome(Rejection(ErrorCode.EVENT_CANCELLED, "the event is cancelled"))
        changes = hold_decisions.pin_hold(hold, command.user_id, now_s)
        return _new(Outcome, (hold.event.hold_view(hold), changes, False))

    def _pinned_hold(self, hold_id: UUID, user_id: str) -> Hold | Rejection:
        hold = self._owned_hold(hold_id, user_id)
        if not isinstance(hold, Rejection) and hold.status is not HoldStatus.PAYMENT_PENDING:
            return Rejection(ErrorCode.HOLD_NOT_ACTIVE, f"the hold is {hold.status}, not payment_pending")
        return hold

    def _confirm_checkout(self, command: ConfirmCheckout, now_s: float) -> Outcome:
        hold = self._pinned_hold(command.hold_id, command.user_id)
        if isinstance(hold, Rejection):
            return Outcome(hold)
        if hold.event.settings.status is EventStatus.CANCELLED:
            # Cancelled while the payment was in flight: the hold fails (the checkout refunds the
            # charge it made), so no order appears after the cancellation counted its orders.
            cancelled = Rejection(ErrorCode.EVENT_CANCELLED, "the event is cancelled")
            return self._end(hold, HoldStatus.FAILED, SYSTEM_ACTOR, now_s, cancelled)
        sold = hold_decisions.sell_hold(hold, command, now_s)
        if isinstance(sold, Rejection):
            return Outcome(sold)
        self._close(hold)
        view, changes = sold
        if hold.event.sold_out():
            changes.append(EventSoldOut(hold.event.event_id, now_s))
        return Outcome(view, tuple(changes))

    def _fail_checkout(self, command: FailCheckout, now_s: float) -> Outcome:
        hold = self._pinned_hold(command.hold_id, command.user_id)
        if isinstance(hold, Rejection):
            return Outcome(hold)
        return self._end(hold, HoldStatus.FAILED, command.user_id, now_s)

    # --- orders and tickets ----------------------------------------------------------------------

    def _find_order(self, order_id: UUID) -> tuple[EventInventory, int] | None:
        key = order_id.bytes
        for event in self.events.values():
            order = event.tickets.order_ids.find(key)
            if order != _NOT_FOUND:
                return event, order
        return None

    def _find_ticket(self, ticket_id: UUID) -> tuple[EventInventory, int] | None:
        """Tickets are found by searching each event's index: a shard owns tens of events, and a
        shard-wide index would cost ~20 more bytes per ticket."""
        key = ticket_id.bytes
        for event in self.events.values():
            ticket = event.tickets.ids.find(key)
            if ticket != _NOT_FOUND:
                return event, ticket
        return None

    def _refund(self, command: RefundOrder, now_s: float) -> Outcome:
        found = self._find_order(command.order_id)
        if found is None or not (
            command.by_organizer or found[0].find_user(command.user_id) == found[0].tickets.order_buyer[found[1]]
        ):
            return Outcome(Rejection(ErrorCode.ORDER_NOT_FOUND, "no such order"))
        refunded = ticket_decisions.refund_order(*found, command, now_s)
        return Outcome(refunded) if isinstance(refunded, Rejection) else Outcome(refunded[0], tuple(refunded[1]))

    def _transfer(self, command: TransferTicket, now_s: float) -> Outcome:
        found = self._find_ticket(command.ticket_id)
        if found is None or found[0].find_user(command.user_id) != found[0].tickets.owner[found[1]]:
            return Outcome(Rejection(ErrorCode.TICKET_NOT_FOUND, "no such ticket"))
        moved = ticket_decisions.transfer_ticket(*found, command, now_s)
        return Outcome(moved) if isinstance(moved, Rejection) else Outcome(moved[0], tuple(moved[1]))

    def _check_in(self, command: CheckIn, now_s: float) -> Outcome:
        found = self._find_ticket(command.ticket_id)
        if found is None:
            return Outcome(Rejection(ErrorCode.TICKET_NOT_FOUND, "no such ticket"))
        admitted = ticket_decisions.check_in(*found, command.gate, now_s)
        return Outcome(admitted) if isinstance(admitted, Rejection) else Outcome(admitted[0], tuple(admitted[1]))

    def _change_status(self, command: ChangeEventStatus, now_s: float) -> Outcome:
        event = self.events.get(command.event_id)
        if event is None:
            return Outcome(Rejection(ErrorCode.EVENT_NOT_FOUND, "no such event"))
        from_status = event.settings.status
        if from_status is EventStatus.CANCELLED and command.status is not EventStatus.CANCELLED:
            return Outcome(Rejection(ErrorCode.EVENT_CANCELLED, "a cancelled event stays cancelled"))
        event.settings = EventSettings(
            event.settings.currency,
            event.settings.hold_seconds,
            event.settings.per_person_limit,
            event.settings.sale_windows,
            command.status,
            event.settings.queue_required,  # a pause must not take the event out of queue mode
        )
        change: Change = EventStatusChanged(
            event.event_id, from_status.value, command.status.value, command.actor, now_s
        )
        return Outcome(EventStatusView(event.event_id, command.status.value), (change,))

    def _set_price(self, command: SetSectionPrice, now_s: float) -> Outcome:
        event = self.events.get(command.event_id)
        if event is None:
            return Outcome(Rejection(ErrorCode.EVENT_NOT_FOUND, "no such event"))
        priced = pricing.set_price(event, command, now_s)
        return Outcome(priced) if isinstance(priced, Rejection) else Outcome(priced[0], tuple(priced[1]))

    def price_commands(
        self,
        step_max_percent: int,
        actor: str = SYSTEM_ACTOR,
        demands: dict[UUID, pricing.Demand] | None = None,
        rule: pricing.DemandRule | None = None,
        taken_before: dict[UUID, list[int]] | None = None,
    ) -> list[SetSectionPrice]:
        """One ``SetSectionPrice`` per dynamic section whose price moves now (pricing.py's rule):
        toward the share taken, or with `demands` and `rule` toward each event's demand."""
        commands = []
        for event_id, event in self.events.items():
            demand = demands.get(event_id) if demands is not None else None
            before = taken_before.get(event_id) if taken_before is not None else None
            for section_id, price_cents in pricing.propose_prices(event, step_max_percent, demand, rule, before):
                commands.append(SetSectionPrice(event_id, section_id, price_cents, actor))
        return commands

    def taken_by_section(self) -> dict[UUID, list[int]]:
        """Held + sold of every section of every event with a dynamic section (the pace's memory)."""
        return {
            event_id: [held + sold for held, sold in zip(event.held, event.sold, strict=True)]
            for event_id, event in self.events.items()
            if any(section.pricing is not None for section in event.layout.sections)
        }

    # --- reads ---------------------------------------------------------------------------------

    def availability(self, event_id: UUID) -> tuple[SectionAvailability, ...] | None:
        event = self.events.get(event_id)
        return None if event is None else event.availability()

    def seat_map(self, event_id: UUID, section_id: str) -> tuple[SeatMapRow, ...] | None:
        event = self.events.get(event_id)
        return None if event is None else event.seat_map(section_id)

    def hold(self, hold_id: UUID, user_id: str | None = None) -> HoldView | None:
        """A hold's view; with ``user_id``, only if that user owns it (None for the system)."""
        hold = self._holds.get(hold_id.int) or self._closed.get(hold_id.int)
        if hold is None or (user_id is not None and hold.event.find_user(user_id) != hold.user):
            return None
        return hold.event.hold_view(hold)

    def live_hold_count(self) -> int:
        return len(self._holds)

    def live_holds(self) -> list[Hold]:
        return list(self._holds.values())

    def order(self, order_id: UUID, user_id: str | None = None) -> OrderView | None:
        found = self._find_order(order_id)
        if found is None:
            return None
        event, order = found
        if user_id is not None and event.find_user(user_id) != event.tickets.order_buyer[order]:
            return None
        return event.order_view(order)

    def ticket(self, ticket_id: UUID, user_id: str | None = None) -> TicketView | None:
        found = self._find_ticket(ticket_id)
        if found is None:
            return None
        event, ticket = found
        if user_id is not None and event.find_user(user_id) != event.tickets.owner[ticket]:
            return None
        return event.ticket_view(ticket)

    def user_tickets(self, event_id: UUID, user_id: str) -> tuple[TicketView, ...]:
        """The user's tickets for the event that are theirs now (valid, checked in or refunded)."""
        event = self.events.get(event_id)
        user = NOBODY if event is None else event.find_user(user_id)
        if event is None or user == NOBODY:
            return ()
        return tuple(
            event.ticket_view(serial)
            for serial in event.tickets.owned_by(user)
            if serial not in event.tickets.successor
        )

    def check_all(self) -> None:
        """Recount every event from scratch (recovery, tests)."""
        for event in self.events.values():
            check_all(event)
            pricing.check_prices(event)
        live = [hold for event in self.events.values() for hold in event.hold_table if hold is not None]
        invariant(
            len(live) == len(self._holds) and all(self._holds.get(h.hold_id.int) is h for h in live),
            "the shard's hold index and the events' hold tables differ",
        )
