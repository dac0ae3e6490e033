"""Check-in and revocations are scoped to the events a caller is granted (issue 10, defect 10).

An admin checks in anywhere; an organizer only tickets of its own events; a validator only tickets
of the events in its token's `events` claim (`ticketing token --role validator --event ID`). A
code of another event is 403 FORBIDDEN and is refused before it reaches the shard, so the ticket
stays unused: each refusal below is followed by the right caller admitting the same ticket, which
is the negative control (had the refusal been a late one, after the shard admitted the ticket, that
admission would be 409 TICKET_ALREADY_USED instead).
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any

import httpx
import pytest

from tests.harness import RunningCluster
from tests.support import create_event, event_body, ga, hold, problem

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def events(http: httpx.Client, cluster: RunningCluster) -> dict[str, dict[str, Any]]:
    """Event A of organizer org-a and event B of organizer org-b."""
    return {"A": create_event(http, cluster, event_body(ga("floor", 50)), organizer="org-a"),
            "B": create_event(http, cluster, event_body(ga("floor", 50)), organizer="org-b")}


def buy_ticket(http: httpx.Client, cluster: RunningCluster, event: dict[str, Any], buyer: str) -> dict[str, Any]:
    created = hold(http, cluster, buyer, {"event_id": event["id"], "section": "floor", "quantity": 1})
    assert created.status_code == 201, created.text
    paid = http.post(f"/v1/holds/{created.json()['id']}/checkout", json={"payment": {"token": "tok_visa"}},
                     headers={**cluster.headers(buyer), "Idempotency-Key": f"pay-{uuid.uuid4()}"}, timeout=60)
    assert paid.status_code == 201, paid.text
    return dict(paid.json()["tickets"][0])


def ticket_status(http: httpx.Client, cluster: RunningCluster, buyer: str, ticket: dict[str, Any]) -> str:
    response = http.get(f"/v1/tickets/{ticket['id']}", headers=cluster.headers(buyer))
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


def check_in(http: httpx.Client, headers: dict[str, str], ticket: dict[str, Any],
             gate: str = "north") -> httpx.Response:
    return http.post("/v1/checkins", json={"code": ticket["code"], "gate": gate}, headers=headers)


def test_validator_of_event_a_cannot_admit_a_ticket_of_event_b(http: httpx.Client, cluster: RunningCluster,
                                                               events: dict[str, dict[str, Any]]) -> None:
    ticket = buy_ticket(http, cluster, events["B"], "scoped-buyer-1")
    validator_a = cluster.headers("gate-a", "validator", events=[events["A"]["id"]])
    unscoped = cluster.headers("gate-any", "validator")  # no `events` claim: no event at all
    for headers in (validator_a, unscoped):
        problem(check_in(http, headers, ticket), 403, "FORBIDDEN")
        assert ticket_status(http, cluster, "scoped-buyer-1", ticket) == "valid"
    validator_b = cluster.headers("gate-b", "validator", events=[events["A"]["id"], events["B"]["id"]])
    admitted = check_in(http, validator_b, ticket)
    assert admitted.status_code == 200, admitted.text
    assert admitted.json()["result"] == "admitted"
    assert ticket_status(http, cluster, "scoped-buyer-1", ticket) == "checked_in"


def test_organizer_checks_in_its_own_events_only(http: httpx.Client, cluster: RunningCluster,
                                                 events: dict[str, dict[str, Any]]) -> None:
    ticket = buy_ticket(http, cluster, events["B"], "scoped-buyer-2")
    problem(check_in(http, cluster.headers("org-a", "organizer"), ticket), 403, "FORBIDDEN")
    assert ticket_status(http, cluster, "scoped-buyer-2", ticket) == "valid"
    assert check_in(http, cluster.headers("org-b", "organizer"), ticket).status_code == 200
    assert ticket_status(http, cluster, "scoped-buyer-2", ticket) == "checked_in"


def test_admin_checks_in_any_event(http: httpx.Client, cluster: RunningCluster,
                                   events: dict[str, dict[str, Any]]) -> None:
    ticket = buy_ticket(http, cluster, events["A"], "scoped-buyer-3")
    assert check_in(http, cluster.headers("root", "admin"), ticket).status_code == 200


def test_revocations_are_scoped_like_check_in(http: httpx.Client, cluster: RunningCluster,
                                              events: dict[str, dict[str, Any]]) -> None:
    path = f"/v1/events/{events['B']['id']}/revocations"
    problem(http.get(path, headers=cluster.headers("gate-a", "validator", events=[events["A"]["id"]])),
            403, "FORBIDDEN")
    problem(http.get(path, headers=cluster.headers("org-a", "organizer")), 403, "FORBIDDEN")
    for headers in (cluster.headers("gate-b", "validator", events=[events["B"]["id"]]),
                    cluster.headers("org-b", "organizer"), cluster.headers("root", "admin")):
        response = http.get(path, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["event_id"] == events["B"]["id"]


def test_bad_gate_is_refused_at_the_edge_and_the_ticket_stays_usable(
        http: httpx.Client, cluster: RunningCluster, events: dict[str, dict[str, Any]]) -> None:
    """A NUL cannot be stored by Postgres: it must be a 422 naming the field, never a failed group
    commit (a 503 for every caller in that batch)."""
    ticket = buy_ticket(http, cluster, events["A"], "scoped-buyer-4")
    validator = cluster.headers("gate-a", "validator", events=[events["A"]["id"]])
    for gate in ("north\x00", "g" * 65, "tab\tgate"):
        body = problem(check_in(http, validator, ticket, gate=gate), 422, "VALIDATION_ERROR")
        assert body["detail"].startswith("gate:"), body
    raw = ('{"code": "%s", "gate": "n\\ud800"}' % ticket["code"]).encode()  # noqa: UP031 - JSON escapes
    body = problem(http.post("/v1/checkins", content=raw, headers={**validator, "content-type": "application/json"}),
                   422, "VALIDATION_ERROR")
    assert body["detail"].startswith("gate:"), body
    assert ticket_status(http, cluster, "scoped-buyer-4", ticket) == "valid"
    assert check_in(http, validator, ticket, gate="north").status_code == 200


def test_token_command_issues_scoped_validator_tokens(http: httpx.Client, cluster: RunningCluster,
                                                      events: dict[str, dict[str, Any]]) -> None:
    """`ticketing token --role validator --event ID` (repeatable) is what gate staff are given."""
    def token(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cluster.cli", "token", "--data-dir", str(cluster.data_dir),
                               "--sub", "gate-cli", *args], capture_output=True, text=True, timeout=60, check=False)

    issued = token("--role", "validator", "--event", events["A"]["id"], "--event", str(uuid.uuid4()))
    assert issued.returncode == 0, issued.stderr
    headers = {"Authorization": f"Bearer {issued.stdout.strip()}"}
    ticket_a = buy_ticket(http, cluster, events["A"], "scoped-buyer-5")
    ticket_b = buy_ticket(http, cluster, events["B"], "scoped-buyer-5")
    problem(check_in(http, headers, ticket_b), 403, "FORBIDDEN")
    assert check_in(http, headers, ticket_a).status_code == 200
    refused = token("--role", "buyer", "--event", events["A"]["id"])
    assert refused.returncode == 2 and "--event" in refused.stderr
