"""Fuzzing every operation of the served /openapi.json with schemathesis, as each role.

Proves: no input, valid or not, makes the router answer 5xx (503 from an outage aside, which this
quiet cluster does not have), and every response conforms to the document (status declared,
content type, body schema, headers). Each operation runs `FUZZ_EXAMPLES` generated cases per role
(default 100; `TICKETING_FUZZ_EXAMPLES=10` for a quick local run), half of them against real ids
(an event, and the buyer's hold, order and ticket) so that handlers get past "not found" and their
200 bodies are checked against the schema too. Buyers' mutating calls use a fresh subject per case
so that the per-buyer rate limit does not turn the run into 429s.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from router.openapi import CONTRACTS
from tests.harness import RunningCluster
from tests.support import create_event, event_body, ga, hold, seated

pytestmark = pytest.mark.e2e

FUZZ_EXAMPLES = int(os.environ.get("TICKETING_FUZZ_EXAMPLES", "100"))
ROLES = ("buyer", "organizer", "validator", "admin")
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "host", "connection"})
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
CALL_TIMEOUT_S = 30
# A stream with a real event never ends; fuzz it with generated (unknown) ids only.
NEVER_WITH_REAL_IDS = {"/v1/events/{event_id}/seats/stream"}
OPERATIONS = sorted(CONTRACTS)


@pytest.fixture(scope="module")
def schema(http: httpx.Client) -> Any:
    return schemathesis.openapi.from_dict(http.get("/openapi.json").json())


@pytest.fixture(scope="module")
def real_ids(http: httpx.Client, cluster: RunningCluster) -> dict[str, str]:
    """An event of `fuzz-organizer` and a checked-out hold of `fuzz-buyer`: its order and ticket; a
    webhook of `fuzz-organizer`."""
    event = create_event(http, cluster, event_body(ga("floor", 500), seated("A", [20, 20])), "fuzz-organizer")
    held = hold(http, cluster, "fuzz-buyer", {"event_id": event["id"], "section": "floor", "quantity": 1}).json()
    headers = {**cluster.headers("fuzz-buyer"), "Idempotency-Key": f"fuzz-{uuid.uuid4()}"}
    paid = http.post(f"/v1/holds/{held['id']}/checkout", json={"payment": {"token": "tok_visa"}}, headers=headers)
    assert paid.status_code == 201, paid.text
    second = hold(http, cluster, "fuzz-buyer", {"event_id": event["id"], "seats": ["A-1-1"]}).json()
    # A webhook of `fuzz-organizer` (nothing listens there: its deliveries fail and dead-letter).
    webhook = http.post("/v1/webhooks", json={"url": "https://127.0.0.1:9/hooks", "events": ["order.confirmed"]},
                        headers=cluster.headers("fuzz-organizer", "organizer"))
    assert webhook.status_code == 201, webhook.text
    return {"event_id": event["id"], "hold_id": second["id"], "order_id": paid.json()["order"]["id"],
            "ticket_id": paid.json()["tickets"][0]["id"], "webhook_id": webhook.json()["id"]}


def _headers(cluster: RunningCluster, role: str, method: str) -> dict[str, str]:
    # Buyers' writes are rate limited per subject; reads keep the owner of the real ids.
    subject = f"fuzz-{role}" if method == "GET" or role != "buyer" else f"fuzz-buyer-{uuid.uuid4().hex[:8]}"
    return cluster.headers(subject, role)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_operation_never_fails_and_conforms(schema: Any, cluster: RunningCluster, real_ids: dict[str, str],
                                            method: str, path: str, role: str) -> None:
    operation = schema[path][method]
    names = {parameter["name"] for parameter in operation.definition.raw.get("parameters", ())
             if parameter.get("in") == "path"}
    strategies = [operation.as_strategy(mode) for mode in schemathesis.GenerationMode]
    if names and path not in NEVER_WITH_REAL_IDS:
        known = {name: real_ids[name] for name in names}
        strategies += [operation.as_strategy(mode, path_parameters=known) for mode in schemathesis.GenerationMode]
    started = time.monotonic()
    statuses: Counter[int] = Counter()

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.generate, Phase.shrink], print_blob=True)
    @given(case=st.one_of(strategies))
    def fuzz(case: Any) -> None:
        # Message framing is the HTTP layer's, not the API's: a garbage Content-Length makes the
        # server's parser answer 400 before any application code runs (seen: `content-length:
        # ,4&gJF…`). The client library frames each request itself.
        for name in [name for name in case.headers or {} if name.lower() in FRAMING_HEADERS]:
            del case.headers[name]
        response = case.call(base_url=cluster.base_url, headers=_headers(cluster, role, method),
                             timeout=CALL_TIMEOUT_S)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)

    fuzz()
    print(f"{method} {path} as {role}: {sum(statuses.values())} calls in {time.monotonic() - started:.1f} s,"
          f" statuses {dict(sorted(statuses.items()))}")
