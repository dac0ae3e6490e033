"""Settings: every bound is named, parsed from TICKETING_* variables and cross-checked at start-up."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import uuid
from pathlib import Path
from typing import Any

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


# Every bound a setting (STYLE §3, issue 11) -----------------------------------------------------
# The router modules whose module-level numbers are checked. A number there is either read from
# the settings (it is the default a Settings field imports) or a protocol constant listed below
# with the reason it must not be tuned; a new bound cannot slip in as a constant.
CHECKED_MODULES = ("router.seat_stream", "router.shard_client", "router.schemas", "router.auth", "router.resolver",
                   "router.queue_tokens", "router.deps", "router.edge", "router.ratelimit")
PROTOCOL_CONSTANTS = {
    "router.auth.SUBJECT_LENGTH_MAX": "OpenID Connect caps a token's `sub` at 255 characters",
    "router.auth.TOKEN_EVENTS_MAX": "token format: every issuer and router must accept the same tokens",
    "router.auth.UUID_CHARS_MAX": "the canonical text form of a UUID has 36 characters",
    "router.deps.IDEMPOTENCY_KEY_CHARS_MAX": "API.md: an Idempotency-Key has 1-255 characters (and so does its column)",
    "router.queue_tokens.TOKEN_CHARS_MAX": "token format, published as the header's maxLength in the OpenAPI",
    "router.queue_tokens.SECRET_BYTES_MIN": "a security floor (16 bytes of entropy), not a tunable",
    "router.queue_tokens.USER_DIGEST_BYTES": "the token format: how much of SHA-256(user id) a token carries",
    "router.queue_tokens.PAYLOAD_BYTES": "the token format: the signed payload's length",
    "router.queue_tokens.LEGACY_PAYLOAD_BYTES": "the token format before quantity_max, still accepted",
    "router.schemas.TIME_YEAR_MIN": "API.md: times lie in years 1900-2999",
    "router.schemas.TIME_YEAR_MAX": "API.md: times lie in years 1900-2999",
    "router.schemas.TIME_CHARS_MAX": "RFC 3339: the longest time has 35 characters",
    "router.schemas.SEAT_NUMBER_DIGITS_MAX": "API.md's seat label format <section>-<row>-<number>",
    "router.schemas.SECTIONS_MAX": "event document contract (the OpenAPI publishes it)",
    "router.schemas.ROWS_MAX": "event document contract (the OpenAPI publishes it)",
    "router.schemas.SEATS_PER_ROW_MAX": "event document contract (the OpenAPI publishes it)",
    "router.schemas.CAPACITY_MAX": "event document contract (the OpenAPI publishes it)",
    "router.schemas.PRICE_CENTS_MAX": "event document contract; a hold's price must fit one payment",
    "router.schemas.WINDOWS_MAX": "event document contract (the OpenAPI publishes it)",
    "router.schemas.BLOCKED_MAX": "event document contract (the OpenAPI publishes it)",
    "router.schemas.TITLE_CHARS_MAX": "event document contract (the OpenAPI publishes it)",
    "router.schemas.NAME_CHARS_MAX": "event document contract (the OpenAPI publishes it)",
    "router.schemas.DESCRIPTION_CHARS_MAX": "event document contract (the OpenAPI publishes it)",
    "router.schemas.PRESALE_CODE_CHARS_MAX": "event document contract (the OpenAPI publishes it)",
}
SETTINGS_FILE = Path(__file__).resolve().parents[2] / "cluster" / "settings.py"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def numeric_constants(source: str, namespace: dict[str, Any]) -> list[str]:
    """Module-level UPPER_CASE names assigned in `source` whose value is a number or a flat tuple or
    list of numbers (a timeout, a size, a backoff schedule); regexes, sets, strings and metrics are
    not bounds."""
    names = []
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        for target in targets:
            if not isinstance(target, ast.Name) or not re.fullmatch(r"_?[A-Z][A-Z0-9_]*", target.id):
                continue
            value = namespace.get(target.id)
            if _is_number(value) or (isinstance(value, tuple | list) and value and all(map(_is_number, value))):
                names.append(target.id)
    return names


def settings_defaults() -> set[str]:
    """`module.NAME` of every constant cluster/settings.py imports: the default of a setting."""
    return {f"{node.module}.{alias.name}" for node in ast.walk(ast.parse(SETTINGS_FILE.read_text()))
            if isinstance(node, ast.ImportFrom) and node.module for alias in node.names}


def unexplained_constants(module_name: str, source: str, namespace: dict[str, Any]) -> list[str]:
    explained = settings_defaults() | set(PROTOCOL_CONSTANTS)
    return [f"{module_name}.{name}" for name in numeric_constants(source, namespace)
            if f"{module_name}.{name}" not in explained]


def test_every_router_bound_is_a_setting_or_a_named_protocol_constant() -> None:
    """A number at module level in a checked router module must be a setting's default or a protocol
    constant with its reason. Make a new bound a setting (with its unit, documented in
    docs/configuration.md), or add it to PROTOCOL_CONSTANTS if it truly must not be tuned."""
    unexplained, seen = [], set()
    for name in CHECKED_MODULES:
        module = importlib.import_module(name)
        source = inspect.getsource(module)
        unexplained += unexplained_constants(name, source, vars(module))
        seen |= {f"{name}.{constant}" for constant in numeric_constants(source, vars(module))}
    assert unexplained == []
    # The allowlist stays honest: it names no constant that has gone (or became a setting).
    assert sorted(set(PROTOCOL_CONSTANTS) - seen) == []
    assert all(reason.strip() for reason in PROTOCOL_CONSTANTS.values())


def test_a_new_bound_constant_is_caught() -> None:
    """Negative control: the check above sees a new bound, private or public, number or schedule."""
    source = ("import re\nPOLL_INTERVAL_S = 0.5\n_QUEUE_DEPTH_MAX: int = 64\nBACKOFF_S = (0.1, 1.0)\n"
              "PATTERN = re.compile('x')\nROLES = frozenset({'a'})\nENABLED = True\nlowercase = 3\n")
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    assert unexplained_constants("router.example", source, namespace) == [
        "router.example.POLL_INTERVAL_S", "router.example._QUEUE_DEPTH_MAX", "router.example.BACKOFF_S"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hold_seats_max": 1001}, "less than or equal to 1000"),
        ({"hold_quantity_max": 100_001}, "less than or equal to 100000"),
        ({"seat_streams_per_worker_max": 4096}, "seat_streams_per_worker_max must leave room"),
        ({"shard_retry_backoff_s": ()}, "shard_retry_backoff_s needs at least one delay"),
        ({"shard_retry_backoff_s": (0.1, -1.0)}, "shard_retry_backoff_s needs at least one delay"),
    ],
)
def test_router_bounds_that_must_agree_refuse_to_start(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**overrides)


def test_the_retry_backoff_reads_as_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKETING_SHARD_RETRY_BACKOFF_S", "0.1, 0.3,1")
    assert Settings().shard_retry_backoff_s == (0.1, 0.3, 1.0)
    assert Settings.model_fields["shard_retry_backoff_s"].default == (0.05, 0.2, 0.5, 1.0, 2.0)
