"""The edge's validation rules, in process: what passes the body models can always be stored, and
failures reach clients as problems without database or driver text."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from actors.inventory.results import HoldView
from actors.protocol import Unavailable
from router.health import _run
from router.problems import TITLES, ApiError, install_error_handlers
from router.schemas import EventCreate, HoldCreate, Strict, unstorable_character
from router.views import expect

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EVENT_ID = "0c5d0c3e-1111-4111-8111-111111111111"
UNSTORABLE = ["\x00", "\ud800", "\udfff", "\ufffe", "\U0010ffff", "\ufdd0", "\x1b", "\x7f", "\x85"]


def event(**overrides: Any) -> dict[str, Any]:
    body = {"title": "Night", "venue": {"name": "Arena"}, "starts_at": "2027-05-01T20:00:00Z",
            "sections": [{"id": "floor", "name": "Floor", "kind": "ga", "capacity": 5, "price_cents": 0}]}
    return {**body, **overrides}


def locations(error: ValidationError) -> list[str]:
    return [".".join(str(part) for part in item["loc"]) for item in error.errors()]


@pytest.mark.parametrize("character", UNSTORABLE, ids=[f"U+{ord(c):04X}" for c in UNSTORABLE])
@pytest.mark.parametrize("field", ["title", "category", "description", "venue.name", "venue.city"])
def test_unstorable_characters_are_refused_naming_the_field(field: str, character: str) -> None:
    body = event()
    if "." in field:
        outer, inner = field.split(".")
        body[outer] = {**body[outer], inner: f"a{character}b"}
    else:
        body[field] = f"a{character}b"
    with pytest.raises(ValidationError) as raised:
        EventCreate.model_validate(body)
    assert field in locations(raised.value)


def test_long_text_keeps_tabs_and_line_breaks_but_names_do_not() -> None:
    assert EventCreate.model_validate(event(description="line 1\r\n\tline 2")).description == "line 1\r\n\tline 2"
    with pytest.raises(ValidationError):
        EventCreate.model_validate(event(title="two\nlines"))


def test_unstorable_character_names_where() -> None:
    assert unstorable_character("ok text", single_line=True) is None
    assert unstorable_character("ab\x00", single_line=False) == "U+0000 at index 2"


@pytest.mark.parametrize("moment", ["1900-01-01T00:00:00Z", "2999-12-31T23:59:59Z", "2027-05-01T22:00:00+02:00"])
def test_times_within_the_api_years_are_accepted_and_kept_in_utc(moment: str) -> None:
    parsed = EventCreate.model_validate(event(starts_at=moment)).starts_at
    assert parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2999-12-31T23:30:00-05:00",
                                    "1900-01-01T00:30:00+01:00", "2027-05-01T20:00:00", "2027-05-01", "1e20",
                                    1_700_000_000, "0001-01-01T00:00:00+01:00"])
def test_times_outside_the_api_years_or_not_rfc3339_are_refused(moment: Any) -> None:
    with pytest.raises(ValidationError) as raised:
        EventCreate.model_validate(event(starts_at=moment))
    assert "starts_at" in locations(raised.value)


@pytest.mark.parametrize(("fields", "field"), [
    ({"section": "floor", "quantity": 10**30}, "quantity"),
    ({"seats": ["A-1-1"] * 2000}, "seats"),
    ({"seats": ["A-1-\x00"]}, "seats.0"),
    ({"seats": ["A-1-" + "9" * 7]}, "seats.0"),
    ({"section": "floor", "quantity": 1, "presale_code": "x\x00"}, "presale_code"),
])
def test_hold_bodies_are_bounded(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        HoldCreate.model_validate({"event_id": EVENT_ID, **fields})
    assert field in locations(raised.value)


def test_every_body_model_inherits_the_storable_check() -> None:
    """Body models declared in any route module derive from Strict, whose catch-all check covers
    every field; a model that overrode it would let unstorable text through to a shard."""
    import router.app  # noqa: F401 - imports every route module and so every body model

    def subclasses(model: type[Strict]) -> list[type[Strict]]:
        return [model, *(sub for child in model.__subclasses__() for sub in subclasses(child))]

    models = subclasses(Strict)
    assert {"HoldCreate", "EventCreate", "TransferBody", "CheckinBody"} <= {model.__name__ for model in models}
    for model in models:
        validators = model.__pydantic_decorators__.field_validators
        assert validators["_storable"].info.fields == ("*",), model


def test_a_model_in_another_module_refuses_nul_through_the_catch_all() -> None:
    class Elsewhere(Strict):
        gate: str
        names: tuple[str, ...] = ()

    for body, field in (({"gate": "north\x00"}, "gate"), ({"gate": "n", "names": ("a", "\ud800")}, "names")):
        with pytest.raises(ValidationError) as raised:
            Elsewhere.model_validate(body)
        assert field in locations(raised.value)


def test_unavailable_reply_detail_is_generic_and_the_reason_is_kept_for_the_log() -> None:
    message = 'duplicate key value violates unique constraint "seat_claims_pkey"'
    with pytest.raises(ApiError) as raised:
        expect(Unavailable(message), HoldView, "EVENT_NOT_FOUND", 1)
    assert raised.value.status == 503 and raised.value.code == "SHARD_UNAVAILABLE"
    assert "seat_claims" not in raised.value.detail and message in raised.value.reason
    assert raised.value.headers == {"Retry-After": "1"}


def _app_raising(error: BaseException) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app, retry_after_s=3)

    @app.get("/boom")
    async def boom() -> None:
        raise error

    return app


def _get(app: FastAPI) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/boom")

    return asyncio.run(run())


@pytest.mark.parametrize("error", [
    OSError("connect call failed ('127.0.0.1', 5432)"), TimeoutError("pool acquire"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
], ids=lambda error: type(error).__name__)
def test_a_lost_database_connection_is_503_with_retry_after_and_no_driver_text(error: BaseException) -> None:
    response = _get(_app_raising(error))
    assert response.status_code == 503 and response.headers["retry-after"] == "3"
    body = response.json()
    assert body["code"] == "SHARD_UNAVAILABLE" and "request_id" in body
    assert str(error) not in response.text


def test_a_bug_is_still_a_500_without_its_message() -> None:
    response = _get(_app_raising(RuntimeError("secret internals")))
    assert response.status_code == 500 and response.json()["code"] == "INTERNAL_ERROR"
    assert "secret internals" not in response.text


def test_readiness_names_the_component_not_the_exception() -> None:
    async def failing() -> None:
        raise OSError("password authentication failed for user pgserver at /var/run/postgresql")

    outcome = asyncio.run(_run("postgres-0", failing, 1.0))
    assert outcome == "down: error"


def test_every_code_the_router_raises_is_in_the_problem_enum() -> None:
    """The Problem schema's `code` enum is TITLES' keys; a code raised anywhere must be declared."""
    raised = set()
    for path in (ROOT / "router").rglob("*.py"):
        raised |= set(re.findall(r'ApiError\(\s*\d{3},\s*"([A-Z_]+)"', path.read_text()))
        raised |= set(re.findall(r'problem_response\(\s*\d{3},\s*"([A-Z_]+)"', path.read_text()))
    from router.views import REJECTION_STATUS

    raised |= {code for _, code in REJECTION_STATUS.values()}
    assert raised - set(TITLES) == set()


DYNAMIC = {"mode": "dynamic", "floor_cents": 1_000, "ceiling_cents": 5_000}


@pytest.mark.parametrize("kind", ["ga", "seated"])
def test_a_section_may_opt_in_to_dynamic_pricing_within_bounds(kind: str) -> None:
    """GA pools and seated sections both take `pricing`; the starting price lies within the bounds."""
    shape: dict[str, Any] = {"capacity": 5} if kind == "ga" else {"rows": [{"label": "1", "seats": 4}]}
    section = {"id": "s", "name": "S", "kind": kind, "price_cents": 2_000, "pricing": DYNAMIC, **shape}
    created = EventCreate.model_validate(event(sections=[section]))
    assert created.model_dump(mode="json")["sections"][0]["pricing"] == DYNAMIC
    fixed = {**section, "pricing": {"mode": "fixed"}}
    assert EventCreate.model_validate(event(sections=[fixed]))


@pytest.mark.parametrize("pricing", [
    {"mode": "dynamic", "floor_cents": 3_000, "ceiling_cents": 5_000},  # price below the floor
    {"mode": "dynamic", "floor_cents": 100, "ceiling_cents": 1_000},  # price above the ceiling
    {"mode": "dynamic", "floor_cents": 5_000, "ceiling_cents": 1_000},  # floor above ceiling
    {"mode": "dynamic", "floor_cents": 1_000},  # no ceiling
    {"mode": "dynamic", "floor_cents": 0, "ceiling_cents": 10**30},  # hostile sizes are 422, not 5xx
    {"mode": "dynamic", "floor_cents": -1, "ceiling_cents": 5_000},
    {"mode": "dynamic", "floor_cents": "1000", "ceiling_cents": 5_000},  # strings are not numbers
    {"mode": "dynamic", "floor_cents": True, "ceiling_cents": 5_000},
    {"mode": "fixed", "floor_cents": 1_000},  # a fixed price has no bounds
    {"mode": "surge", "floor_cents": 1_000, "ceiling_cents": 5_000},
    {"mode": "dynamic", "floor_cents": 1_000, "ceiling_cents": 5_000, "step": 3},  # unknown field
])
def test_bad_pricing_is_refused(pricing: dict[str, Any]) -> None:
    section = {"id": "s", "name": "S", "kind": "ga", "capacity": 5, "price_cents": 2_000, "pricing": pricing}
    with pytest.raises(ValidationError):
        EventCreate.model_validate(event(sections=[section]))
