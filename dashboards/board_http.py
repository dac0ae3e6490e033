"""The HTTP dashboard: rate, errors and duration per route, readiness and scrape targets, rate limits,
public reads, browsing and the live seat maps, webhooks, e-mailed tickets."""

from __future__ import annotations

from dashboards.panels import (
    INSTANCE,
    ON_INSTANCE,
    ON_ROUTE,
    ROUTE,
    YELLOW,
    Dashboard,
    Threshold,
    datasource_variable,
    mean,
    panel,
    quantile,
    rate,
    row,
    share,
)

SERVER_ERRORS = 'status=~"5.."'
NOT_FROM_SHARD = 'source!="shard"'
UP_OR_DOWN = ((1, "up", "green"), (0, "down", "red"))
SCRAPE_JOBS = 'job=~"ticketing-router|ticketing-actors|ray"'

RED_PER_ROUTE = row(
    "Requests, errors and duration per route",
    panel("Requests per second, by route", "Every answered request, by route template and method.", "reqps",
          (rate("ticketing_http_requests_total", "route, method", ON_ROUTE, ON_INSTANCE), "{{method}} {{route}}")),
    panel("Server errors (5xx) as a share of requests, by route", "The error ratio per route: 5xx answers over "
          "all answers. Yellow: 0.1 %, the hold availability budget; red: 1 %.", "percentunit",
          (share(rate("ticketing_http_requests_total", "route, method", ON_ROUTE, ON_INSTANCE, SERVER_ERRORS),
                 rate("ticketing_http_requests_total", "route, method", ON_ROUTE, ON_INSTANCE)),
           "{{method}} {{route}}"),
          thresholds=(Threshold(0.001, YELLOW), Threshold(0.01))),
    panel("Requests per second, by route and status", "Every answer by route and status code: 2xx, the "
          "expected 4xx (conflicts, rate limits), 5xx.", "reqps",
          (rate("ticketing_http_requests_total", "route, status", ON_ROUTE, ON_INSTANCE), "{{route}} {{status}}")),
    panel("Latency p50, by route", "Median router-side latency per route.", "s",
          (quantile(0.5, "ticketing_http_request_duration_seconds", "route", ON_ROUTE, ON_INSTANCE), "{{route}}")),
    panel("Latency p99, by route", "p99 router-side latency per route. Yellow: 0.5 s, the hold latency "
          "objective's bound; red: 2 s (alert TicketingHoldLatencyHigh for POST /v1/holds).", "s",
          (quantile(0.99, "ticketing_http_request_duration_seconds", "route", ON_ROUTE, ON_INSTANCE), "{{route}}"),
          thresholds=(Threshold(0.5, YELLOW), Threshold(2.0))),
    panel("Requests in flight", "Requests being served now, summed over the router's workers.", "short",
          ("sum by (instance) (ticketing_http_requests_in_flight{" + ON_INSTANCE + "})", "{{instance}}")),
    panel("Refused at the edge or rate limited, per second", "Requests refused before a handler ran (body too "
          "large, deadline) and requests answered 429 by a rate limit.", "reqps",
          (rate("ticketing_http_rejected_total", "reason", ON_INSTANCE), "edge {{reason}}"),
          (rate("ticketing_rate_limited_total", "scope", ON_INSTANCE), "rate limited {{scope}}")),
)

HEALTH = row(
    "Readiness and scrape targets",
    panel("Readiness by component", "Each component as the readiness prober last saw it: Ray, every shard "
          "actor, every Postgres shard, Redis (alerts TicketingComponentDown, TicketingRedisDown).", "none",
          ("min by (component) (ticketing_component_up{" + ON_INSTANCE + "})", "{{component}}"),
          kind="state-timeline", mappings=UP_OR_DOWN),
    panel("Scrape targets", "Whether Prometheus reaches each metrics endpoint: the router's /metrics, the "
          "actors' /metrics/actors and Ray's own export (alerts TicketingScrapeTargetDown, "
          "TicketingScrapeJobAbsent).", "none",
          ("min by (job, instance) (up{" + SCRAPE_JOBS + "})", "{{job}} {{instance}}"),
          kind="state-timeline", mappings=UP_OR_DOWN),
)

RATE_LIMITS = row(
    "Rate limits",
    panel("Rate-limit checks per Redis call", "A worker sends the checks waiting in it as one Redis call: the "
          "mean and p99 size of those calls.", "short",
          (mean("ticketing_rate_limit_batch_size", "", ON_INSTANCE), "mean"),
          (quantile(0.99, "ticketing_rate_limit_batch_size", "", ON_INSTANCE), "p99")),
    panel("Rate-limit checks failed open per second, by reason", "Checks admitted unchecked because Redis failed, "
          "timed out or fell behind: rate limits are off meanwhile (alert TicketingRateLimitsFailingOpen).", "ops",
          (rate("ticketing_rate_limit_fail_open_total", "reason", ON_INSTANCE), "{{reason}}")),
)

PUBLIC_READS = row(
    "Public reads",
    panel("Availability and seat-map reads per second, by source", "Where public reads were answered from: a "
          "snapshot, another request's read (shared), or the shard actor.", "ops",
          (rate("ticketing_read_snapshots_total", "source", ON_INSTANCE), "{{source}}")),
    panel("Snapshot hit ratio", "The share of public reads answered without asking the shard actor: what the "
          "snapshots spare the actors.", "percentunit",
          (share(rate("ticketing_read_snapshots_total", "", ON_INSTANCE, NOT_FROM_SHARD),
                 rate("ticketing_read_snapshots_total", "", ON_INSTANCE)), "answered without the shard")),
)

BROWSE_AND_STREAMS = row(
    "Browse and live seat maps",
    panel("Event listing latency p99", "GET /v1/events gathers from every shard: its p99.", "s",
          (quantile(0.99, "ticketing_events_list_duration_seconds", "", ON_INSTANCE), "p99")),
    panel("Event listing: shard failures per second", "Shards that did not answer a listing (the listing then "
          "says which are missing).", "ops",
          (rate("ticketing_events_list_shard_failures_total", "shard, reason", ON_INSTANCE),
           "shard {{shard}} {{reason}}")),
    panel("Event listing cache: lookups, stores and invalidations per second", "GET /v1/events pages looked up in "
          "the Redis cache (hit, miss, error), pages offered to it (stored, stale, full, too large, error), and "
          "catalogue version bumps after an event was created or changed.", "ops",
          (rate("ticketing_events_cache_lookups_total", "result", ON_INSTANCE), "lookup {{result}}"),
          (rate("ticketing_events_cache_stores_total", "result", ON_INSTANCE), "store {{result}}"),
          (rate("ticketing_events_cache_invalidations_total", "result", ON_INSTANCE), "invalidation {{result}}")),
    panel("Organizers' CSV exports per second, by kind and result", "Exports streamed to organizers: complete, "
          "failed (cut while streaming) or rejected (too many at once).", "ops",
          (rate("ticketing_event_exports_total", "kind, result", ON_INSTANCE), "{{kind}} {{result}}")),
    panel("Seat-map streams open", "Server-sent event streams of live seat maps open now, over all workers.",
          "short", ("sum(ticketing_seat_streams_open{" + ON_INSTANCE + "})", "open")),
    panel("Seat-map streams: opened, refused, ended, events written, per second", "Streams opened (from a "
          "snapshot or resumed), refused, ended by the server, and events written to them.", "ops",
          (rate("ticketing_seat_streams_opened_total", "start", ON_INSTANCE), "opened {{start}}"),
          (rate("ticketing_seat_streams_rejected_total", "reason", ON_INSTANCE), "refused {{reason}}"),
          (rate("ticketing_seat_streams_ended_total", "reason", ON_INSTANCE), "ended {{reason}}"),
          (rate("ticketing_seat_stream_events_total", "kind", ON_INSTANCE), "events {{kind}}")),
    panel("Seat feed: commit to router lag, actor send time", "p50/p99 time from an actor's commit to a router "
          "applying its seat changes, and p99 of the actor's send to Redis. Red: 1 s (check Redis latency).", "s",
          (quantile(0.5, "ticketing_seat_feed_lag_seconds", "", ON_INSTANCE), "lag p50"),
          (quantile(0.99, "ticketing_seat_feed_lag_seconds", "", ON_INSTANCE), "lag p99"),
          (quantile(0.99, "ticketing_actor_seat_feed_send_seconds"), "actor send p99"),
          thresholds=(Threshold(1.0),)),
    panel("Seat feed entries per second: published, applied, resyncs, failures", "Entries actors published "
          "(failed, dropped: alert TicketingSeatFeedFailing), entries routers applied, resyncs by reason, and "
          "failed reads.", "ops",
          (rate("ticketing_actor_seat_feed_entries_total", "result"), "actor {{result}}"),
          (rate("ticketing_seat_feed_entries_read_total", "", ON_INSTANCE), "router applied"),
          (rate("ticketing_seat_feed_resyncs_total", "reason", ON_INSTANCE), "resync {{reason}}"),
          (rate("ticketing_seat_feed_failures_total", "what", ON_INSTANCE), "failed {{what}}")),
)

WEBHOOKS = row(
    "Webhooks: outbox and deliveries",
    panel("Webhook delivery attempts per second, by result", "POSTs to organizers' webhooks: succeeded (2xx), "
          "failed (retried with backoff) and dead (the last allowed attempt failed: alert "
          "TicketingWebhookDeadLetters).", "ops",
          (rate("ticketing_webhook_deliveries_total", "result", ON_INSTANCE), "{{result}}")),
    panel("Outbox rows published per second", "Outbox rows whose every delivery succeeded or was dead-lettered "
          "(rows no webhook asked for are published at once).", "ops",
          (rate("ticketing_outbox_published_total", "", ON_INSTANCE), "published")),
    panel("Outbox lag, by shard", "Age of each shard's oldest unpublished outbox row: how late webhooks are. "
          "Red: 300 s (alert TicketingOutboxLagging).", "s",
          ("max by (shard) (ticketing_outbox_lag_seconds{" + ON_INSTANCE + "})", "shard {{shard}}"),
          thresholds=(Threshold(300.0),)),
)

MAIL = row(
    "E-mailed tickets",
    panel("E-mails to ticket holders per second, by result", "Tickets and cancellation notices sent over SMTP: "
          "sent, failed (retried with backoff), dead (given up: alert TicketingEmailDeadLetters), skipped (a "
          "ticket whose checkout named no holder address). All at 0 while TICKETING_SMTP_HOST is empty.", "ops",
          (rate("ticketing_emails_total", "result", ON_INSTANCE), "{{result}}")),
    panel("E-mail lag, by shard", "Age of each shard's oldest outbox row still owing an e-mail: how late "
          "tickets reach inboxes (red: 10 minutes). 0 when all are sent, or when e-mail is off.", "s",
          ("max by (shard) (ticketing_mail_lag_seconds{" + ON_INSTANCE + "})", "shard {{shard}}"),
          thresholds=(Threshold(600.0),)),
)

DASHBOARD = Dashboard(
    uid="ticketing-http", title="Ticketing · HTTP",
    description="The router: requests, errors and duration per route, readiness, rate limits, reads, streams.",
    variables=(datasource_variable(), INSTANCE, ROUTE),
    rows=(RED_PER_ROUTE, HEALTH, RATE_LIMITS, PUBLIC_READS, BROWSE_AND_STREAMS, WEBHOOKS, MAIL),
)
