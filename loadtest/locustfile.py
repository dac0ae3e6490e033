"""Locust scenarios that look like an on-sale: browsers, buyers and gate staff (issue 12).

    LOADTEST_SHAPE=spike TICKETING_DATA_DIR=<data dir of a running deployment> \
    .venv/bin/locust -f loadtest/locustfile.py --headless -u 20 -t 60s --host http://127.0.0.1:<port>

`make loadtest` (``python -m loadtest.locust_run``) does this against a cluster of its own and keeps
the HTML report. docs/loadtesting.md describes the scenarios, their weights, the spike shape, where
tokens come from and which rate-limit settings a load test must raise; keep it true when this
file changes.

Three events are created at test start (a big GA event, a seated event, and a small GA event that
sells out during the run) unless ``LOADTEST_EVENTS`` names a JSON file of events to reuse. Sold-out
answers (409 ``SEATS_UNAVAILABLE``, ``INSUFFICIENT_INVENTORY``, ``LIMIT_EXCEEDED``), a declined test
card and a deliberate second scan of a ticket are correct answers: they count as successes, under
their own row in the statistics (the request's name followed by ``→ <status> <code>``). Anything
else that is not the expected status, 429 and 503 included, is a failure.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import gevent
from locust import FastHttpUser, LoadTestShape, between, events, task
from locust.env import Environment
from locust.exception import StopUser

from cluster.secrets import read_jwt_secret
from router.auth import issue_token

TOKEN_TTL_S = 4 * 3600
STARTS_AT = "2027-06-01T20:00:00Z"
GA_CAPACITY = 100_000
SEATED_SECTIONS = ("A", "B", "C", "D")
SEATED_ROWS = 25
SEATS_PER_ROW = 40
SMALL_CAPACITY_DEFAULT = 150
# Holds on the small event last one minute, so abandoned ones come back on sale within a run.
SMALL_HOLD_S = 60
PER_PERSON_LIMIT = 8
# Tickets bought during the run wait here for gate staff; bounded, the oldest dropped first.
TICKETS_QUEUED_MAX = 10_000
# Buyers: half check out; of those that do not, most release their hold and the rest abandon it.
CHECKOUT_SHARE = 0.5
DECLINED_CARD_SHARE = 0.05
RELEASE_SHARE = 0.6
THINK_S = (0.2, 1.0)
# Gate staff scan a ticket a second time this often (the answer must be 409 TICKET_ALREADY_USED).
RESCAN_SHARE = 0.1
STREAM_S = (2.0, 5.0)
STREAM_CHUNK_BYTES = 4096
SOLD_OUT = frozenset({"SEATS_UNAVAILABLE", "INSUFFICIENT_INVENTORY", "LIMIT_EXCEEDED"})
# The spike shape: fractions of the run at which each phase ends, and the spike's height.
RUN_S_DEFAULT = 60
RAMP_END = 0.2
SPIKE_END = 0.3
DECAY_END = 0.6
SPIKE_FACTOR = 10


# --- tokens ---------------------------------------------------------------------------------------


def token_lines(variable: str) -> list[str]:
    """The tokens in the file named by `variable` (``ticketing token`` output), or none if unset."""
    path = os.environ.get(variable)
    if not path:
        return []
    lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{variable}={path} holds no token")
    return lines


class TokenSource:
    """Bearer tokens per role: from ``ticketing token`` output files where given, else minted here
    from the deployment's secret (``TICKETING_JWT_SECRET``, or the one in ``TICKETING_DATA_DIR``)."""

    def __init__(self) -> None:
        self.buyers = token_lines("LOADTEST_BUYER_TOKENS")
        self.organizers = token_lines("LOADTEST_ORGANIZER_TOKEN")
        self.validators = token_lines("LOADTEST_VALIDATOR_TOKENS")
        self.run_tag = uuid.uuid4().hex[:8]  # minted buyers differ from one run to the next
        self._serials = itertools.count()
        self._secret: str | None = None

    def secret(self) -> str:
        if self._secret is None:
            data_dir = Path(os.environ.get("TICKETING_DATA_DIR", ".data"))
            try:
                self._secret = os.environ.get("TICKETING_JWT_SECRET") or read_jwt_secret(data_dir)
            except FileNotFoundError as error:
                raise RuntimeError(f"no JWT secret in {data_dir}: set TICKETING_DATA_DIR or TICKETING_JWT_SECRET, "
                                   "or give token files (docs/loadtesting.md)") from error
        return self._secret

    def buyer(self) -> str:
        """A new buyer; a token file is used round-robin, so its users repeat once it wraps."""
        serial = next(self._serials)
        if self.buyers:
            return self.buyers[serial % len(self.buyers)]
        return issue_token(self.secret(), f"locust-{self.run_tag}-buyer-{serial}", "buyer", TOKEN_TTL_S)

    def organizer(self) -> str:
        if self.organizers:
            return self.organizers[0]
        return issue_token(self.secret(), "locust-organizer", "organizer", TOKEN_TTL_S)

    def validator(self, gate: int, event_ids: Sequence[str]) -> str:
        if self.validators:
            return self.validators[gate % len(self.validators)]
        return issue_token(self.secret(), f"locust-gate-{gate}", "validator", TOKEN_TTL_S, events=event_ids)


# --- events ---------------------------------------------------------------------------------------


def event_documents(small_capacity: int) -> dict[str, dict[str, Any]]:
    """The on-sale's events by role: `ga` (big), `seated`, and `small` (sells out during a run)."""
    common = {"category": "concert", "starts_at": STARTS_AT, "currency": "EUR",
              "per_person_limit": PER_PERSON_LIMIT, "hold_seconds": 600}
    rows = [{"label": str(number), "seats": SEATS_PER_ROW} for number in range(1, SEATED_ROWS + 1)]
    return {
        "ga": {**common, "title": "Locust on-sale: festival GA", "venue": {"name": "Park", "city": "Lisbon"},
               "sections": [{"id": "floor", "name": "Floor", "kind": "ga", "capacity": GA_CAPACITY,
                             "price_cents": 6500}]},
        "seated": {**common, "title": "Locust on-sale: arena seated", "venue": {"name": "Arena", "city": "Porto"},
                   "sections": [{"id": section, "name": f"Block {section}", "kind": "seated",
                                 "price_cents": 9900 + 1000 * index, "rows": rows}
                                for index, section in enumerate(SEATED_SECTIONS)]},
        "small": {**common, "title": "Locust on-sale: club night", "venue": {"name": "Club", "city": "Braga"},
                  "hold_seconds": SMALL_HOLD_S,
                  "sections": [{"id": "floor", "name": "Floor", "kind": "ga", "capacity": small_capacity,
                                "price_cents": 2500}]},
    }


def create_events(host: str, organizer_token: str, small_capacity: int) -> dict[str, str]:
    import httpx

    created = {}
    for role, document in event_documents(small_capacity).items():
        response = httpx.post(f"{host}/v1/events", json=document, timeout=30,
                              headers={"Authorization": f"Bearer {organizer_token}"})
        response.raise_for_status()
        created[role] = str(response.json()["id"])
    return created


def token_events(token: str) -> set[str]:
    import jwt

    return set(jwt.decode(token, options={"verify_signature": False}).get("events", []))


@dataclass
class Scenario:
    """What the users of one Locust process share: the events, the tokens and the bought tickets."""

    events: dict[str, str] = field(default_factory=dict)
    tokens: TokenSource | None = None
    tickets: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=TICKETS_QUEUED_MAX))
    gates: Iterator[int] = field(default_factory=itertools.count)

    def prepare(self, host: str) -> None:
        self.tokens = TokenSource()
        reuse = os.environ.get("LOADTEST_EVENTS")
        if reuse:
            self.events = {role: str(event_id) for role, event_id in json.loads(Path(reuse).read_text()).items()}
        else:
            small_capacity = int(os.environ.get("LOADTEST_SMALL_CAPACITY", SMALL_CAPACITY_DEFAULT))
            self.events = create_events(host, self.tokens.organizer(), small_capacity)
        if set(self.events) != {"ga", "seated", "small"}:
            raise ValueError(f"events must be ga, seated and small; got {sorted(self.events)}")
        for token in self.tokens.validators:
            if missing := set(self.events.values()) - token_events(token):
                raise ValueError(f"a validator token does not cover events {sorted(missing)}")
        if out := os.environ.get("LOADTEST_EVENTS_OUT"):
            Path(out).write_text(json.dumps(self.events, indent=2) + "\n")


SCENARIO = Scenario()


@events.test_start.add_listener
def _prepare(environment: Environment, **_: object) -> None:
    try:
        SCENARIO.prepare(str(environment.host))
    except Exception:
        # Without events or tokens no user can do anything: stop the run rather than let it idle.
        if environment.runner is not None:
            gevent.spawn_later(0.1, environment.runner.quit)
        raise


# --- users ----------------------------------------------------------------------------------------


def problem_code(response: Any) -> str:
    try:
        return str(response.json().get("code", ""))
    except Exception:  # not JSON: a connection error or a proxy's page
        return ""


def judge(response: Any, name: str, ok: int | None, correct: frozenset[str] = frozenset()) -> Any:
    """Mark the response; returns the JSON body when the status is `ok`, else None.

    A problem whose code is in `correct` is a right answer under load (sold out, declined): a
    success, renamed so that the report shows how often each came and how fast.
    """
    if ok is not None and response.status_code == ok:
        response.success()
        return response.json()
    code = problem_code(response)
    if code in correct:
        response.request_meta["name"] = f"{name} → {response.status_code} {code}"
        response.success()
    else:
        response.failure(f"{response.status_code} {code}".strip())
    return None


class OnSaleUser(FastHttpUser):
    abstract = True
    role = ""  # prefixes the request names, so the report shows each user class's requests apart

    def on_start(self) -> None:
        if not SCENARIO.events or SCENARIO.tokens is None:
            raise StopUser()  # test start failed (logged there); the run is stopping
        self.token = ""

    def call(self, method: str, path: str, name: str, ok: int | None = 200,
             correct: frozenset[str] = frozenset(), body: Any = None) -> Any:
        full_name = f"{self.role}: {method} {name}"
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if method in ("POST", "DELETE"):  # a retry of either must not act twice (API.md Idempotency)
            headers["Idempotency-Key"] = str(uuid.uuid4())
        with self.client.request(method, path, name=full_name, json=body, headers=headers,
                                 catch_response=True) as response:
            return judge(response, full_name, ok, correct)

    def event_id(self, role: str | None = None) -> str:
        return SCENARIO.events[role or random.choice(("ga", "seated", "small"))]


class Browser(OnSaleUser):
    """Looks around: the listing, one event, its availability and seat map; a few watch the stream."""

    weight = 6
    role = "browse"
    wait_time = between(1.0, 4.0)

    @task(2)
    def list_events(self) -> None:
        query = random.choice(({"limit": 20}, {"category": "concert", "limit": 20}, {"q": "Locust", "limit": 10}))
        self.call("GET", f"/v1/events?{urlencode(query)}", "/v1/events")

    @task(1)
    def event(self) -> None:
        self.call("GET", f"/v1/events/{self.event_id()}", "/v1/events/{id}")

    @task(4)
    def availability(self) -> None:
        self.call("GET", f"/v1/events/{self.event_id()}/availability", "/v1/events/{id}/availability")

    @task(3)
    def seat_map(self) -> None:
        section = random.choice(SEATED_SECTIONS)
        self.call("GET", f"/v1/events/{self.event_id('seated')}/seats?section={section}",
                  "/v1/events/{id}/seats")

    @task(1)
    def watch_seat_map(self) -> None:
        """Open the live seat map for a few seconds (the request's time is until the headers)."""
        name = f"{self.role}: GET /v1/events/{{id}}/seats/stream"
        with self.client.get(f"/v1/events/{self.event_id('seated')}/seats/stream", name=name, stream=True,
                             headers={"Accept": "text/event-stream"}, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code} {problem_code(response)}".strip())
                return
            response.success()
        try:
            with gevent.Timeout(random.uniform(*STREAM_S), False):
                for _ in response.iter_content(STREAM_CHUNK_BYTES):
                    pass
        finally:
            # Close the connection: an unfinished stream must not go back to the keep-alive pool.
            if response._response is not None:
                response._response.release()


class Buyer(OnSaleUser):
    """Tries to buy: GA, best-available or seats picked from the seat map; half pay, some give up."""

    weight = 3
    role = "buy"
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        super().on_start()
        self.next_buyer()

    def next_buyer(self) -> None:
        assert SCENARIO.tokens is not None  # on_start stopped the user otherwise
        self.token = SCENARIO.tokens.buyer()

    @task(3)
    def general_admission(self) -> None:
        self.buy({"event_id": self.event_id("ga"), "section": "floor", "quantity": quantity()}, "ga")

    @task(2)
    def best_available(self) -> None:
        self.buy({"event_id": self.event_id("seated"), "section": random.choice(SEATED_SECTIONS),
                  "quantity": quantity(), "best_available": True, "adjacent": True}, "best_available")

    @task(2)
    def pick_seats(self) -> None:
        event_id, section, wanted = self.event_id("seated"), random.choice(SEATED_SECTIONS), quantity()
        seat_map = self.call("GET", f"/v1/events/{event_id}/seats?section={section}", "/v1/events/{id}/seats")
        seats = free_run(seat_map, section, wanted) if seat_map else None
        if seats:
            self.buy({"event_id": event_id, "seats": seats}, "seats")

    @task(2)
    def small_event(self) -> None:
        event_id = self.event_id("small")
        self.call("GET", f"/v1/events/{event_id}/availability", "/v1/events/{id}/availability")
        self.buy({"event_id": event_id, "section": "floor", "quantity": quantity()}, "small")

    def buy(self, body: dict[str, Any], kind: str) -> None:
        hold = self.call("POST", "/v1/holds", f"/v1/holds [{kind}]", 201, SOLD_OUT, body)
        if hold is None:
            return  # sold out (or a failure): the same person tries again
        gevent.sleep(random.uniform(*THINK_S))
        draw = random.random()
        if draw < CHECKOUT_SHARE:
            self.check_out(hold)
        elif draw < CHECKOUT_SHARE + (1 - CHECKOUT_SHARE) * RELEASE_SHARE:
            self.call("DELETE", f"/v1/holds/{hold['id']}", "/v1/holds/{id}")
        # else: abandoned; the hold expires after the event's hold_seconds.
        self.next_buyer()

    def check_out(self, hold: dict[str, Any]) -> None:
        declined = random.random() < DECLINED_CARD_SHARE
        body = {"payment": {"token": "tok_declined" if declined else "tok_visa"}}
        paid = self.call("POST", f"/v1/holds/{hold['id']}/checkout", "/v1/holds/{id}/checkout", 201,
                         frozenset({"PAYMENT_DECLINED"}) if declined else frozenset(), body)
        if paid is None:
            return
        self.call("GET", f"/v1/orders/{paid['order']['id']}", "/v1/orders/{id}")
        self.call("GET", f"/v1/me/tickets?event_id={hold['event_id']}", "/v1/me/tickets")
        SCENARIO.tickets.extend((hold["event_id"], ticket["code"]) for ticket in paid["tickets"])


class GateStaff(OnSaleUser):
    """Scans tickets bought during the run at a gate; refreshes the scanner's keys while idle."""

    fixed_count = int(os.environ.get("LOADTEST_GATES", "2"))
    role = "gate"
    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        super().on_start()
        assert SCENARIO.tokens is not None
        self.gate = next(SCENARIO.gates)
        self.token = SCENARIO.tokens.validator(self.gate, sorted(SCENARIO.events.values()))

    @task
    def scan(self) -> None:
        if not SCENARIO.tickets:
            self.call("GET", "/v1/ticket-keys", "/v1/ticket-keys")
            return
        _, code = SCENARIO.tickets.popleft()
        body = {"code": code, "gate": f"gate-{self.gate}"}
        if self.call("POST", "/v1/checkins", "/v1/checkins", 200, body=body) and random.random() < RESCAN_SHARE:
            # A second scan of an admitted ticket must be refused: a 200 here is a failure.
            self.call("POST", "/v1/checkins", "/v1/checkins [rescan]", None,
                      frozenset({"TICKET_ALREADY_USED"}), body)


def quantity() -> int:
    return random.choice((1, 2, 2, 2, 3, 4))


def free_run(seat_map: dict[str, Any], section: str, wanted: int) -> list[str] | None:
    """Labels of `wanted` adjacent available seats in a random row of the seat map, if any."""
    rows = [row for map_section in seat_map["sections"] if map_section["id"] == section
            for row in map_section["rows"]]
    random.shuffle(rows)
    for row in rows:
        start = row["seats"].find("." * wanted)
        if start >= 0:
            return [f"{section}-{row['label']}-{start + number + 1}" for number in range(wanted)]
    return None


# --- the on-sale shape ----------------------------------------------------------------------------


def spike_users(fraction: float, baseline: int) -> int:
    """Users wanted `fraction` of the way through the run: a ramp to the baseline, the sale opens
    with ten times as many, who decay geometrically back to the baseline, which then holds."""
    if fraction < RAMP_END:
        return max(1, math.ceil(baseline * fraction / RAMP_END))
    if fraction < SPIKE_END:
        return SPIKE_FACTOR * baseline
    if fraction < DECAY_END:
        progress = (fraction - SPIKE_END) / (DECAY_END - SPIKE_END)
        return max(baseline, round(baseline * SPIKE_FACTOR ** (1 - progress)))
    return baseline


class OnSaleSpike(LoadTestShape):
    """The spike, when ``LOADTEST_SHAPE=spike``; otherwise Locust's usual constant -u/-r run.

    ``--users`` is the baseline (the spike is ten times it) and ``--run-time`` the whole curve
    (default 60 s); the run stops when the curve ends.
    """

    abstract = os.environ.get("LOADTEST_SHAPE", "") != "spike"
    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options if self.runner is not None else None
        baseline = max(1, int(getattr(options, "num_users", None) or 1))
        duration_s = float(getattr(options, "run_time", None) or RUN_S_DEFAULT)
        run_s = self.get_run_time()
        if run_s >= duration_s:
            return None
        # Fast enough to reach any point of the curve within the one-second tick, even while the
        # previous change is still being spawned (the runner's user count lags behind it).
        return spike_users(run_s / duration_s, baseline), float(SPIKE_FACTOR * baseline)


def main() -> None:
    """Create the events once, for runs whose validator tokens come from a file (they must name them)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--host", required=True, help="the router, e.g. http://127.0.0.1:8000")
    parser.add_argument("--out", required=True, help="JSON file for LOADTEST_EVENTS")
    parser.add_argument("--small-capacity", type=int, default=SMALL_CAPACITY_DEFAULT)
    args = parser.parse_args()
    created = create_events(args.host, TokenSource().organizer(), args.small_capacity)
    Path(args.out).write_text(json.dumps(created, indent=2) + "\n")
    print(" ".join(f"--event {event_id}" for event_id in created.values()))


if __name__ == "__main__":
    main()
