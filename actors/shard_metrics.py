"""Prometheus metrics of one shard actor (DESIGN §10).

Each actor keeps its own registry and hands its exposition text to whoever asks (the router's
``/metrics/actors`` gathers all shards through Ray), so the names stay exactly ``ticketing_*``
and no extra port per actor has to be discovered. Labels: shard and bounded results only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shards.writer import OVERSELL_GUARDS

# `_created` timestamps double the series count and no dashboard reads them.
disable_created_metrics()

# The label values each counter below is incremented with, kept here so that every series exists at 0
# from the actor's start (Prometheus' advice for labels known in advance): a failure that never
# happened reads 0 on a dashboard, not "no data", and its first occurrence is an increase that
# `rate()` sees. Commit failures name the error's type beyond these (actors/actor.py).
COMMIT_FAILURE_REASONS = ("fenced", "Diverged")
ISOLATION_TRIGGERS = ("commit_refused", "apply_raised")  # actors/isolation.py
DURABLE_READ_KINDS = ("hold", "order", "ticket")  # actors/reads.py
DURABLE_READ_RESULTS = ("found", "missing", "failed")
IDEMPOTENCY_LOOKUP_RESULTS = ("found", "absent", "failed")  # actors/actor.py
SEAT_FEED_RESULTS = ("published", "failed", "dropped")  # actors/seat_feed.py

SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
SECONDS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ShardMetrics:
    def __init__(self, shard_id: int) -> None:
        self.registry = registry = CollectorRegistry()
        shard = str(shard_id)

        def counter(name: str, text: str, *labels: str, known: Iterable[tuple[str, ...]] = ()) -> Counter:
            """A counter by shard (and `labels`), with this shard's series (of each `known` value of
            `labels`) at 0."""
            created = Counter(name, text, ["shard", *labels], registry=registry)
            for values in known if labels else [()]:
                created.labels(shard, *values)
            return created

        def histogram(name: str, text: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, text, ["shard"], buckets=buckets, registry=registry)

        def gauge(name: str, text: str) -> Gauge:
            return Gauge(name, text, ["shard"], registry=registry)

        self.apply_batch_size = histogram("ticketing_actor_apply_batch_size", "Commands per apply call.",
                                          SIZE_BUCKETS).labels(shard)
        self.apply_seconds = histogram("ticketing_actor_apply_seconds",
                                       "Time to apply one call's commands in memory.", SECONDS_BUCKETS).labels(shard)
        self.commit_seconds = histogram("ticketing_actor_commit_seconds", "Group-commit transaction time.",
                                        SECONDS_BUCKETS).labels(shard)
        self.commit_commands = histogram("ticketing_actor_commit_commands", "Commands per committed transaction.",
                                         SIZE_BUCKETS).labels(shard)
        self.commit_calls = histogram("ticketing_actor_commit_calls", "Apply calls merged per transaction.",
                                      SIZE_BUCKETS).labels(shard)
        self.commits = counter("ticketing_actor_commits_total", "Committed transactions.").labels(shard)
        self.commit_failures = counter("ticketing_actor_commit_failures_total", "Failed or fenced commits.",
                                       "reason", known=_each(COMMIT_FAILURE_REASONS))
        self.recovery_seconds = gauge("ticketing_actor_recovery_seconds",
                                      "Duration of the last recovery.").labels(shard)
        self.recoveries = counter("ticketing_actor_recoveries_total", "Recoveries (starts and rebuilds).").labels(shard)
        self.epoch = gauge("ticketing_actor_epoch", "Lease epoch this actor holds.").labels(shard)
        self.events = gauge("ticketing_actor_events", "Events owned in memory.").labels(shard)
        self.core_compiled = gauge("ticketing_actor_core_compiled",
                                   "1: the mypyc-compiled inventory core; 0: interpreted.").labels(shard)
        self.active_holds = gauge("ticketing_active_holds", "Live holds (held or payment_pending).").labels(shard)
        self.holds = counter("ticketing_holds_total", "Hold transitions by result.", "result")
        self.holds_created = self.holds.labels(shard, "created")  # the hot one, resolved once
        self.conflicts = counter("ticketing_conflicts_total", "Rejected commands by error code.", "reason")
        self.tickets_issued = counter("ticketing_tickets_issued_total", "Tickets issued.").labels(shard)
        self.checkins = counter("ticketing_checkins_total", "Check-ins by result.", "result")
        # Poison isolation (actors/isolation.py): how often it ran, by trigger, and how many
        # commands it refused. Every other command of an isolated batch was committed.
        self.isolations = counter("ticketing_actor_isolations_total",
                                  "Poison isolations run, by trigger (commit_refused, apply_raised).", "trigger",
                                  known=_each(ISOLATION_TRIGGERS))
        self.isolated_commands = counter("ticketing_actor_isolated_commands_total",
                                         "Commands refused by poison isolation (their batch committed without them).")
        # Commits refused by a database guard against overselling (shards.writer.OVERSELL_GUARDS), by
        # guard; counted by poison isolation, which every such refusal reaches. It must stay 0. Each
        # guard's series exists from the start, so a first refusal is an increase Prometheus sees.
        self.oversell_refused = counter("ticketing_actor_oversell_refused_total",
                                        "Commits refused by a database guard against overselling, by guard.", "guard",
                                        known=_each(OVERSELL_GUARDS))
        # The durable lookup (shards/lookup.py): reads memory could not answer, by kind (hold, order,
        # ticket) and result (found, missing, failed); idempotency keys looked up before a batch
        # (found, absent, failed calls); keys the purge job deleted.
        self.durable_reads = counter("ticketing_actor_durable_reads_total",
                                     "Reads answered from Postgres because memory did not know the id.",
                                     "kind", "result", known=[(kind, result) for kind in DURABLE_READ_KINDS
                                                              for result in DURABLE_READ_RESULTS])
        self.idempotency_lookups = counter("ticketing_actor_idempotency_lookups_total",
                                           "Idempotency keys memory lacked, looked up in Postgres, by result.",
                                           "result", known=_each(IDEMPOTENCY_LOOKUP_RESULTS))
        self.idempotency_keys_purged = counter("ticketing_actor_idempotency_keys_purged_total",
                                               "Idempotency keys older than their retention deleted.").labels(shard)
        self.events_quarantined = gauge("ticketing_actor_events_quarantined",
                                        "Events whose rows recovery refused: not served until repaired.").labels(shard)
        # The seat feed (actors/seat_feed.py): entries by result (published, failed: Redis did not
        # take them, dropped: the queue was full) and the time of one pipelined send.
        self.seat_feed_entries = counter("ticketing_actor_seat_feed_entries_total",
                                         "Seat-feed stream entries, by result.", "result",
                                         known=_each(SEAT_FEED_RESULTS))
        self.seat_feed_seconds = histogram("ticketing_actor_seat_feed_send_seconds",
                                           "Time to send one batch of seat-feed entries to Redis.",
                                           SECONDS_BUCKETS).labels(shard)
        # Dynamic pricing (actors/inventory/pricing.py): price moves the pricing timer committed.
        self.price_changes = counter("ticketing_price_changes_total",
                                     "Dynamic section prices moved (each one audited).").labels(shard)
        # Slot moves (shards/slot_moves.py): slots this shard serves and slots fenced here by a move
        # under way (a fenced slot is served by nobody until the move copies it: an alert watches
        # it), the shard-map version it last read, and requests answered "slot moved".
        self.slots_owned = gauge("ticketing_actor_slots_owned", "Slots this shard serves.").labels(shard)
        self.slots_fenced = gauge("ticketing_actor_slots_fenced",
                                  "Slots a move has fenced on this shard and not yet handed over.").labels(shard)
        self.map_version = gauge("ticketing_actor_shard_map_version",
                                 "Highest shard-map version in this shard's database.").labels(shard)
        self.slot_moved = counter("ticketing_actor_slot_moved_total",
                                  "Requests refused because this shard does not own their slot.").labels(shard)
        self.shard = shard
        self.stock = StockCollector(shard, lambda: (), 0)  # fed by watch_stock
        registry.register(self.stock)

    def watch_stock(self, sections: Callable[[], Iterable[tuple[Any, Iterable[Any]]]], sections_max: int) -> None:
        """Export each event section's tickets by state, read from `sections()` when scraped."""
        self.stock.sections, self.stock.sections_max = sections, sections_max

    def text(self) -> bytes:
        return generate_latest(self.registry)


def _each(values: Iterable[str]) -> list[tuple[str, ...]]:
    return [(value,) for value in values]


class StockCollector(Collector):
    """`ticketing_section_tickets{shard, event, section, state}` (available, held, sold, blocked)
    and `ticketing_section_price_cents{shard, event, section}` (what a new hold pays now: a dynamic
    section's moves), computed from the actor's memory at scrape time: seats left, sell-through
    and prices per section, for the On-sale dashboard. At most `sections_max` (event, section)
    pairs per shard, in the order the actor holds its events (a label set per section is the cost:
    five series each); the pairs left out are counted in `ticketing_section_metrics_omitted`."""

    def __init__(self, shard: str, sections: Callable[[], Iterable[tuple[Any, Iterable[Any]]]],
                 sections_max: int) -> None:
        self.shard = shard
        self.sections = sections
        self.sections_max = sections_max

    def collect(self) -> Iterator[GaugeMetricFamily]:
        tickets = GaugeMetricFamily("ticketing_section_tickets", "Tickets of an event's section, by state, now.",
                                    labels=["shard", "event", "section", "state"])
        prices = GaugeMetricFamily("ticketing_section_price_cents",
                                   "Price of an event's section for a new hold, now (cents).",
                                   labels=["shard", "event", "section"])
        omitted = GaugeMetricFamily("ticketing_section_metrics_omitted",
                                    "Event sections beyond metrics_sections_max, not exported.", labels=["shard"])
        exported = left_out = 0
        for event_id, sections in self.sections():
            for section in sections:
                if exported >= self.sections_max:
                    left_out += 1
                    continue
                exported += 1
                for state in ("available", "held", "sold", "blocked"):
                    tickets.add_metric([self.shard, str(event_id), section.section_id, state], getattr(section, state))
                prices.add_metric([self.shard, str(event_id), section.section_id], section.price_cents)
        omitted.add_metric([self.shard], left_out)
        yield tickets
        yield prices
        yield omitted

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())
