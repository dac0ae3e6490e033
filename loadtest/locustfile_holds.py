"""Locust scenario: buyers hammering GA holds on one hot event (issue 5).

    TICKETING_DATA_DIR=<data dir of a running deployment> \
    .venv/bin/locust -f loadtest/locustfile_holds.py --headless -u 200 -r 50 -t 20s --host http://127.0.0.1:<port>

Tokens are minted locally from the deployment's JWT secret (``TICKETING_JWT_SECRET``, or the one
generated in ``TICKETING_DATA_DIR``). Unless ``TICKETING_BENCH_EVENT_ID`` names an event, one GA
event (capacity 1,000,000, no per-person limit) is created at test start. Every simulated buyer
is a distinct user and posts holds of quantity 1 back to back (no think time): a flash-sale
spike, not a browsing mix. Locust itself is CPU-hungry (one core handles ~1-2k requests/s on
this machine); read its numbers as a lower bound and compare with ``loadtest.http_holds_bench``.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from locust import FastHttpUser, events, task

from cluster.secrets import read_jwt_secret
from router.auth import issue_token

TOKEN_TTL_S = 3600
_users = itertools.count()
_event: dict[str, str] = {}


def _secret() -> str:
    data_dir = Path(os.environ.get("TICKETING_DATA_DIR", ".data"))
    return os.environ.get("TICKETING_JWT_SECRET") or read_jwt_secret(data_dir)


@events.test_start.add_listener
def _create_event(environment, **_: object) -> None:  # type: ignore[no-untyped-def]
    event_id = os.environ.get("TICKETING_BENCH_EVENT_ID")
    if event_id is None:
        import httpx

        token = issue_token(_secret(), "locust-organizer", "organizer", TOKEN_TTL_S)
        document = {"title": "locust holds", "venue": {"name": "v"}, "starts_at": "2027-01-01T20:00:00Z",
                    "hold_seconds": 3600, "sections": [{"id": "floor", "name": "Floor", "kind": "ga",
                                                        "capacity": 1_000_000, "price_cents": 5000}]}
        response = httpx.post(f"{environment.host}/v1/events", timeout=30, json=document,
                              headers={"Authorization": f"Bearer {token}"})
        response.raise_for_status()
        event_id = str(response.json()["id"])
    _event["id"] = event_id


class Buyer(FastHttpUser):
    def on_start(self) -> None:
        token = issue_token(_secret(), f"locust-user-{next(_users)}", "buyer", TOKEN_TTL_S)
        self.headers = {"Authorization": f"Bearer {token}"}

    @task
    def hold_ga(self) -> None:
        with self.client.post("/v1/holds", json={"event_id": _event["id"], "section": "floor", "quantity": 1},
                              headers=self.headers, name="/v1/holds", catch_response=True) as response:
            if response.status_code != 201:
                response.failure(f"{response.status_code}")
