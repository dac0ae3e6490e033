"""The Shards dashboard: each shard actor and its PostgreSQL shard — throughput, batching, commit
latency, queues, recoveries, poison isolation, the database's oversell guards — with every lease
epoch change (a recovery: start, rebuild or isolation) marked on the time axis."""

from __future__ import annotations

from dashboards.panels import (
    INSTANCE,
    ON_INSTANCE,
    ON_SHARD,
    RATE_WINDOW,
    SHARD,
    YELLOW,
    Annotation,
    Dashboard,
    Threshold,
    datasource_variable,
    increase_in_range,
    mean,
    panel,
    quantile,
    rate,
    row,
    setting_default,
    stat,
)

THROUGHPUT = row(
    "Throughput",
    panel("Commands applied per second, by shard", "Commands each shard actor applied to its in-memory "
          "inventory (holds, releases, checkouts, check-ins, …): the shard's throughput.", "ops",
          (rate("ticketing_actor_apply_batch_size_sum", "shard", ON_SHARD), "shard {{shard}}"), stack=True),
    panel("Commits per second, by shard", "Group-commit transactions per shard: each carries every command "
          "applied while the previous one was committing.", "ops",
          (rate("ticketing_actor_commits_total", "shard", ON_SHARD), "shard {{shard}}")),
    panel("Requests sent to shard actors per second (router side)", "Requests the routers' shard clients "
          "batched into actor calls, by shard and kind (apply: commands; read: answered from memory).", "reqps",
          (rate("ticketing_shard_batch_size_sum", "shard, kind", ON_SHARD, ON_INSTANCE), "shard {{shard}} {{kind}}")),
    panel("Commit failures per second, by shard and reason", "Failed or fenced commits: every caller of the "
          "batch got 503 and the shard rebuilt from Postgres (alert TicketingCommitFailures).", "ops",
          (rate("ticketing_actor_commit_failures_total", "shard, reason", ON_SHARD), "shard {{shard}} {{reason}}")),
)

BATCHING = row(
    "Batching",
    panel("Batch sizes (mean): router call, actor apply, calls per commit", "Requests per router → actor call, "
          "commands per apply call, apply calls merged into one commit: batching grows with load.", "short",
          (mean("ticketing_shard_batch_size", "shard, kind", ON_SHARD, ON_INSTANCE), "router shard {{shard}} {{kind}}"),
          (mean("ticketing_actor_apply_batch_size", "shard", ON_SHARD), "apply shard {{shard}}"),
          (mean("ticketing_actor_commit_calls", "shard", ON_SHARD), "calls per commit shard {{shard}}")),
    panel("Commands per committed transaction (mean)", "How many commands one group commit carried.", "short",
          (mean("ticketing_actor_commit_commands", "shard", ON_SHARD), "shard {{shard}}")),
)

LATENCY = row(
    "Latency",
    panel("Commit time p50 / p99", "Time of one group-commit transaction in PostgreSQL (callers wait for it). "
          "Red: 0.5 s, the p99 measured at peak load on the development machine (docs/BENCHMARKS.md).", "s",
          (quantile(0.5, "ticketing_actor_commit_seconds", "shard", ON_SHARD), "p50 shard {{shard}}"),
          (quantile(0.99, "ticketing_actor_commit_seconds", "shard", ON_SHARD), "p99 shard {{shard}}"),
          thresholds=(Threshold(0.5),)),
    panel("Actor call time p99 (router side)", "Router-side time of one actor call (queueing, the actor's "
          "apply and its commit). Red: the default TICKETING_ACTOR_CALL_TIMEOUT_S, where calls fail with 503.",
          "s", (quantile(0.99, "ticketing_shard_call_duration_seconds", "shard, kind", ON_SHARD, ON_INSTANCE),
                "shard {{shard}} {{kind}}"),
          thresholds=(Threshold(setting_default("actor_call_timeout_s")),)),
    panel("Apply time p99 (actor, in memory)", "Time to apply one call's commands to the in-memory inventory, "
          "before the commit.", "s",
          (quantile(0.99, "ticketing_actor_apply_seconds", "shard", ON_SHARD), "shard {{shard}}")),
)

QUEUES = row(
    "Queues and refusals",
    panel("Requests waiting for a batch (router side)", "Each router's queue of requests per shard and kind. "
          "Red: the default TICKETING_SHARD_QUEUE_DEPTH_MAX, where requests are refused with 503.", "short",
          ("sum by (shard, kind) (ticketing_shard_queue_depth{" + ON_SHARD + ", " + ON_INSTANCE + "})",
           "shard {{shard}} {{kind}}"),
          thresholds=(Threshold(setting_default("shard_queue_depth_max")),)),
    panel("Requests refused or retried by the shard client per second", "Refused because the queue is full "
          "(alert TicketingShardQueueFull), timed out, or failed with the actor; retried after an actor failure "
          "(reads and keyed commands only).", "reqps",
          (rate("ticketing_shard_rejected_total", "shard, reason", ON_SHARD, ON_INSTANCE),
           "refused {{shard}} {{reason}}"),
          (rate("ticketing_shard_retries_total", "shard", ON_SHARD, ON_INSTANCE), "retried {{shard}}")),
)

RECOVERY = row(
    "Recovery, rebuilds and guards",
    stat("Recoveries in the time range", "Recoveries per shard: the start, each rebuild after a failed commit, "
         "each poison isolation. Several in a short time: alert TicketingShardRebuildLoop.", "short",
         (increase_in_range("ticketing_actor_recoveries_total", "shard", ON_SHARD), "shard {{shard}}"),
         thresholds=(Threshold(3, YELLOW),)),
    stat("Poison isolations in the time range", "Batches Postgres refused (commit_refused) or calls that made the "
         "core raise (apply_raised); each costs a rebuild (alert TicketingPoisonIsolations).", "short",
         (increase_in_range("ticketing_actor_isolations_total", "shard, trigger", ON_SHARD),
          "shard {{shard}} {{trigger}}"),
         thresholds=(Threshold(1, YELLOW), Threshold(4))),
    stat("Commands refused by isolation in the time range", "Commands poison isolation refused (422 or 500 to "
         "their caller); the rest of their batches committed.", "short",
         (increase_in_range("ticketing_actor_isolated_commands_total", "shard", ON_SHARD), "shard {{shard}}"),
         thresholds=(Threshold(1, YELLOW),)),
    stat("Oversells refused by a database guard in the time range", "Commits the database refused because they "
         "would sell a seat or GA unit twice (seat claim key, live-ticket index, pool capacity CHECK). Must be 0: "
         "memory and rows disagree (alert TicketingOversellRefused).", "short",
         (increase_in_range("ticketing_actor_oversell_refused_total", "shard, guard", ON_SHARD),
          "shard {{shard}} {{guard}}"),
         thresholds=(Threshold(1),)),
    panel("Last recovery time, by shard", "How long the last recovery took (load from Postgres, rebuild memory); "
          "the shard serves nobody meanwhile. Red: the default TICKETING_RECOVERY_TIMEOUT_S.", "s",
          ("max by (shard) (ticketing_actor_recovery_seconds{" + ON_SHARD + "})", "shard {{shard}}"),
          thresholds=(Threshold(setting_default("recovery_timeout_s")),)),
    panel("Lease epoch, by shard", "The epoch each actor holds; it rises at every recovery (the annotations "
          "mark each change). Commits of an older epoch are refused (fencing).", "none",
          ("max by (shard) (ticketing_actor_epoch{" + ON_SHARD + "})", "shard {{shard}}")),
    panel("Events owned and quarantined, by shard", "Events each actor owns in memory, and those whose rows "
          "recovery refused: not served until repaired (alert TicketingEventQuarantined).", "short",
          ("sum by (shard) (ticketing_actor_events{" + ON_SHARD + "})", "owned shard {{shard}}"),
          ("sum by (shard) (ticketing_actor_events_quarantined{" + ON_SHARD + "})", "quarantined shard {{shard}}")),
    panel("Slots owned and fenced, by shard", "Slots each shard serves, and slots a move has fenced on it and "
          "not handed over yet: nobody serves those (alert TicketingSlotMoveStuck; `ticketing slots` shows them, "
          "running the move again finishes it).", "short",
          ("max by (shard) (ticketing_actor_slots_owned{" + ON_SHARD + "})", "owned shard {{shard}}"),
          ("max by (shard) (ticketing_actor_slots_fenced{" + ON_SHARD + "})", "fenced shard {{shard}}"),
          thresholds=(Threshold(1),)),
    panel("Slot-move answers, per second", "Requests a shard refused because it does not own their slot (a "
          "router with an older shard map), and what the routers did: resent to the owner (or, while the move "
          "copies, to the same shard after a wait), or gave up with a 503.", "reqps",
          (rate("ticketing_actor_slot_moved_total", "shard", ON_SHARD), "refused by shard {{shard}}"),
          (rate("ticketing_router_slot_moved_total", "outcome"), "router {{outcome}}")),
    panel("Shard-map version and reads", "The shard-map version each shard's database records and each router "
          "uses (they agree once every router has read the map after a move), and the routers' map reads by "
          "result (failed: a shard database did not answer; the map in use is kept).", "short",
          ("max by (shard) (ticketing_actor_shard_map_version{" + ON_SHARD + "})", "version in shard {{shard}}"),
          ("max(ticketing_router_shard_map_version)", "version in routers"),
          (increase_in_range("ticketing_router_shard_map_reads_total", "result"), "reads {{result}}")),
    stat("Inventory core", "Whether each shard runs the mypyc-compiled inventory core (about 1.3× faster) or "
         "the interpreted one; `ticketing status` says why.", "none",
         ("min by (shard) (ticketing_actor_core_compiled{" + ON_SHARD + "})", "shard {{shard}}"),
         mappings=((1, "compiled", "green"), (0, "interpreted", "yellow")), width=12),
)

LOOKUPS = row(
    "Durable lookups",
    panel("Reads and keys answered from Postgres, keys purged, per second", "Reads memory could not answer "
          "(holds, orders, tickets it forgot), idempotency keys looked up before a batch, old keys purged.", "ops",
          (rate("ticketing_actor_durable_reads_total", "kind, result", ON_SHARD), "read {{kind}} {{result}}"),
          (rate("ticketing_actor_idempotency_lookups_total", "result", ON_SHARD), "key {{result}}"),
          (rate("ticketing_actor_idempotency_keys_purged_total", "shard", ON_SHARD), "purged shard {{shard}}")),
    collapsed=True,
)

EPOCH_CHANGES = Annotation(
    name="Lease epoch changes",
    expr=f"changes(ticketing_actor_epoch{{{ON_SHARD}}}[{RATE_WINDOW}]) > 0",
    title="shard {{shard}}: new lease epoch",
    text="The shard actor recovered (a start, a rebuild after a failed commit, or a poison isolation) and took "
         "a new lease epoch.",
)

DASHBOARD = Dashboard(
    uid="ticketing-shards", title="Ticketing · Shards",
    description="Shard actors and their PostgreSQL shards: throughput, batching, commits, queues, recoveries.",
    variables=(datasource_variable(), INSTANCE, SHARD),
    rows=(THROUGHPUT, BATCHING, LATENCY, QUEUES, RECOVERY, LOOKUPS),
    annotations=(EPOCH_CHANGES,),
)
