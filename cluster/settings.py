"""One settings object for the whole cluster (prefix ``TICKETING_``).

Every bound the system has is a named field here with its unit last (DESIGN §12, STYLE §3), and
the relationships between bounds are checked when the settings are built, so a deployment that
cannot work (a batch that does not fit in the queue, an actor timeout longer than the request
deadline) refuses to start instead of failing under load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from actors.inventory.idempotency import IDEMPOTENCY_KEYS_MAX_DEFAULT, IDEMPOTENCY_RETENTION_S_DEFAULT
from actors.inventory.shard import CLOSED_HOLDS_MAX_DEFAULT
from shards.lookup import (
    DURABLE_LOOKUP_TIMEOUT_S_DEFAULT,
    IDEMPOTENCY_PURGE_BATCH_KEYS_MAX_DEFAULT,
    IDEMPOTENCY_PURGE_INTERVAL_S_DEFAULT,
)
from shards.slots import SLOT_COUNT, ShardMap


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

    # Auth: HS256 with a shared secret (generated under data_dir when unset), or verification with
    # a public key (PEM file) for tokens issued by an outside identity provider.
    jwt_secret: str = ""
    jwt_public_key_file: Path | None = None
    jwt_algorithm: str = "HS256"
    jwt_ttl_s: int = Field(3600, ge=1)
    # HMAC key of waiting-room admission tokens (X-Queue-Token); generated under data_dir when
    # unset. Routers on several hosts that share no data_dir must set the same value.
    queue_token_secret: str = ""

    # Holds (API.md: hold_seconds in [min_hold_seconds, 3600]).
    min_hold_seconds: int = Field(60, ge=1)
    max_hold_seconds: int = Field(3600, ge=1)
    hold_seats_max: int = Field(10, ge=1)
    hold_quantity_max: int = Field(10, ge=1)
    hold_expiry_tick_ms: int = Field(200, ge=10, le=250)
    event_seats_max: int = Field(1_000_000, ge=1)

    # HTTP.
    body_bytes_max: int = Field(64 * 1024, ge=1024)
    request_deadline_s: float = Field(10.0, gt=0)
    # Checkout waits on the payment gateway between two actor calls, so it has its own deadline.
    checkout_deadline_s: float = Field(30.0, gt=0)
    events_page_max: int = Field(100, ge=1)
    router_connections_max: int = Field(4096, ge=16)
    router_backlog_max: int = Field(2048, ge=16)
    keep_alive_s: int = Field(30, ge=1)
    access_log: bool = True
    log_level: str = "INFO"

    # Router → actor micro-batching and back-pressure.
    batch_size_max: int = Field(256, ge=1)
    batch_wait_ms_max: float = Field(2.0, ge=0)
    shard_queue_depth_max: int = Field(4096, ge=1)
    actor_call_timeout_s: float = Field(5.0, gt=0)
    retry_after_s: int = Field(1, ge=1)

    # Actor → Postgres group commit.
    commit_batch_commands_max: int = Field(2048, ge=1)
    commit_wait_ms_max: float = Field(2.0, ge=0)
    db_call_timeout_s: float = Field(3.0, gt=0)
    db_pool_size_max: int = Field(8, ge=1)
    # Idempotency keys: an actor's memory holds the newest `idempotency_keys_max`; Postgres keeps
    # every key at least `idempotency_retention_s` (API.md: ≥ 24 h), then the actor's purge job
    # deletes it, in batches, every interval. What memory lacks is looked up in Postgres
    # (shards/lookup.py), as are holds that ended longer ago than the last `closed_holds_max`.
    idempotency_keys_max: int = Field(IDEMPOTENCY_KEYS_MAX_DEFAULT, ge=1)
    idempotency_retention_s: int = Field(IDEMPOTENCY_RETENTION_S_DEFAULT, ge=24 * 3600)
    idempotency_purge_interval_s: float = Field(IDEMPOTENCY_PURGE_INTERVAL_S_DEFAULT, gt=0)
    idempotency_purge_batch_keys_max: int = Field(IDEMPOTENCY_PURGE_BATCH_KEYS_MAX_DEFAULT, ge=1)
    closed_holds_max: int = Field(CLOSED_HOLDS_MAX_DEFAULT, ge=1)
    durable_lookup_timeout_s: float = Field(DURABLE_LOOKUP_TIMEOUT_S_DEFAULT, gt=0)
    # Recovery reads whole shards (a million-seat venue is millions of rows): its own deadline.
    recovery_timeout_s: float = Field(120.0, gt=0)

    # Readiness probes and other dependencies.
    probe_timeout_s: float = Field(2.0, gt=0)
    redis_timeout_s: float = Field(1.0, gt=0)
    gateway_call_timeout_s: float = Field(10.0, gt=0)

    # Checkout and payments (DESIGN §9).
    payment_gateway: str = "simulated"
    gateway_slow_delay_s: float = Field(3.0, ge=0)
    # A pinned hold whose payment outcome is still unknown after this long is resolved by the
    # checkout resolver: the charge is looked up by key, then confirmed or refunded.
    payment_timeout_s: float = Field(120.0, gt=0)
    checkout_resolver_interval_s: float = Field(5.0, gt=0)
    me_tickets_page_max: int = Field(100, ge=1)
    revocations_page_max: int = Field(1000, ge=1)
    qr_cache_entries_max: int = Field(1024, ge=0)
    # Rate limits (token buckets in Redis): per buyer, and per client address.
    rate_limits: bool = True
    rate_limit_user_per_s: float = Field(10.0, gt=0)
    rate_limit_user_burst: int = Field(20, ge=1)
    rate_limit_address_per_s: float = Field(2000.0, gt=0)
    rate_limit_address_burst: int = Field(4000, ge=1)
    startup_timeout_s: float = Field(120.0, gt=0)
    shutdown_timeout_s: float = Field(20.0, gt=0)

    @field_validator("pg_dsns", mode="before")
    @classmethod
    def _parse_dsns(cls, value: object) -> object:
        return _split_csv(value)

    @model_validator(mode="after")
    def _check_relationships(self) -> Self:
        problems: list[str] = []
        if self.pg_dsns and len(self.pg_dsns) != self.shard_count:
            problems.append(f"pg_dsns has {len(self.pg_dsns)} DSNs for shard_count={self.shard_count}")
        if self.batch_size_max > self.shard_queue_depth_max:
            problems.append("batch_size_max must fit in shard_queue_depth_max")
        if self.actor_call_timeout_s >= self.request_deadline_s:
            problems.append("actor_call_timeout_s must be shorter than request_deadline_s")
        if self.db_call_timeout_s >= self.actor_call_timeout_s:
            problems.append("db_call_timeout_s must be shorter than actor_call_timeout_s")
        problems += self._durable_lookup_problems()
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
