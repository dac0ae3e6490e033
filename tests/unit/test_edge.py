"""The router's edge, in process: problem+json errors, JWT auth, body bound, request ids."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from typing import Any

import httpx
import pytest

from cluster.settings import Settings
from router.app import create_app
from router.auth import issue_token

pytestmark = pytest.mark.unit

SECRET = "unit-test-secret-0123456789abcdef"
# The app creates ticket keys and the simulated gateway's file under its data folder.
DATA_DIR = tempfile.mkdtemp(prefix="ticketing-unit-")


def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request through the whole ASGI stack, with no server and no lifespan (no Ray needed)."""
    app = create_app(Settings(jwt_secret=SECRET, body_bytes_max=2048, data_dir=DATA_DIR))

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(run())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code and body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    return dict(body)


def test_token_from_this_deployment_is_accepted() -> None:
    response = call("GET", "/v1/me", headers=bearer(issue_token(SECRET, "alice", "buyer", 60)))
    assert response.status_code == 200
    assert response.json() == {"sub": "alice", "role": "buyer"}


@pytest.mark.parametrize(
    "token",
    [
        issue_token("another-secret-0123456789abcdef-x", "alice", "buyer", 60),
        issue_token(SECRET, "alice", "buyer", -120),  # expired beyond the clock-skew leeway
        "not-a-jwt",
    ],
    ids=["other-secret", "expired", "garbage"],
)
def test_bad_tokens_are_401(token: str) -> None:
    assert_problem(call("GET", "/v1/me", headers=bearer(token)), 401, "UNAUTHENTICATED")


def test_missing_token_is_401() -> None:
    assert_problem(call("GET", "/v1/me"), 401, "UNAUTHENTICATED")


def test_unknown_role_claim_is_401() -> None:
    import jwt

    token = jwt.encode({"sub": "x", "role": "root", "exp": 2**40}, SECRET, algorithm="HS256")
    assert_problem(call("GET", "/v1/me", headers=bearer(token)), 401, "UNAUTHENTICATED")


def test_oversize_body_is_413_problem() -> None:
    assert_problem(call("POST", "/v1/me", content=b"x" * 5000), 413, "BODY_TOO_LARGE")


def test_unknown_path_and_method_are_problems() -> None:
    assert_problem(call("GET", "/nope"), 404, "NOT_FOUND")
    assert_problem(call("DELETE", "/healthz"), 405, "METHOD_NOT_ALLOWED")


def test_request_id_is_echoed_or_made() -> None:
    assert call("GET", "/healthz", headers={"X-Request-Id": "abc-123"}).headers["x-request-id"] == "abc-123"
    made = call("GET", "/healthz", headers={"X-Request-Id": "bad id with spaces"}).headers["x-request-id"]
    assert len(made) == 32


def test_metrics_are_prometheus_text() -> None:
    call("GET", "/healthz")
    response = call("GET", "/metrics")
    assert response.status_code == 200
    assert "ticketing_http_requests_total" in response.text


def test_a_cached_token_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    """Verified tokens are cached per worker, but a cached one is refused once it expires."""
    import time as clock

    from router.auth import TokenVerifier
    from router.problems import ApiError

    settings = Settings(jwt_secret=SECRET, data_dir=DATA_DIR)
    verifier = TokenVerifier(settings)
    token = issue_token(SECRET, "alice", "buyer", 60)
    assert verifier.verify(token).user_id == "alice"
    assert verifier.verify(token).user_id == "alice"  # from the cache
    later = clock.time() + 60 + settings.jwt_clock_skew_s + 1
    monkeypatch.setattr("router.auth.time.time", lambda: later)
    monkeypatch.setattr("jwt.api_jwt.datetime", _FrozenDatetime(later))
    with pytest.raises(ApiError) as refused:
        verifier.verify(token)
    assert refused.value.code == "UNAUTHENTICATED"


class _FrozenDatetime:
    """Stands in for the datetime module PyJWT reads `now` from."""

    def __init__(self, now_s: float) -> None:
        import datetime

        self._now = datetime.datetime.fromtimestamp(now_s, datetime.UTC)
        self.timezone = datetime.timezone
        self.timedelta = datetime.timedelta

    def now(self, tz: object = None) -> object:
        return self._now


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize("forgery", ["tampered-role", "alg-none", "padded", "future-iat"])
def test_the_fast_hs256_path_refuses_forgeries(forgery: str) -> None:
    """The router's own HS256 check must refuse whatever PyJWT would: a payload changed under
    the original signature, an unsigned token, non-canonical encodings, tokens from the future."""
    import orjson

    from router.auth import TokenVerifier
    from router.problems import ApiError

    verifier = TokenVerifier(Settings(jwt_secret=SECRET, data_dir=DATA_DIR))
    header, payload, signature = issue_token(SECRET, "mallory", "buyer", 60).split(".")
    claims = orjson.loads(_b64_decode(payload))
    if forgery == "tampered-role":
        token = f"{header}.{_b64(orjson.dumps({**claims, 'role': 'admin'}))}.{signature}"
    elif forgery == "alg-none":
        token = f"{_b64(orjson.dumps({'alg': 'none', 'typ': 'JWT'}))}.{payload}."
    elif forgery == "padded":
        token = f"{header}.{payload}==.{signature}"
    else:
        future = {**claims, "iat": claims["iat"] + 3600}
        token = jwt_encode(future)
    with pytest.raises(ApiError) as refused:
        verifier.verify(token)
    assert refused.value.code == "UNAUTHENTICATED"


def test_the_fast_path_agrees_with_pyjwt() -> None:
    from router.auth import TokenVerifier

    verifier = TokenVerifier(Settings(jwt_secret=SECRET, data_dir=DATA_DIR))
    token = issue_token(SECRET, "ana", "organizer", 60)
    fast = verifier._decode_hs256(token)
    assert fast is not None and fast == verifier._decode_with_pyjwt(token)


def _b64_decode(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_encode(claims: dict[str, Any]) -> str:
    import jwt

    return jwt.encode(claims, SECRET, algorithm="HS256")


def test_request_tally_applies_exactly_what_observe_would() -> None:
    """The edge counts requests in plain numbers and applies them to the Prometheus series once per
    interval; the series must end up as one `inc`/`observe` per request would have left them."""
    from prometheus_client import REGISTRY, Histogram

    from router.http_metrics import HTTP_LATENCY, LATENCY_BUCKETS_S, RequestTally

    route = f"/test/{uuid.uuid4().hex}"
    latencies = [0.0004, 0.001, 0.0011, 0.03, 0.03, 0.7, 12.0, 0.0025]
    reference = Histogram("tally_reference_seconds", "reference", ["route"], buckets=LATENCY_BUCKETS_S,
                          registry=None).labels(route)
    for latency in latencies:
        reference.observe(latency)

    async def run() -> tuple[float | None, float | None]:
        tally = RequestTally(interval_s=0.05)
        for latency in latencies:
            tally.started()
            tally.finished(route, "GET", 200, latency)
        before = REGISTRY.get_sample_value("ticketing_http_requests_total",
                                           {"route": route, "method": "GET", "status": "200"})
        await asyncio.sleep(0.2)  # the timer armed by the first request has fired
        after = REGISTRY.get_sample_value("ticketing_http_requests_total",
                                          {"route": route, "method": "GET", "status": "200"})
        return before, after

    before, after = asyncio.run(run())
    assert before is None and after == len(latencies)
    mine = HTTP_LATENCY.labels(route, "GET")
    assert mine._sum.get() == pytest.approx(reference._sum.get())
    assert [bucket.get() for bucket in mine._buckets] == [bucket.get() for bucket in reference._buckets]


def test_the_in_process_hold_benchmark_still_runs() -> None:
    """`loadtest.edge_bench` drives the real edge and hold handler; keep it working."""
    import subprocess
    import sys
    from pathlib import Path

    result = subprocess.run([sys.executable, "-m", "loadtest.edge_bench", "--requests", "50"], capture_output=True,
                            text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    assert "µs of router Python per hold" in result.stdout


def test_an_unhandled_exception_is_logged_once_with_its_request_id_and_counted_as_500() -> None:
    """A bug under a FastAPI route: the client gets a 500 problem quoting the request id (body
    and X-Request-Id), the log has exactly one `unhandled error` line with that id and the
    traceback, and the access line says 500 — read back through the JSON formatter every
    process uses."""
    import io
    import json
    import logging

    from cluster.logs import JsonFormatter

    app = create_app(Settings(jwt_secret=SECRET, data_dir=DATA_DIR))

    @app.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        async def run() -> httpx.Response:
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.get("/v1/boom")

        response = asyncio.run(run())
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    body = assert_problem(response, 500, "INTERNAL_ERROR")
    request_id = body["request_id"]
    assert response.headers["x-request-id"] == request_id and "secret internals" not in response.text
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    errors = [line for line in lines if line["msg"] == "unhandled error"]
    assert len(errors) == 1 and errors[0]["request_id"] == request_id and "RuntimeError" in errors[0]["exc"]
    assert not [line for line in lines if "Exception in ASGI application" in line["msg"]]
    access = [line for line in lines if line["logger"] == "ticketing.access"]
    assert [(line["request_id"], line["status"], line["route"]) for line in access] == [(request_id, 500, "/v1/boom")]


def test_every_line_a_request_causes_carries_its_id() -> None:
    """Log lines written while serving a request (not only the access line) name it, and a
    task shared by many requests does not inherit the id of the one that started it."""
    import contextvars
    import io
    import json
    import logging

    from cluster.logs import REQUEST_ID, JsonFormatter, shared_context

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("ticketing.test")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        async def run() -> None:
            REQUEST_ID.set("req-1")
            logger.info("inside")
            await asyncio.get_running_loop().create_task(_log_async(logger, "shared"), context=shared_context())
            await asyncio.get_running_loop().create_task(_log_async(logger, "inherited"))

        contextvars.Context().run(asyncio.run, run())
    finally:
        logger.removeHandler(handler)
    lines = {line["msg"]: line for line in map(json.loads, stream.getvalue().splitlines())}
    assert lines["inside"]["request_id"] == "req-1" and lines["inherited"]["request_id"] == "req-1"
    assert "request_id" not in lines["shared"]


async def _log_async(logger: Any, message: str) -> None:
    logger.info(message)
