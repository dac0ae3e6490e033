"""One settings object for the whole cluster (prefix ``TICKETING_``).

Every bound the system has is a named field here with its unit last (DESIGN §12, STYLE §3), and
the relationships between bounds are checked when the settings are built, so a deployment that
cannot work (a batch that does not fit in the queue, an actor timeout longer than the request
deadline) refuses to start instead of failing under load.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from email.utils import parseaddr
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shards.slots import SLOT_COUNT, ShardMap

if TYPE_CHECKING:
    from actors.inventory import InventoryLimits


# Ceilings of a hold body (router/schemas.py): an absurd number is a schema error there, never
# arithmetic on a 100-digit integer. The settings below bound a hold further, and may not exceed
# them, or the schema would refuse holds the setting allows.
HOLD_SEATS_CEILING = 1000
HOLD_QUANTITY_CEILING = 100_000


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TICKETING_", extra="ignore", frozen=True)

    # Where the embedded services keep their data, the generated keys and the run state.
    data_dir: Path = Path(".data")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    router_workers: int = Field(2, ge=1, le=64)

    # Sharding (DESIGN §4). The slot map is "first-last:shard,..." over slots 0..255; empty means
    # an even split over `shard_count` shards.
    shard_count: int = Field(4, ge=1, le=SLOT_COUNT)
    slot_map: str = ""

    # External services. Empty means "start the embedded one under data_dir".
    pg_dsns: Annotated[list[str], NoDecode] = Field(default_factory=list)
    redis_url: str = ""
    ray_address: str = ""
    # Embedded PostgreSQL servers (without pg_dsns): shard k's database lives on server k mod this
    # many, each its own instance (own folder, port, processes), as separate machines would be.
    pg_embedded_servers: int = Field(1, ge=1, le=SLOT_COUNT)
    # Where shard actors run (docs/operations.md "Placement"): a custom Ray resource a node must offer
    # to host them (`ray start --resources '{"<name>": 100}'`; empty: any node), and whether they are
    # spread over those nodes ("spread") or left to Ray's default packing ("default").
    shard_node_resource: str = ""
    shard_placement: Literal["spread", "default"] = "spread"

    # Auth: HS256 with a shared secret (generated under data_dir when unset), or verification with
    # a public key (PEM file) for tokens issued by an outside identity provider.
    jwt_secret: str = ""
    jwt_public_key_file: Path | None = None
    jwt_algorithm: str = "HS256"
    jwt_ttl_s: int = Field(3600, ge=1)
    # Tolerated clock difference between a token's issuer and the router (exp, iat).
    jwt_clock_skew_s: int = Field(30, ge=0)
    # Verified tokens remembered per router worker. A buyer sends the same token with every request
    # of a session, and verifying it (base64, JSON, HMAC) cost 17% of a hold's router CPU
    # (measured); a cached token is still checked against its own expiry on every use. When full,
    # the cache is emptied: tokens are cheap to verify again.
    token_cache_entries_max: int = Field(100_000, ge=1)
    # HMAC key of waiting-room admission tokens (X-Queue-Token); generated under data_dir when
    # unset. Routers on several hosts that share no data_dir must set the same value.
    queue_token_secret: str = ""

    # Holds (API.md: hold_seconds in [min_hold_seconds, 3600]).
    min_hold_seconds: int = Field(60, ge=1)
    max_hold_seconds: int = Field(3600, ge=1)
    hold_seats_max: int = Field(10, ge=1, le=HOLD_SEATS_CEILING)
    hold_quantity_max: int = Field(10, ge=1, le=HOLD_QUANTITY_CEILING)
    hold_expiry_tick_ms: int = Field(200, ge=10, le=250)
    event_seats_max: int = Field(1_000_000, ge=1)

    # Dynamic pricing (docs/organizers.md "Dynamic pricing"): every interval each shard actor moves
    # each dynamic section's price toward its demand target by at most this share of the current
    # price (at least a cent). At the defaults a price can at most double in ~2.5 minutes (1.05^15)
    # and buyers see it move a few percent at a time; each move is one command, one audit row.
    pricing_interval_s: float = Field(10.0, ge=0.1, le=3600)
    pricing_step_max_percent: int = Field(5, ge=1, le=100)
    # The demand a section's target follows is the strongest of: its share taken (held + sold); its
    # pace (selling out within `pricing_velocity_horizon_s` at the last round's net take is full
    # demand; 0 turns it off); its waiting room (as many waiting as units left is full demand). In
    # the last `pricing_last_call_s` before the event starts, the share's pull fades to nothing, so
    # stock nobody is racing for drifts toward the floor (0: off).
    pricing_velocity_horizon_s: float = Field(600.0, ge=0, le=86_400)
    pricing_last_call_s: float = Field(86_400.0, ge=0, le=30 * 86_400)

    # HTTP.
    body_bytes_max: int = Field(64 * 1024, ge=1024)
    request_deadline_s: float = Field(10.0, gt=0)
    # Checkout waits on the payment gateway between two actor calls, so it has its own deadline.
    checkout_deadline_s: float = Field(30.0, gt=0)
    # A CSV export (orders, attendees) streams for at most this long; a larger export is cut.
    export_deadline_s: float = Field(300.0, gt=0)
    events_page_max: int = Field(100, ge=1)
    router_connections_max: int = Field(4096, ge=16)
    router_backlog_max: int = Field(2048, ge=16)
    keep_alive_s: int = Field(30, ge=1)
    # Comma-separated addresses of reverse proxies whose X-Forwarded-For/-Proto the router believes
    # (the client address is what per-address rate limits charge). Empty: none, every client is
    # the address it connects from.
    forwarded_allow_ips: str = ""
    access_log: bool = True
    log_level: str = "INFO"
    # `ticketing up --demo`: the web pages offer a button that mints a buyer or organizer token for
    # a chosen name (`POST /v1/demo/token`, docs/web.md). Anyone who reaches the router may then act
    # as anyone: never on in a deployment that holds real sales.
    demo: bool = False
    # A router worker applies its request counts and latencies to the Prometheus series at most
    # this long after they change (router/http_metrics.py RequestTally); scrapes are 5-15 s apart.
    metrics_flush_interval_s: float = Field(1.0, gt=0, le=10)

    # The waiting room (router/waiting_room.py, lua/waiting_room.lua). A waiting user not seen (joined
    # or polled) for queue_idle_s is dropped when the line reaches them; after a quiet spell the
    # admitter admits at most queue_burst_s worth of the event's rate at once; one step looks at most
    # at queue_scan_max waiting-list and line entries (bounds the script's time); a line, and a
    # waiting list, hold at most queue_waiting_max users (a join beyond: 429); its keys expire
    # queue_key_ttl_s after the last step. Each worker keeps an event's queue settings
    # queue_settings_cache_s (so enabling or disabling queue mode reaches every worker within
    # that), for at most queue_settings_cache_entries_max events.
    # The admitter keeps admissions for at most queue_admit_stock_factor x the available tickets
    # outstanding, not yet used for a hold (above 1: some admitted buyers do not buy); one from the
    # waiting list counts as the quantity it is for.
    queue_idle_s: float = Field(30.0, gt=0)
    queue_burst_s: float = Field(1.0, gt=0, le=60)
    queue_scan_max: int = Field(1000, ge=1)
    queue_waiting_max: int = Field(2_000_000, ge=1)
    queue_key_ttl_s: float = Field(86_400.0, gt=0)
    queue_settings_cache_s: float = Field(1.0, ge=0, le=60)
    queue_settings_cache_entries_max: int = Field(10_000, ge=1)
    queue_admit_stock_factor: float = Field(1.0, gt=0, le=100)

    # Public reads (availability, seat maps) are answered from a per-worker snapshot at most this
    # old (router/snapshots.py; `as_of` says when it was read), for at most this many queries.
    # The waiting room's admitter reads the stock from the same snapshots.
    read_snapshot_s: float = Field(0.5, ge=0, le=5)
    read_snapshot_entries_max: int = Field(10_000, ge=1)

    # The listing's page cache in Redis (router/events_cache.py): a page lives at most
    # events_cache_ttl_s (0: no cache), creating or changing an event empties the cache, and it
    # holds at most events_cache_pages_max pages of at most events_cache_page_bytes_max each (a
    # larger page is not cached), so at most their product of Redis memory (64 MiB by default).
    events_cache_ttl_s: float = Field(5.0, ge=0, le=300)
    events_cache_pages_max: int = Field(512, ge=1)
    events_cache_page_bytes_max: int = Field(128 * 1024, ge=1024)

    # Organizers' CSV exports (router/reports_api.py): each holds one connection of the worker's
    # pool to its shard while it streams, so at most exports_per_worker_max at once per worker
    # (below db_pool_size_max: the listing and reports keep connections), reading
    # export_batch_rows rows per round trip of its server-side cursor.
    exports_per_worker_max: int = Field(2, ge=1)
    export_batch_rows: int = Field(500, ge=1, le=10_000)

    # Live seat-map streams (router/seat_stream.py, docs/browse-and-stream.md). Shard actors append
    # every commit's seat and pool changes to the event's Redis stream (actors/seat_feed.py); one
    # reader per router worker follows the streams of the events it serves, blocking at most
    # seat_feed_block_ms per read (a new event's stream joins the read within that).
    seat_feed_block_ms: int = Field(200, ge=10, le=5_000)
    # Entries one read takes per stream; more wait for the next read.
    seat_feed_read_entries_max: int = Field(500, ge=1)
    # The actor's bounded queue of entries not yet sent (beyond: dropped, counted, readers resync)
    # and the most entries one pipelined send carries.
    seat_feed_queue_max: int = Field(10_000, ge=1)
    seat_feed_batch_max: int = Field(500, ge=1)
    # Each event's stream keeps about this many entries (what a reconnecting client can resume
    # from) and expires this long after its last entry.
    seat_feed_stream_entries_max: int = Field(1_000, ge=10)
    seat_feed_stream_ttl_s: float = Field(3_600.0, gt=0)
    # A reconnecting client resumes from its Last-Event-ID when at most this many entries followed
    # it; otherwise it gets a fresh snapshot.
    seat_stream_resume_entries_max: int = Field(500, ge=1)
    # A feed wakes its streams at most this often; changes in between go out together. A thousand
    # streams of a hot event written once per commit cost the router a core (measured:
    # docs/BENCHMARKS.md "Reads under load").
    seat_stream_interval_ms: int = Field(250, ge=0, le=1_000)
    # Versions of its event's changes a stream may fall behind before it is sent a fresh snapshot.
    seat_stream_history_max: int = Field(256, ge=1)
    # A write to a client that takes longer than this drops the client (it reconnects to a
    # snapshot): a slow reader is never buffered without bound.
    seat_stream_send_timeout_s: float = Field(5.0, gt=0)
    # At shutdown streams end themselves at once (router/seat_stream.py); a stream still open this
    # long after the signal is cut by sse-starlette.
    seat_stream_shutdown_grace_s: float = Field(2.0, ge=0)
    # A comment line after this long without a write: proxies drop idle connections after 30-60 s.
    seat_stream_heartbeat_s: float = Field(15.0, gt=0)
    # Then the server ends the stream and the client reconnects (to a fresh snapshot).
    seat_stream_lifetime_s: float = Field(1800.0, gt=0)
    # Streams per router worker, below `router_connections_max` to leave room for requests.
    seat_streams_per_worker_max: int = Field(1000, ge=1)
    # The `retry:` hint sent to EventSource clients: how long they wait before reconnecting.
    seat_stream_reconnect_ms: int = Field(1000, ge=0)
    # Consecutive failed feed reads (of Redis, or of the seat map after a gap) before the streams
    # of an event end (their clients reconnect and get a 503 or a fresh snapshot).
    seat_feed_failures_max: int = Field(20, ge=1)

    # Router → actor micro-batching and back-pressure.
    batch_size_max: int = Field(256, ge=1)
    batch_wait_ms_max: float = Field(2.0, ge=0)
    shard_queue_depth_max: int = Field(4096, ge=1)
    actor_call_timeout_s: float = Field(5.0, gt=0)
    retry_after_s: int = Field(1, ge=1)
    # Calls per (shard, kind) lane in flight at once: enough to hide the Ray round trip, few enough
    # that batches form. Each actor call costs ~0.1-0.2 ms of router CPU in Ray's client (measured:
    # 11% of the event loop at 4 in flight, batches of 16); 2 lets batches grow while one call is out.
    shard_calls_in_flight_max: int = Field(2, ge=1)
    # Retries of a safe request (a read, a keyed command) after the actor failed; Ray restarts the
    # actor and recovery takes ~1-2 s. The n-th retry waits the n-th delay (the last one repeats).
    shard_call_retries_max: int = Field(5, ge=0)
    shard_retry_backoff_s: Annotated[tuple[float, ...], NoDecode] = (0.05, 0.2, 0.5, 1.0, 2.0)
    # A request a shard answers "slot moved" (a slot move fenced it, shards/slot_moves.py): the
    # router reads the shard map from the shard databases again (at most once per
    # `slot_moved_retry_s`), resends it to the owner, or — while the move is copying and nobody
    # serves the slot — waits `slot_moved_retry_s` and asks again, at most `slot_moved_retries_max`
    # times (then 503 with Retry-After). 100 × 0.05 s covers a move of a few thousand events.
    slot_moved_retries_max: int = Field(100, ge=1)
    slot_moved_retry_s: float = Field(0.05, gt=0)
    # How often a router reads the shard map anyway (requests learn of a move from the shard that
    # lost it; reads made straight in Postgres read the map first, router/deps.py).
    shard_map_refresh_s: float = Field(5.0, gt=0)

    # Actor → Postgres group commit.
    commit_batch_commands_max: int = Field(2048, ge=1)
    commit_wait_ms_max: float = Field(2.0, ge=0)
    commit_queue_batches_max: int = Field(1024, ge=1)
    actor_start_attempts_max: int = Field(30, ge=1)
    actor_start_retry_s: float = Field(1.0, gt=0)
    db_call_timeout_s: float = Field(3.0, gt=0)
    db_pool_size_min: int = Field(2, ge=1)
    db_pool_size_max: int = Field(8, ge=1)
    # Idempotency keys: an actor's memory holds the newest `idempotency_keys_max`; Postgres keeps
    # every key at least `idempotency_retention_s` (API.md: ≥ 24 h), then the actor's purge job
    # deletes it, in batches, every interval. What memory lacks is looked up in Postgres
    # (shards/lookup.py), as are holds that ended longer ago than the last `closed_holds_max`.
    # The purge runs every 5 minutes, 5,000 keys per transaction (a few ms each): keys outlive
    # their retention by about one interval.
    idempotency_keys_max: int = Field(200_000, ge=1)
    idempotency_retention_s: int = Field(24 * 3600, ge=24 * 3600)
    idempotency_purge_interval_s: float = Field(300.0, gt=0)
    idempotency_purge_batch_keys_max: int = Field(5_000, ge=1)
    closed_holds_max: int = Field(10_000, ge=1)
    # A lookup is one indexed query: 2 s means Postgres is in trouble, and it leaves the router's
    # actor call (5 s) time to answer 503.
    durable_lookup_timeout_s: float = Field(2.0, gt=0)
    # Recovery reads whole shards (a million-seat venue is millions of rows): its own deadline.
    recovery_timeout_s: float = Field(120.0, gt=0)

    # Readiness probes and other dependencies.
    probe_timeout_s: float = Field(2.0, gt=0)
    # Event sections each shard actor exports stock metrics for (`ticketing_section_tickets`: four
    # series each); beyond, they are counted in `ticketing_section_metrics_omitted`.
    metrics_sections_max: int = Field(500, ge=0)
    # Each router worker probes every dependency this often in the background
    # (`ticketing_component_up`); `/readyz` answers from the last round while it is fresh and green.
    readiness_probe_interval_s: float = Field(5.0, gt=0)
    redis_timeout_s: float = Field(1.0, gt=0)
    # Redis connections per router worker; a call that finds them all busy waits up to
    # redis_timeout_s for one.
    redis_connections_max: int = Field(64, ge=1)
    gateway_call_timeout_s: float = Field(10.0, gt=0)

    # Checkout and payments (DESIGN §9).
    payment_gateway: str = "simulated"
    gateway_slow_delay_s: float = Field(3.0, ge=0)
    # A pinned hold whose payment outcome is still unknown after this long is resolved by the
    # checkout resolver: the charge is looked up by key, then confirmed or refunded.
    payment_timeout_s: float = Field(120.0, gt=0)
    checkout_resolver_interval_s: float = Field(5.0, gt=0)
    # A resolver pass reads keyset pages of this many rows, at most this many pages per scan; a
    # scan that has more continues from its cursor at the next pass.
    checkout_resolver_page_rows_max: int = Field(100, ge=1)
    checkout_resolver_pass_pages_max: int = Field(10, ge=1)
    # How many payment timeouts a charge whose outcome was unknown is looked up again before the
    # resolver concludes it never happened.
    checkout_resolver_unknown_charge_timeouts: int = Field(10, ge=1)
    # The event cancellation (router/cancellation.py): how often each worker looks for orders of
    # cancelled events to refund, at most how many per shard and pass, how many at once and how
    # many start per second (per worker), and the backoff of an order whose refund failed.
    cancellation_interval_s: float = Field(2.0, gt=0)
    cancellation_pass_orders_max: int = Field(500, ge=1, le=100_000)
    cancellation_refunds_in_flight_max: int = Field(8, ge=1, le=1000)
    cancellation_refunds_per_s: float = Field(50.0, gt=0)
    cancellation_retry_base_s: float = Field(2.0, gt=0)
    cancellation_retry_max_s: float = Field(300.0, gt=0)
    me_tickets_page_max: int = Field(100, ge=1)
    revocations_page_max: int = Field(1000, ge=1)
    # Rows per page of an event's audit log (GET /v1/events/{id}/audit?limit=, at most this many).
    audit_page_rows_max: int = Field(500, ge=1, le=10_000)
    qr_cache_entries_max: int = Field(1024, ge=0)
    # Webhooks (router/webhooks_api.py, router/webhook_relay.py; docs/organizers.md "Webhooks").
    # A URL's length (the column's CHECK is 2048 too), registrations per organizer, attempts per
    # page of a delivery log; http:// (not https://) is accepted for loopback hosts only when set.
    webhook_url_chars_max: int = Field(2048, ge=16, le=2048)
    webhooks_per_organizer_max: int = Field(20, ge=1)
    webhook_deliveries_page_max: int = Field(100, ge=1)
    webhook_loopback_http_allowed: bool = False
    # The relay: how often it looks for outbox rows, how many per shard per round, how many
    # deliveries in flight per router process, how long one may take, and the retry schedule
    # (base × 2^(attempt-1), at most the max) until the last attempt dead-letters it.
    webhook_relay_interval_s: float = Field(1.0, gt=0)
    webhook_relay_batch_rows_max: int = Field(100, ge=1)
    webhook_deliveries_in_flight_max: int = Field(16, ge=1)
    webhook_delivery_timeout_s: float = Field(10.0, gt=0)
    webhook_retry_base_s: float = Field(5.0, gt=0)
    webhook_retry_max_s: float = Field(3600.0, gt=0)
    webhook_attempts_max: int = Field(8, ge=1)
    # E-mailed tickets (router/mail_relay.py; docs/organizers.md "E-mailed tickets"). The SMTP server
    # (empty host: e-mail off, the outbox is not read for it), the envelope and From address, STARTTLS
    # (auto: when the server offers it; require: never send in clear; off: never), whether its
    # certificate is verified, optional login, and one SMTP conversation's time limit.
    smtp_host: str = ""
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_from: str = ""
    smtp_starttls: Literal["auto", "require", "off"] = "auto"
    smtp_tls_verify: bool = True
    smtp_timeout_s: float = Field(30.0, gt=0)
    # The mail relay: how often it looks for outbox rows and due e-mails, how many of each per shard per
    # round, and the retry schedule (base × 2^(attempt-1), at most the max) until the last attempt
    # dead-letters the e-mail.
    mail_relay_interval_s: float = Field(2.0, gt=0)
    mail_relay_batch_rows_max: int = Field(100, ge=1)
    mail_attempts_max: int = Field(8, ge=1)
    mail_retry_base_s: float = Field(60.0, gt=0)
    mail_retry_max_s: float = Field(3600.0, gt=0)
    # Rate limits (token buckets in Redis): per buyer, and per client address.
    rate_limits: bool = True
    rate_limit_user_per_s: float = Field(10.0, gt=0)
    rate_limit_user_burst: int = Field(20, ge=1)
    rate_limit_address_per_s: float = Field(2000.0, gt=0)
    rate_limit_address_burst: int = Field(4000, ge=1)
    # A router worker charges the checks waiting in it with one Redis script call, one call in
    # flight (router/ratelimit.py): at most this many checks per call. A script holds Redis while
    # it runs, ~10 µs per check of distinct buyers (measured on the 2-core dev machine, against
    # ~29 µs for a call of one), so 128 keeps other Redis users waiting ~1.3 ms at worst ...
    rate_limit_batch_max: int = Field(128, ge=1)
    # ... and at most this many waiting for one; beyond it a check fails open, counted, as when
    # Redis does not answer (Redis cannot keep up; queueing would only add latency).
    rate_limit_pending_max: int = Field(4096, ge=1)
    startup_timeout_s: float = Field(120.0, gt=0)
    shutdown_timeout_s: float = Field(20.0, gt=0)
    # The Prometheus config `ticketing up` writes (<data>/observability/prometheus.yml): how often it
    # scrapes the router, the actors and Ray, and how long the one `up --prometheus` starts keeps data.
    prometheus_scrape_interval_s: float = Field(5.0, gt=0, le=60)
    prometheus_retention_h: int = Field(7 * 24, ge=1)

    @field_validator("pg_dsns", mode="before")
    @classmethod
    def _parse_dsns(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("shard_retry_backoff_s", mode="before")
    @classmethod
    def _parse_backoff(cls, value: object) -> object:
        return _split_csv(value)

    @model_validator(mode="after")
    def _check_relationships(self) -> Self:
        problems: list[str] = []
        if self.pg_dsns and len(self.pg_dsns) != self.shard_count:
            problems.append(f"pg_dsns has {len(self.pg_dsns)} DSNs for shard_count={self.shard_count}")
        if self.pg_embedded_servers > self.shard_count:
            problems.append("pg_embedded_servers must not exceed shard_count (a server would hold no shard)")
        if self.batch_size_max > self.shard_queue_depth_max:
            problems.append("batch_size_max must fit in shard_queue_depth_max")
        if self.actor_call_timeout_s >= self.request_deadline_s:
            problems.append("actor_call_timeout_s must be shorter than request_deadline_s")
        if self.db_call_timeout_s >= self.actor_call_timeout_s:
            problems.append("db_call_timeout_s must be shorter than actor_call_timeout_s")
        problems += self._durable_lookup_problems()
        problems += self._router_problems()
        if self.min_hold_seconds > self.max_hold_seconds:
            problems.append("min_hold_seconds must not exceed max_hold_seconds")
        if self.gateway_call_timeout_s + 2 * self.actor_call_timeout_s >= self.checkout_deadline_s:
            problems.append("checkout_deadline_s must cover a gateway call and two actor calls")
        if self.payment_timeout_s <= self.gateway_call_timeout_s:
            problems.append("payment_timeout_s must exceed gateway_call_timeout_s (a charge in flight is not lost)")
        if self.jwt_public_key_file is not None and self.jwt_algorithm.startswith("HS"):
            problems.append("jwt_public_key_file needs an asymmetric jwt_algorithm (EdDSA, RS256, ES256)")
        try:
            self.shard_map()
        except ValueError as error:
            problems.append(str(error))
        if problems:
            raise ValueError("inconsistent settings: " + "; ".join(problems))
        return self

    def _durable_lookup_problems(self) -> list[str]:
        problems = []
        if self.durable_lookup_timeout_s >= self.actor_call_timeout_s:
            problems.append("durable_lookup_timeout_s must be shorter than actor_call_timeout_s")
        if self.idempotency_keys_max < 2 * self.batch_size_max:
            # A batch's keys must not push each other out of memory before they are applied.
            problems.append("idempotency_keys_max must be at least twice batch_size_max")
        return problems

    def _router_problems(self) -> list[str]:
        problems = []
        if not self.shard_retry_backoff_s or min(self.shard_retry_backoff_s) < 0:
            problems.append("shard_retry_backoff_s needs at least one delay, none negative")
        if self.seat_streams_per_worker_max >= self.router_connections_max:
            problems.append("seat_streams_per_worker_max must leave room for requests under router_connections_max")
        if self.rate_limit_batch_max > self.rate_limit_pending_max:
            problems.append("rate_limit_batch_max must fit in rate_limit_pending_max")
        if self.exports_per_worker_max >= self.db_pool_size_max:
            problems.append("exports_per_worker_max must leave db_pool_size_max connections for other reads")
        if self.smtp_host and "@" not in parseaddr(self.smtp_from)[1]:
            problems.append("smtp_host needs smtp_from, an address (the one e-mails are sent from)")
        if self.mail_retry_base_s > self.mail_retry_max_s:
            problems.append("mail_retry_base_s must not exceed mail_retry_max_s")
        return problems

    def shard_map(self) -> ShardMap:
        if self.slot_map:
            return ShardMap.parse(self.slot_map, self.shard_count)
        return ShardMap.even(self.shard_count)

    @property
    def embedded_postgres(self) -> bool:
        return not self.pg_dsns

    @property
    def embedded_redis(self) -> bool:
        return not self.redis_url

    @property
    def embedded_ray(self) -> bool:
        return not self.ray_address

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()


@dataclass(frozen=True, slots=True)
class ShardBounds:
    """Every bound a shard actor runs with, typed. Built only from `Settings` (`from_settings`,
    or `defaults` for tests and benchmarks), so each default lives in one place: its Settings field."""

    hold_seats_max: int
    hold_quantity_max: int
    event_seats_max: int
    hold_expiry_tick_ms: int
    pricing_interval_s: float
    pricing_step_max_percent: int
    pricing_velocity_horizon_s: float
    pricing_last_call_s: float
    closed_holds_max: int
    idempotency_keys_max: int
    idempotency_retention_s: int
    idempotency_purge_interval_s: float
    idempotency_purge_batch_keys_max: int
    commit_batch_commands_max: int
    commit_wait_ms_max: float
    commit_queue_batches_max: int
    actor_start_attempts_max: int
    actor_start_retry_s: float
    db_call_timeout_s: float
    db_pool_size_min: int
    db_pool_size_max: int
    durable_lookup_timeout_s: float
    recovery_timeout_s: float
    metrics_sections_max: int
    redis_timeout_s: float
    seat_feed_queue_max: int
    seat_feed_batch_max: int
    seat_feed_stream_entries_max: int
    log_level: str
    seat_feed_stream_ttl_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> ShardBounds:
        return cls(**{field.name: getattr(settings, field.name) for field in fields(cls)})

    @classmethod
    def defaults(cls, **overrides: Any) -> ShardBounds:
        """The deployment's defaults (Settings' fields, no environment read), with `overrides`."""
        bounds = cls.from_settings(Settings.model_construct())
        return replace(bounds, **overrides) if overrides else bounds

    def inventory_limits(self) -> InventoryLimits:
        from actors.inventory import InventoryLimits

        return InventoryLimits(hold_seats_max=self.hold_seats_max, hold_quantity_max=self.hold_quantity_max,
                               idempotency_keys_max=self.idempotency_keys_max, closed_holds_max=self.closed_holds_max)
