"""The waiting room over HTTP (API.md "Waiting room"): a queue-mode event sells through a fair line.

The cluster runs two router workers and `TICKETING_QUEUE_IDLE_S=3` (tests/harness.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.harness import RunningCluster
from tests.support import create_event, event_body, ga, problem, race

pytestmark = pytest.mark.e2e


def queued_event(http: httpx.Client, cluster: RunningCluster, admit_per_second: int,
                 capacity: int = 100) -> str:
    body = event_body(ga("floor", capacity), per_person_limit=10,
                      queue={"enabled": True, "admit_per_second": admit_per_second, "token_seconds": 600})
    return str(create_event(http, cluster, body)["id"])


def join(http: httpx.Client, cluster: RunningCluster, event_id: str, user: str,
         body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = http.post(f"/v1/events/{event_id}/queue", headers=cluster.headers(user), json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def join_waiting_list(http: httpx.Client, cluster: RunningCluster, event_id: str, user: str,
                      quantity: int) -> dict[str, Any]:
    return join(http, cluster, event_id, user, {"waiting_list": {"quantity": quantity}})


def poll(http: httpx.Client, cluster: RunningCluster, event_id: str, user: str) -> dict[str, Any]:
    response = http.get(f"/v1/events/{event_id}/queue", headers=cluster.headers(user))
    assert response.status_code == 200, response.text
    return dict(response.json())


def hold_with(http: httpx.Client, cluster: RunningCluster, event_id: str, user: str,
              token: str | None, quantity: int = 1) -> httpx.Response:
    headers = cluster.headers(user)
    if token is not None:
        headers["X-Queue-Token"] = token
    return http.post("/v1/holds", json={"event_id": event_id, "section": "floor", "quantity": quantity},
                     headers=headers)


def metric_total(http: httpx.Client, name: str) -> float:
    """A counter's value summed over its label sets, as the router's /metrics shows it (every worker)."""
    return sum(float(line.split()[-1]) for line in http.get("/metrics").text.splitlines()
               if line.startswith(name) and not line.startswith("#") and line.split("{")[0].split()[0] == name)


def test_a_queue_mode_event_sells_to_the_line_in_order(http: httpx.Client, cluster: RunningCluster) -> None:
    event_id = queued_event(http, cluster, admit_per_second=5)
    users = [f"wr-{uuid.uuid4().hex[:8]}-{n:02d}" for n in range(20)]
    started = time.monotonic()
    answers = [join(http, cluster, event_id, user) for user in users]
    joining_s = time.monotonic() - started
    # The first second's worth of the rate is admitted at once (plus what the rate refilled while
    # the 20 joins were sent one by one); the rest wait in join order.
    admitted_at_once = [answer for answer in answers if answer["status"] == "admitted"]
    waiting = [answer for answer in answers if answer["status"] == "waiting"]
    assert 5 <= len(admitted_at_once) <= 7 + 5 * joining_s and len(admitted_at_once) + len(waiting) == 20
    assert answers[:len(admitted_at_once)] == admitted_at_once  # admitted ones joined first
    # A later join is never ahead of an earlier one. Two joins may read the same position when the
    # line moved forward between them (one admission every 0.2 s at 5/s).
    positions = [answer["position"] for answer in waiting]
    assert positions == sorted(positions), positions
    assert len(set(positions)) >= len(positions) - 5 * joining_s - 1, (positions, joining_s)
    assert all(answer["eta_seconds"] >= 1 for answer in waiting)
    # Joining again keeps the place (or it moved forward); it never goes to the back.
    again = join(http, cluster, event_id, users[-1])
    assert again["status"] == "admitted" or again["position"] <= positions[-1]

    deadline = time.monotonic() + 8  # 15 waiting at 5/s: ~3 s
    tokens: dict[str, str] = {}
    while len(tokens) < len(users) and time.monotonic() < deadline:
        for user in users:
            if user not in tokens:
                answer = poll(http, cluster, event_id, user)
                if answer["status"] == "admitted":
                    tokens[user] = answer["token"]
                    assert answer["expires_at"].endswith("Z")
        time.sleep(0.2)
    assert len(tokens) == len(users), f"{len(tokens)} of 20 admitted within 8 s at 5/s"
    # Those who waited were given an ETA; their admission measured how far it was off.
    assert metric_total(http, "ticketing_queue_eta_error_seconds_count") >= len(waiting)

    # The token admits its own user on its own event, and nobody else anywhere else.
    first, second = users[0], users[1]
    problem(hold_with(http, cluster, event_id, first, None), 403, "QUEUE_TOKEN_REQUIRED")
    problem(hold_with(http, cluster, event_id, first, tokens[second]), 403, "QUEUE_TOKEN_REQUIRED")
    other_event = queued_event(http, cluster, admit_per_second=5)
    problem(hold_with(http, cluster, other_event, first, tokens[first]), 403, "QUEUE_TOKEN_REQUIRED")
    assert hold_with(http, cluster, event_id, first, tokens[first]).status_code == 201
    assert poll(http, cluster, event_id, first)["token"] == tokens[first]  # the same token on every poll


def test_admission_keeps_the_event_rate_across_router_workers(cluster: RunningCluster, http: httpx.Client) -> None:
    """Polls from many connections reach both router workers; each runs the admitter, and the
    admitted count still grows at the event's rate (a bucket per worker would double it)."""
    rate, users = 10, [f"rate-{uuid.uuid4().hex[:8]}-{n:03d}" for n in range(120)]
    event_id = queued_event(http, cluster, admit_per_second=rate)
    path = f"/v1/events/{event_id}/queue"
    asyncio.run(race(cluster, [(user, "POST", path, None, {}) for user in users], concurrency=32))

    def admitted_now() -> int:
        answers = asyncio.run(race(cluster, [(user, "GET", path, None, {}) for user in users], concurrency=32))
        assert all(answer.status_code == 200 for answer in answers)
        return sum(answer.json()["status"] == "admitted" for answer in answers)

    start, first = time.monotonic(), admitted_now()
    while time.monotonic() - start < 4:
        admitted_now()
    elapsed, last = time.monotonic() - start, admitted_now()
    measured = (last - first) / elapsed
    assert abs(measured - rate) <= 0.15 * rate + 1 / elapsed, f"{measured:.1f} admitted/s at a rate of {rate}/s"


def test_who_stops_polling_loses_the_place_without_stalling_the_line(http: httpx.Client,
                                                                      cluster: RunningCluster) -> None:
    event_id = queued_event(http, cluster, admit_per_second=1)
    tag = uuid.uuid4().hex[:8]
    first, gone, next_one = f"idle-{tag}-a", f"idle-{tag}-b", f"idle-{tag}-c"
    assert join(http, cluster, event_id, first)["status"] == "admitted"  # the bucket's one token
    assert join(http, cluster, event_id, gone)["position"] == 1
    assert join(http, cluster, event_id, next_one)["position"] == 2
    time.sleep(3.6)  # nobody steps: `gone` is idle past TICKETING_QUEUE_IDLE_S=3 when reached
    answer = poll(http, cluster, event_id, next_one)
    assert answer["status"] == "admitted", answer  # `gone` was skipped without using the admission
    assert poll(http, cluster, event_id, gone) == {"status": "expired"}
    rejoined = join(http, cluster, event_id, gone)  # joins again, at the back
    assert rejoined["status"] in ("waiting", "admitted")


def test_an_event_without_queue_mode_has_no_waiting_room(http: httpx.Client, cluster: RunningCluster) -> None:
    event = create_event(http, cluster, event_body(ga("floor", 10)))
    problem(http.post(f"/v1/events/{event['id']}/queue", headers=cluster.headers("buyer-x")), 409,
            "QUEUE_NOT_ENABLED")
    problem(http.get(f"/v1/events/{uuid.uuid4()}/queue", headers=cluster.headers("buyer-x")), 404,
            "EVENT_NOT_FOUND")
    problem(http.post(f"/v1/events/{event['id']}/queue"), 401, "UNAUTHENTICATED")


def test_admission_follows_the_stock_and_sold_out_keeps_the_place(http: httpx.Client,
                                                                  cluster: RunningCluster) -> None:
    """Five tickets, eight buyers: five are admitted, the rest wait; once everything is held those
    still waiting read `sold_out` (nothing to hold now), keeping their place: a released hold
    admits the next in line, and the others read `sold_out` again once it is held."""
    event_id = queued_event(http, cluster, admit_per_second=100, capacity=5)
    tag = uuid.uuid4().hex[:8]
    users = [f"stock-{tag}-{n}" for n in range(8)]
    answers = [join(http, cluster, event_id, user) for user in users]
    assert [answer["status"] for answer in answers] == ["admitted"] * 5 + ["waiting"] * 3, answers
    holds = {}
    for user, answer in zip(users[:5], answers[:5], strict=True):
        response = hold_with(http, cluster, event_id, user, answer["token"])
        assert response.status_code == 201, response.text
        holds[user] = response.json()["id"]
    # Everything is held, nothing sold: nothing to hold now, so the line reads sold_out (API.md
    # waits for "no holds that may come back"; router/waiting_room.py says why we do not).
    assert [poll(http, cluster, event_id, user) for user in users[5:]] == [{"status": "sold_out"}] * 3
    released = http.delete(f"/v1/holds/{holds.pop(users[0])}", headers=cluster.headers(users[0]))
    assert released.status_code == 200, released.text
    time.sleep(0.2)  # the admissions just used count until they settle (read_snapshot_s + 0.1 s)
    sixth = poll(http, cluster, event_id, users[5])
    assert sixth["status"] == "admitted", sixth  # the place was kept: the next in line, not the seventh
    assert poll(http, cluster, event_id, users[6])["status"] == "waiting"  # one ticket is back: not sold out
    response = hold_with(http, cluster, event_id, users[5], sixth["token"])
    assert response.status_code == 201, response.text
    holds[users[5]] = response.json()["id"]
    assert poll(http, cluster, event_id, users[6]) == {"status": "sold_out"}
    for user, hold_id in holds.items():
        paid = http.post(f"/v1/holds/{hold_id}/checkout", json={"payment": {"token": "tok_visa"}},
                         headers={**cluster.headers(user), "Idempotency-Key": f"pay-{hold_id}"})
        assert paid.status_code == 201, paid.text
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        if all(poll(http, cluster, event_id, user)["status"] == "sold_out" for user in users[6:]):
            break
        time.sleep(0.2)
    assert [poll(http, cluster, event_id, user)["status"] for user in users[6:]] == ["sold_out"] * 2
    told = [line for line in http.get("/metrics").text.splitlines()
            if line.startswith("ticketing_queue_sold_out_answers_total ")]
    assert told and float(told[0].split()[1]) >= 2  # SREs see the sell-out reach the line


def sell_out(http: httpx.Client, cluster: RunningCluster, event_id: str, users: list[str]) -> tuple[list[str],
                                                                                                   dict[str, str]]:
    """`users` join at once; those admitted hold one ticket each until nothing is left; every user
    still waiting must then read sold_out within 2 s. Returns (the waiting in line order, holds)."""
    path = f"/v1/events/{event_id}/queue"
    joined = asyncio.run(race(cluster, [(user, "POST", path, None, {}) for user in users], concurrency=50))
    answers = {user: response.json() for user, response in zip(users, joined, strict=True)}
    admitted = {user: answer["token"] for user, answer in answers.items() if answer["status"] == "admitted"}
    waiting = [user for _, user in sorted((answer["position"], user) for user, answer in answers.items()
                                          if answer["status"] == "waiting")]
    held = asyncio.run(race(cluster, [(user, "POST", "/v1/holds", {"event_id": event_id, "section": "floor",
                                                                   "quantity": 1}, {"X-Queue-Token": token})
                                      for user, token in admitted.items()], concurrency=50))
    assert [response.status_code for response in held] == [201] * len(admitted), [r.text for r in held]
    sold_at = time.monotonic()
    polls: list[httpx.Response] = []
    while time.monotonic() - sold_at < 2:
        polls = asyncio.run(race(cluster, [(user, "GET", path, None, {}) for user in waiting], concurrency=50))
        if all(response.json() == {"status": "sold_out"} for response in polls):
            break
    assert [response.json() for response in polls] == [{"status": "sold_out"}] * len(waiting), "not told in 2 s"
    return waiting, {user: response.json()["id"] for user, response in zip(admitted, held, strict=True)}


def test_a_sold_out_pool_tells_the_line_and_returns_go_to_the_waiting_list_in_order(
        http: httpx.Client, cluster: RunningCluster) -> None:
    """Issue 13's acceptance: a 50-ticket pool with 200 waiting. Admission stops at sell-out (50
    admitted, each holds one), every waiting user sees sold_out within 2 s; some join the waiting
    list, and releasing 5 holds admits exactly the first 5 of them, in line order; a waiting-list
    admission for 2 tickets cannot hold 3."""
    event_id = queued_event(http, cluster, admit_per_second=1000, capacity=50)
    tag = uuid.uuid4().hex[:8]
    waiting, holds = sell_out(http, cluster, event_id, [f"sellout-{tag}-{n:03d}" for n in range(200)])
    assert len(holds) == 50 and len(waiting) == 150  # admission stopped at what the pool could serve

    # Six of them join the waiting list for one ticket, in the reverse of their line order, and one
    # behind them for two; the head of the line stays in line with a plain body.
    listed, pair = waiting[10:16], waiting[30]
    for user in reversed(listed):
        assert join_waiting_list(http, cluster, event_id, user, 1)["status"] == "waiting_list"
    assert join_waiting_list(http, cluster, event_id, pair, 2) == {"status": "waiting_list", "position": 7}
    assert join(http, cluster, event_id, waiting[0], {}) == {"status": "sold_out"}
    assert [poll(http, cluster, event_id, user)["position"] for user in listed] == list(range(1, 7))

    def release(count: int) -> None:
        for owner in list(holds)[:count]:
            response = http.delete(f"/v1/holds/{holds.pop(owner)}", headers=cluster.headers(owner))
            assert response.status_code == 200, response.text

    release(5)
    offered = [poll(http, cluster, event_id, user) for user in listed]
    assert [answer["status"] for answer in offered] == ["admitted"] * 5 + ["waiting_list"], offered
    assert poll(http, cluster, event_id, waiting[0])["status"] == "waiting"  # the line's head: after the list
    assert poll(http, cluster, event_id, pair) == {"status": "waiting_list", "position": 2}
    refused = problem(hold_with(http, cluster, event_id, listed[0], offered[0]["token"], quantity=2), 422,
                      "VALIDATION_ERROR")
    assert "is for 1 ticket:" in refused["detail"]
    for user, answer in zip(listed[:5], offered[:5], strict=True):
        response = hold_with(http, cluster, event_id, user, answer["token"])
        assert response.status_code == 201, response.text

    # Three more back: the sixth (one ticket), then the pair (two) fit; the pair holds at most 2.
    time.sleep(0.2)  # the five admissions just used count until they settle (read_snapshot_s + 0.1 s)
    release(3)
    assert poll(http, cluster, event_id, listed[5])["status"] == "admitted"
    pair_answer = poll(http, cluster, event_id, pair)
    assert pair_answer["status"] == "admitted", pair_answer
    assert poll(http, cluster, event_id, waiting[0])["status"] == "waiting"  # three back, three admitted
    refused = problem(hold_with(http, cluster, event_id, pair, pair_answer["token"], quantity=3), 422,
                      "VALIDATION_ERROR")
    assert "is for 2 tickets:" in refused["detail"]
    assert hold_with(http, cluster, event_id, pair, pair_answer["token"], quantity=2).status_code == 201
    assert metric_total(http, "ticketing_queue_waitlist_admitted_total") >= 7


def test_only_a_join_that_asks_goes_on_the_waiting_list(http: httpx.Client, cluster: RunningCluster) -> None:
    """The waiting-list body counts only on a sold-out event, and only in a join: before the sell-out
    it is an ordinary join; a plain body or a poll leaves a sold-out user in the line (the negative
    control of the test above); quantities beyond the event's per-person limit are refused."""
    import redis

    from router.waiting_room import event_keys, user_digest

    event_id = queued_event(http, cluster, admit_per_second=100, capacity=1)
    tag = uuid.uuid4().hex[:8]
    buyer, late = f"ask-{tag}-a", f"ask-{tag}-b"
    token = join(http, cluster, event_id, buyer)["token"]
    assert join_waiting_list(http, cluster, event_id, late, 1) == {"status": "waiting", "position": 1,
                                                                   "eta_seconds": 1}  # one ticket left
    hold = hold_with(http, cluster, event_id, buyer, token)
    assert hold.status_code == 201, hold.text
    assert join(http, cluster, event_id, late, {}) == {"status": "sold_out"}
    assert join(http, cluster, event_id, late) == {"status": "sold_out"}
    assert poll(http, cluster, event_id, late) == {"status": "sold_out"}
    client = redis.Redis.from_url(str(cluster.state()["redis_url"]))
    waitlist_key = event_keys(uuid.UUID(event_id))[7]
    assert client.zcard(waitlist_key) == 0
    path, headers = f"/v1/events/{event_id}/queue", cluster.headers(late)
    for body in ({"waiting_list": {"quantity": 11}}, {"waiting_list": {"quantity": 0}},
                 {"waiting_list": {"quantity": "2"}}, {"waiting_list": {}}, {"waiting_list": {"quantity": 1}, "x": 1},
                 [1]):
        problem(http.post(path, json=body, headers=headers), 422, "VALIDATION_ERROR")
    assert join_waiting_list(http, cluster, event_id, late, 10) == {"status": "waiting_list", "position": 1}
    assert client.zrange(waitlist_key, 0, -1) == [user_digest(late).encode()]
    released = http.delete(f"/v1/holds/{hold.json()['id']}", headers=cluster.headers(buyer))
    assert released.status_code == 200, released.text
    time.sleep(0.2)  # the buyer's admission, used for the hold, counts until it settles
    offered = poll(http, cluster, event_id, late)
    assert offered["status"] == "waiting_list"  # wants 10, one is back: passed over, not admitted
    offered = join_waiting_list(http, cluster, event_id, late, 1)  # asks for one: it fits, at once
    assert offered["status"] == "admitted", offered
    problem(hold_with(http, cluster, event_id, late, offered["token"], quantity=2), 422, "VALIDATION_ERROR")
    assert hold_with(http, cluster, event_id, late, offered["token"]).status_code == 201


def test_who_joins_before_the_opening_is_shuffled_ahead_of_later_joins(http: httpx.Client,
                                                                        cluster: RunningCluster) -> None:
    import redis

    from router.waiting_room import opening_order, user_digest

    opens = datetime.now(UTC) + timedelta(seconds=3)
    body = event_body(ga("floor", 100), per_person_limit=10,
                      queue={"enabled": True, "admit_per_second": 1, "token_seconds": 600},
                      sale_windows=[{"name": "public", "starts_at": opens.isoformat().replace("+00:00", "Z")}])
    event_id = str(create_event(http, cluster, body)["id"])
    tag = uuid.uuid4().hex[:8]
    early = [f"early-{tag}-{n:02d}" for n in range(30)]
    for user in early:
        assert join(http, cluster, event_id, user) == {"status": "waiting", "position": None, "eta_seconds": None}
    assert join(http, cluster, event_id, early[0])["position"] is None  # joining again changes nothing
    time.sleep(max(0.0, (opens - datetime.now(UTC)).total_seconds()) + 0.3)

    answers = {user: poll(http, cluster, event_id, user) for user in early}
    late = join(http, cluster, event_id, f"late-{tag}")
    admitted = {user for user, answer in answers.items() if answer["status"] == "admitted"}
    waiting = sorted((answer["position"], user) for user, answer in answers.items() if answer["status"] == "waiting")
    assert len(admitted) + len(waiting) == len(early) and 1 <= len(admitted) <= 3
    assert late["status"] == "waiting" and late["position"] > waiting[-1][0]  # later joins queue behind

    state = cluster.state()
    seed = redis.Redis.from_url(str(state["redis_url"])).hget(f"ticketing:queue:{{{event_id}}}:meta", "shuffle_seed")
    assert seed is not None
    by_digest = {user_digest(user): user for user in early}
    expected = [by_digest[digest] for digest in opening_order(list(by_digest), int(seed))]
    assert set(expected[:len(admitted)]) == admitted
    assert [user for _, user in waiting] == expected[len(admitted):]
    assert expected != early  # a shuffle, not the join order (1 chance in 30! otherwise)


def test_a_thousand_joins_at_once_get_each_position_exactly_once(http: httpx.Client,
                                                                 cluster: RunningCluster) -> None:
    event_id = queued_event(http, cluster, admit_per_second=1)
    tag = uuid.uuid4().hex[:8]
    users = [f"burst-{tag}-{n:04d}" for n in range(1000)]
    responses = asyncio.run(race(cluster, [(user, "POST", f"/v1/events/{event_id}/queue", None, {})
                                           for user in users], concurrency=200))
    failed = [(response.status_code, response.text[:200]) for response in responses if response.status_code != 200]
    assert not failed, failed[:3]
    answers = [response.json() for response in responses]
    admitted = [answer for answer in answers if answer["status"] == "admitted"]
    assert 1 <= len(admitted) <= 5 and all(answer["status"] in ("admitted", "waiting") for answer in answers)
    # In Redis: tickets 1..1000 each given once, and each user is in exactly one place: in the line,
    # admitted, or dropped for not polling (these users never poll; TICKETING_QUEUE_IDLE_S=3).
    import redis

    from router.waiting_room import user_digest

    client = redis.Redis.from_url(str(cluster.state()["redis_url"]))
    tag = f"ticketing:queue:{{{event_id}}}"
    line = dict(client.zrange(f"{tag}:line", 0, -1, withscores=True))
    in_line = {member.decode() for member in line}
    admitted_now = {member.decode() for member in client.zrange(f"{tag}:admitted", 0, -1)}
    dropped = {member.decode() for member in client.zrange(f"{tag}:expired", 0, -1)}
    assert not in_line & admitted_now and not in_line & dropped and not admitted_now & dropped
    assert in_line | admitted_now | dropped == {user_digest(user) for user in users}
    assert int(client.hget(f"{tag}:meta", "seq") or 0) == 1000
    assert len(set(line.values())) == len(line)  # no two waiting users share a ticket


def test_queue_mode_switches_without_stranding_anyone(http: httpx.Client, cluster: RunningCluster) -> None:
    """Turning queue mode off lets buyers hold without a token; turning it on again requires one;
    holds made meanwhile stay valid either way."""
    event_id = queued_event(http, cluster, admit_per_second=100)
    tag = uuid.uuid4().hex[:8]
    first, second, third = (f"switch-{tag}-{n}" for n in range(3))
    token = join(http, cluster, event_id, first)["token"]
    held_first = hold_with(http, cluster, event_id, first, token)
    assert held_first.status_code == 201, held_first.text

    def patch(enabled: bool) -> None:
        response = http.patch(f"/v1/events/{event_id}", headers=cluster.headers("organizer-1", "organizer"),
                              json={"queue": {"enabled": enabled, "admit_per_second": 100, "token_seconds": 600}})
        assert response.status_code == 200, response.text
        time.sleep(1.2)  # past the workers' queue-settings cache (queue_settings_cache_s)

    patch(False)
    held_second = hold_with(http, cluster, event_id, second, None)
    assert held_second.status_code == 201, held_second.text
    problem(http.post(f"/v1/events/{event_id}/queue", headers=cluster.headers(third)), 409, "QUEUE_NOT_ENABLED")

    patch(True)
    problem(hold_with(http, cluster, event_id, third, None), 403, "QUEUE_TOKEN_REQUIRED")
    admitted = join(http, cluster, event_id, third)
    assert admitted["status"] == "admitted"
    assert hold_with(http, cluster, event_id, third, admitted["token"]).status_code == 201
    for user, response in ((first, held_first), (second, held_second)):
        hold = http.get(f"/v1/holds/{response.json()['id']}", headers=cluster.headers(user))
        assert hold.status_code == 200 and hold.json()["status"] == "held", hold.text


def test_redis_not_answering_keeps_ordinary_sales_and_admits_nobody(http: httpx.Client,
                                                                    cluster: RunningCluster) -> None:
    """Redis paused (`CLIENT PAUSE`: every command waits, as with a hung server): an event without
    queue mode keeps selling (rate limits fail open, counted); a queue-mode event's waiting room
    answers 503 with Retry-After and a hold without a token is still refused — never admit
    everyone. Negative control: after the pause the same join is admitted."""
    import redis

    plain = str(create_event(http, cluster, event_body(ga("floor", 10)))["id"])
    queued = queued_event(http, cluster, admit_per_second=100, capacity=10)
    client = redis.Redis.from_url(str(cluster.state()["redis_url"]))
    failed_open = metric_total(http, "ticketing_rate_limit_fail_open_total")
    client.execute_command("CLIENT", "PAUSE", 6000, "ALL")
    try:
        sold = http.post("/v1/holds", json={"event_id": plain, "section": "floor", "quantity": 1},
                         headers=cluster.headers("redis-down-buyer"))
        assert sold.status_code == 201, sold.text
        refused = problem(http.post(f"/v1/events/{queued}/queue", headers=cluster.headers("redis-down-buyer")),
                          503, "SHARD_UNAVAILABLE")
        assert refused["status"] == 503
        no_token = hold_with(http, cluster, queued, "redis-down-buyer", None)
        problem(no_token, 403, "QUEUE_TOKEN_REQUIRED")
    finally:
        client.execute_command("CLIENT", "UNPAUSE")
    deadline = time.monotonic() + 3
    while metric_total(http, "ticketing_rate_limit_fail_open_total") <= failed_open and time.monotonic() < deadline:
        time.sleep(0.2)
    assert metric_total(http, "ticketing_rate_limit_fail_open_total") > failed_open  # SREs see it
    assert join(http, cluster, queued, "redis-down-buyer")["status"] == "admitted"
