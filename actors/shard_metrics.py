"""Prometheus metrics of one shard actor (DESIGN §10).

Each actor keeps its own registry and hands its exposition text to whoever asks (the router's
``/metrics/actors`` gathers all shards through Ray), so the names stay exactly ``ticketing_*``
and no extra port per actor has to be discovered. Labels: shard and bounded results only.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

# `_created` timestamps double the series count and no dashboard reads them.
disable_created_metrics()

SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
SECONDS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ShardMetrics:
    def __init__(self, shard_id: int) -> None:
        self.registry = registry = CollectorRegistry()
        shard = str(shard_id)

        def counter(name: str, text: str, *labels: str) -> Counter:
            return Counter(name, text, ["shard", *labels], registry=registry)

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
                                       "reason")
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
                                  "Poison isolations run, by trigger (commit_refused, apply_raised).", "trigger")
        self.isolated_commands = counter("ticketing_actor_isolated_commands_total",
                                         "Commands refused by poison isolation (their batch committed without them).")
        # The durable lookup (shards/lookup.py): reads memory could not answer, by kind (hold, order,
        # ticket) and result (found, missing, failed); idempotency keys looked up before a batch
        # (found, absent, failed calls); keys the purge job deleted.
        self.durable_reads = counter("ticketing_actor_durable_reads_total",
                                     "Reads answered from Postgres because memory did not know the id.",
                                     "kind", "result")
        self.idempotency_lookups = counter("ticketing_actor_idempotency_lookups_total",
                                           "Idempotency keys memory lacked, looked up in Postgres, by result.",
                                           "result")
        self.idempotency_keys_purged = counter("ticketing_actor_idempotency_keys_purged_total",
                                               "Idempotency keys older than their retention deleted.").labels(shard)
        self.events_quarantined = gauge("ticketing_actor_events_quarantined",
                                        "Events whose rows recovery refused: not served until repaired.").labels(shard)
        self.shard = shard

    def text(self) -> bytes:
        return generate_latest(self.registry)
