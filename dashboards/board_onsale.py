"""The On-sale dashboard: what a flash sale looks like from the buyers' side, and the hold SLOs.

Stock per event and section comes from `ticketing_section_tickets` (each actor's memory at scrape
time, at most `metrics_sections_max` sections per shard); rates by shard from the actors' counters.
"""

from __future__ import annotations

from dashboards import slo
from dashboards.panels import (
    INSTANCE,
    ON_INSTANCE,
    ON_SHARD,
    RATE_WINDOW,
    RED,
    SHARD,
    YELLOW,
    Dashboard,
    Threshold,
    datasource_variable,
    increase_in_range,
    or_zero,
    panel,
    quantile,
    rate,
    row,
    setting_default,
    share,
    stat,
)

HOLDS = f'route="{slo.HOLD_ROUTE}", method="{slo.HOLD_METHOD}"'
QUEUE_ROUTE = 'route="/v1/events/{event_id}/queue"'
ENDED = 'result=~"converted|expired|released"'
CONVERTED = 'result="converted"'
SERVER_ERRORS = 'status=~"5.."'
AVAILABILITY_BUDGET = slo.budget(slo.HOLD_AVAILABILITY_OBJECTIVE)
LATENCY_BUDGET = slo.budget(slo.HOLD_LATENCY_OBJECTIVE)
PAGE_BURN, SECOND_PAGE_BURN = (burn for burn, _, _ in slo.PAGE_BURNS)


def _burn_queries(recorded: str, objective_budget: float) -> tuple[tuple[str, str], ...]:
    windows = ("5m", "30m", "1h", "6h")
    return tuple((f"{recorded.format(window=window)} / {objective_budget}", f"over {window}") for window in windows)


SALES = row(
    "Sales now",
    stat("Tickets sold in the time range", "Tickets issued by confirmed checkouts over the whole time range "
         "picked above (transfers do not count), on the selected shards.", "short",
         (increase_in_range("ticketing_tickets_issued_total", "", ON_SHARD), "tickets")),
    stat("Holds created in the time range", "Holds placed (seats, GA, best available) over the time range.",
         "short", (increase_in_range("ticketing_holds_total", "", ON_SHARD, 'result="created"'), "holds")),
    stat("Hold conversion in the time range", "Of the holds that ended in the time range, the share that was "
         "bought (the rest expired or were released): the sale's sell-through, per hold.", "percentunit",
         (f"{increase_in_range('ticketing_holds_total', '', ON_SHARD, CONVERTED)}"
          f" / {increase_in_range('ticketing_holds_total', '', ON_SHARD, ENDED)}", "bought")),
    stat("Active holds now", "Holds live now (held or payment pending) on the selected shards: seats and tickets "
         "out of stock until bought, released or expired. Sampled by each actor's expiry tick.", "short",
         ("sum(ticketing_active_holds{" + ON_SHARD + "})", "active holds")),
    panel("Tickets left per event section", "Tickets available now in each event's section (held and sold "
          "ones excluded), from the actors' memory at scrape time; a line reaching 0 is a section selling out. "
          "Event ids: GET /v1/events/{id}.", "short",
          ("sum by (event, section) (ticketing_section_tickets{" + ON_SHARD + ', state="available"})',
           "{{event}} {{section}}"),
          ("max(ticketing_section_metrics_omitted{" + ON_SHARD + "})", "sections not exported")),
    panel("Sell-through per event section", "Share of each section's sellable tickets (blocked seats aside) "
          "that are sold; held tickets count as not sold yet.", "percentunit",
          ("sum by (event, section) (ticketing_section_tickets{" + ON_SHARD + ', state="sold"})'
           " / sum by (event, section) (ticketing_section_tickets{" + ON_SHARD + ', state!="blocked"})',
           "{{event}} {{section}}")),
    panel("Price per event section", "What a new hold pays now in each event's section (cents), from the actors' "
          "memory at scrape time: flat for a fixed price; a dynamic section's moves with demand by bounded steps "
          "within its floor and ceiling (docs/organizers.md \"Dynamic pricing\"); holds and tickets keep their own.",
          "short",
          ("max by (event, section) (ticketing_section_price_cents{" + ON_SHARD + "})", "{{event}} {{section}}"),
          ("sum(increase(ticketing_price_changes_total{" + ON_SHARD + "}[" + RATE_WINDOW + "]))",
           "price moves in the window")),
    panel("Holds created per second, by shard", "Successful holds per second (POST /v1/holds answered 201), "
          "counted by the shard actors after commit.", "ops",
          (rate("ticketing_holds_total", "shard", ON_SHARD, 'result="created"'), "shard {{shard}}"), stack=True),
    panel("Checkouts per second, by result", "Checkout attempts by outcome: confirmed (paid, tickets issued), "
          "declined, gateway errors, refunded, and hold errors (expired, not found).", "ops",
          (rate("ticketing_checkouts_total", "result", ON_INSTANCE), "{{result}}")),
    panel("Tickets sold per second, by shard", "Tickets issued by confirmed checkouts, per second: the sale's "
          "sell-through rate. Per event and section the stock is in GET /v1/events/{id}/availability.", "ops",
          (rate("ticketing_tickets_issued_total", "shard", ON_SHARD), "shard {{shard}}"), stack=True),
    panel("Hold conversion over time", "Of the holds ending in each interval, the share bought (converted to an "
          "order); a drop means buyers fail at checkout or let holds expire.", "percentunit",
          (f'{rate("ticketing_holds_total", "", ON_SHARD, CONVERTED)}'
           f' / {rate("ticketing_holds_total", "", ON_SHARD, ENDED)}', "bought")),
    panel("Active holds, by shard", "Live holds (held or payment pending) per shard, sampled each expiry tick.",
          "short", ("sum by (shard) (ticketing_active_holds{" + ON_SHARD + "})", "shard {{shard}}"), stack=True),
    panel("Hold transitions per second, by result", "Holds created, released by the buyer, expired by the "
          "actor's timer, and converted to orders.", "ops",
          (rate("ticketing_holds_total", "result", ON_SHARD), "{{result}}")),
    panel("Conflicts per second, by reason", "Commands the inventory refused, by error code (SOLD_OUT, "
          "SEAT_TAKEN, LIMIT_EXCEEDED, HOLD_EXPIRED, …): expected answers that show the sale's pressure.", "ops",
          (rate("ticketing_conflicts_total", "reason", ON_SHARD), "{{reason}}")),
)

HOLD_SLOS = row(
    "Hold SLOs (POST /v1/holds)",
    panel("POST /v1/holds latency p50 / p99", f"Router-side latency of holds. The latency objective: "
          f"{slo.HOLD_LATENCY_OBJECTIVE:.0%} within {slo.HOLD_LATENCY_THRESHOLD_S} s (the red line); alerts "
          "TicketingHoldLatencyBudgetBurn and TicketingHoldLatencyHigh (p99 above 2 s).", "s",
          (quantile(0.5, "ticketing_http_request_duration_seconds", "", HOLDS, ON_INSTANCE), "p50"),
          (quantile(0.99, "ticketing_http_request_duration_seconds", "", HOLDS, ON_INSTANCE), "p99"),
          thresholds=(Threshold(slo.HOLD_LATENCY_THRESHOLD_S),)),
    panel(f"POST /v1/holds answered within {slo.HOLD_LATENCY_THRESHOLD_S} s", "The latency SLI: the share of "
          f"holds answered within {slo.HOLD_LATENCY_THRESHOLD_S} s (a bucket of the latency histogram). Below "
          f"the objective ({slo.HOLD_LATENCY_OBJECTIVE:.0%}) the error budget burns.", "percentunit",
          (f'sum(rate(ticketing_http_request_duration_seconds_bucket{{{HOLDS}, {ON_INSTANCE}, '
           f'le="{slo.HOLD_LATENCY_THRESHOLD_S}"}}[{RATE_WINDOW}]))'
           f' / {rate("ticketing_http_request_duration_seconds_count", "", HOLDS, ON_INSTANCE)}', "within"),
          thresholds=(Threshold(slo.HOLD_LATENCY_OBJECTIVE, "green"),), base=RED),
    panel("POST /v1/holds error ratio (5xx)", "The availability SLI: the share of holds answered with a 5xx "
          f"(503 overloaded or shard unavailable, 500). Yellow: the budget ({AVAILABILITY_BUDGET:.1%}); red: "
          f"{PAGE_BURN}× the budget, where a sustained hour pages.", "percentunit",
          (share(rate("ticketing_http_requests_total", "", HOLDS, ON_INSTANCE, SERVER_ERRORS),
                 rate("ticketing_http_requests_total", "", HOLDS, ON_INSTANCE)), "5xx"),
          thresholds=(Threshold(AVAILABILITY_BUDGET, YELLOW), Threshold(PAGE_BURN * AVAILABILITY_BUDGET))),
    panel("POST /v1/holds answers per second, by status", "Every hold answer: 201 created, 409/410 conflicts, "
          "422 invalid, 429 rate limited, 503 overloaded or unavailable.", "reqps",
          (rate("ticketing_http_requests_total", "status", HOLDS, ON_INSTANCE), "{{status}}"), stack=True),
    panel("Error budget burn rate: hold availability", "How fast the 30-day availability budget burns "
          "(1 = exactly on budget), from the recording rules in dashboards/alerts.yml. Pages when both 1 h and "
          f"5 min are above {PAGE_BURN} (or 6 h and 30 min above {SECOND_PAGE_BURN}).", "none",
          *_burn_queries(slo.AVAILABILITY_ERROR_RATIO, AVAILABILITY_BUDGET),
          thresholds=(Threshold(SECOND_PAGE_BURN, YELLOW), Threshold(PAGE_BURN))),
    panel("Error budget burn rate: hold latency", "How fast the 30-day latency budget burns (1 = on budget), "
          "from the recording rules in dashboards/alerts.yml; pages as the availability burn does.", "none",
          *_burn_queries(slo.LATENCY_SLOW_RATIO, LATENCY_BUDGET),
          thresholds=(Threshold(SECOND_PAGE_BURN, YELLOW), Threshold(PAGE_BURN))),
)

WAITING_ROOM = row(
    "Waiting room",
    panel("Waiting room joins and polls per second, by answer", "Answers of POST/GET /v1/events/{id}/queue: "
          "waiting, early, admitted, sold_out, waiting_list, expired, full; and waiting users told sold out.",
          "reqps", (rate("ticketing_queue_steps_total", "kind, status", ON_INSTANCE), "{{kind}} {{status}}"),
          (rate("ticketing_queue_sold_out_answers_total", "", ON_INSTANCE), "told sold out")),
    panel("Users waiting in the line", "The waiting room's depth: users in an event's line as each join or "
          "poll saw it (p50 and p99 over the interval).", "short",
          (quantile(0.5, "ticketing_queue_line_length", "", ON_INSTANCE), "p50"),
          (quantile(0.99, "ticketing_queue_line_length", "", ON_INSTANCE), "p99")),
    panel("Waiting room admissions per second", "Users admitted (from the waiting list too), dropped for not "
          "polling, admissions used for a hold (failed: Redis did not take the mark), admitted late or early "
          "of their ETA, and early joiners shuffled at an opening.", "ops",
          (rate("ticketing_queue_admitted_total", "", ON_INSTANCE), "admitted"),
          (rate("ticketing_queue_dropped_total", "", ON_INSTANCE), "dropped"),
          (rate("ticketing_queue_admissions_used_total", "result", ON_INSTANCE), "used for a hold {{result}}"),
          (rate("ticketing_queue_eta_error_seconds_count", "direction", ON_INSTANCE), "admitted {{direction}}"),
          (rate("ticketing_queue_waitlist_admitted_total", "", ON_INSTANCE), "admitted from the waiting list"),
          (rate("ticketing_queue_shuffled_total", "", ON_INSTANCE), "shuffled at an opening")),
    panel("Waiting list after sell-out: length", "Users on an event's waiting list (after a sell-out, waiting "
          "for returned tickets), as each join or poll saw it.", "short",
          (quantile(0.5, "ticketing_queue_waitlist_length", "", ON_INSTANCE), "p50"),
          (quantile(0.99, "ticketing_queue_waitlist_length", "", ON_INSTANCE), "p99")),
    panel("ETA error: admitted vs first ETA, p50 / p99", "How far admissions missed the ETA of the answer that "
          "placed the user in line, late or early (docs/operations.md, 'ETA error large').", "s",
          (quantile(0.5, "ticketing_queue_eta_error_seconds", "direction", ON_INSTANCE), "p50 {{direction}}"),
          (quantile(0.99, "ticketing_queue_eta_error_seconds", "direction", ON_INSTANCE), "p99 {{direction}}")),
    panel("Waiting room full or unavailable, answers per second", "Joins refused because the line is full "
          "(TICKETING_QUEUE_WAITING_MAX; alert TicketingWaitingRoomFull) and queue calls answered 503 because "
          "Redis failed (alert TicketingWaitingRoomUnavailable).", "reqps",
          (rate("ticketing_queue_steps_total", "kind", ON_INSTANCE, 'status="full"'), "{{kind}} full"),
          (or_zero(rate("ticketing_http_requests_total", "method", QUEUE_ROUTE, 'status="503"', ON_INSTANCE),
                   rate("ticketing_http_requests_total", "method", QUEUE_ROUTE, ON_INSTANCE)), "{{method}} 503"),
          thresholds=(Threshold(0.001),)),
)

CHECKOUT = row(
    "Checkout and payments",
    panel("Payment gateway calls per second, by outcome", "Charges and refunds sent to the gateway, by outcome "
          "(succeeded, declined, error, timeout, unknown).", "ops",
          (rate("ticketing_payment_calls_total", "operation, outcome", ON_INSTANCE), "{{operation}} {{outcome}}")),
    panel("Payment gateway latency p99", "p99 of gateway calls by operation; the red line is the default "
          "TICKETING_GATEWAY_CALL_TIMEOUT_S.", "s",
          (quantile(0.99, "ticketing_payment_call_duration_seconds", "operation", ON_INSTANCE), "{{operation}}"),
          thresholds=(Threshold(setting_default("gateway_call_timeout_s")),)),
    panel("Checkout resolver, refunds and transfers per second", "The resolver's decisions on pinned holds and "
          "owed refunds (and what it could not settle), order refunds and ticket transfers by result.", "ops",
          (rate("ticketing_checkout_resolutions_total", "result", ON_INSTANCE), "resolver {{result}}"),
          (rate("ticketing_checkout_unsettled_total", "kind, reason", ON_INSTANCE), "unsettled {{kind}} {{reason}}"),
          (rate("ticketing_refunds_total", "result", ON_INSTANCE), "refund {{result}}"),
          (rate("ticketing_transfers_total", "result", ON_INSTANCE), "transfer {{result}}")),
    panel("Check-ins per second, by result", "Gate scans: as the shard actors decided them and as the router "
          "answered them (admitted, already checked in, not valid, …).", "ops",
          (rate("ticketing_checkins_total", "result", ON_SHARD), "actor {{result}}"),
          (rate("ticketing_http_checkins_total", "result", ON_INSTANCE), "router {{result}}")),
    panel("Event cancellations: orders refunded per second", "Orders of cancelled events refunded by the "
          "cancellation (router/cancellation.py): refunded, already refunded (done before), failed (retried "
          "with backoff).", "ops",
          (rate("ticketing_cancellation_refunds_total", "result", ON_INSTANCE), "{{result}}")),
    panel("Event cancellations: orders left to refund, by shard", "Confirmed orders of cancelled events: it "
          "falls to 0 as a cancellation completes (alert TicketingCancellationStalled when it stops falling).",
          "short", ("max by (shard) (ticketing_cancellation_backlog_orders{" + ON_INSTANCE + "})", "shard {{shard}}")),
)

DASHBOARD = Dashboard(
    uid="ticketing-onsale", title="Ticketing · On-sale",
    description="A flash sale from the buyers' side: holds, checkouts, sell-through, waiting room, hold SLOs.",
    variables=(datasource_variable(), INSTANCE, SHARD),
    rows=(SALES, HOLD_SLOS, WAITING_ROOM, CHECKOUT),
)
