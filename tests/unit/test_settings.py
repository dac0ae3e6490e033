"""Settings: every bound is named, parsed from TICKETING_* variables and cross-checked at start-up."""

from __future__ import annotations

import uuid

import pytest

from cluster.settings import Settings
from shards.slots import SLOT_COUNT, ShardMap, slot_of

pytestmark = pytest.mark.unit


def test_defaults_are_consistent() -> None:
    settings = Settings()
    assert settings.shard_count == 4
    assert settings.min_hold_seconds == 60
    assert settings.embedded_postgres and settings.embedded_redis and settings.embedded_ray


def test_environment_overrides_and_dsn_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKETING_SHARD_COUNT", "2")
    monkeypatch.setenv("TICKETING_PG_DSNS", "postgresql://a/x, postgresql://b/y")
    monkeypatch.setenv("TICKETING_MIN_HOLD_SECONDS", "1")
    settings = Settings()
    assert settings.pg_dsns == ["postgresql://a/x", "postgresql://b/y"]
    assert settings.min_hold_seconds == 1
    assert not settings.embedded_postgres


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"batch_size_max": 10, "shard_queue_depth_max": 5}, "batch_size_max must fit"),
        ({"actor_call_timeout_s": 20.0}, "actor_call_timeout_s must be shorter"),
        ({"db_call_timeout_s": 6.0}, "db_call_timeout_s must be shorter"),
        ({"pg_dsns": ["postgresql://a/x"]}, "pg_dsns has 1 DSNs"),
        ({"min_hold_seconds": 4000}, "min_hold_seconds must not exceed"),
        ({"gateway_call_timeout_s": 29.0}, "checkout_deadline_s must cover"),
        ({"slot_map": "0-100:0"}, "unmapped"),
    ],
)
def test_inconsistent_bounds_refuse_to_start(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**overrides)


def test_slot_is_stable_and_in_range() -> None:
    event_id = uuid.UUID("00000000-0000-4000-8000-000000000001")
    # The slot of an event is fixed forever: this value must never change.
    assert slot_of(event_id) == slot_of(uuid.UUID(str(event_id)))
    assert all(0 <= slot_of(uuid.uuid4()) < SLOT_COUNT for _ in range(1000))


def test_even_map_splits_slots_in_contiguous_ranges() -> None:
    shard_map = ShardMap.even(4)
    assert [len(shard_map.slots_of(k)) for k in range(4)] == [64, 64, 64, 64]
    assert shard_map.slots_of(1)[0] == 64 and shard_map.slots_of(3)[-1] == 255


def test_explicit_map_parses_and_rejects_overlaps() -> None:
    shard_map = ShardMap.parse("0-9:1,10-255:0", 2)
    assert shard_map.shard_of_slot[0] == 1 and shard_map.shard_of_slot[10] == 0
    with pytest.raises(ValueError, match="mapped twice"):
        ShardMap.parse("0-200:0,100-255:1", 2)
    with pytest.raises(ValueError, match="out of range"):
        ShardMap.parse("0-255:3", 2)
