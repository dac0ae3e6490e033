"""lua/waiting_room.lua and lua/waiting_room_spend.lua on their own, against the cluster's real Redis.

No HTTP and no router: each test calls the scripts as the router does (the same keys, the same
ARGV built by `StepArguments`), with the clock passed in, so a second of admission is one number
and not a sleep. What the router adds on top (the stock, the tokens, the answers' JSON) is covered
over HTTP by tests/e2e/test_waiting_room.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from router.waiting_room import (
    SCRIPT,
    SPEND_SCRIPT,
    StepArguments,
    StepReply,
    event_keys,
    opening_order,
    user_digest,
)
from tests.harness import RunningCluster

pytestmark = pytest.mark.integration

T0_MS = 1_800_000_000_000  # an arbitrary clock reading; every step passes its own
KEY_TTL_MS = 3_600_000
DEFAULTS = StepArguments(now_ms=T0_MS, user="", join=True, rate=10, burst=10, idle_ms=30_000, admitted_ms=600_000,
                         scan_max=1000, waiting_max=1_000_000, key_ttl_ms=KEY_TTL_MS, cap=-1, settle_ms=0, opens_ms=0,
                         seed=12345)


class Room:
    """One event's waiting room in Redis, stepped with explicit arguments (DEFAULTS otherwise)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.keys = event_keys(uuid.uuid4())
        self.script = client.register_script(SCRIPT)
        self.spend_script = client.register_script(SPEND_SCRIPT)

    async def step(self, user: str, at_ms: int = 0, **arguments: Any) -> StepReply:
        argv = dataclasses.replace(DEFAULTS, now_ms=T0_MS + at_ms, user=user, **arguments).argv()
        return StepReply.of(await self.script(self.keys, argv))

    async def poll(self, user: str, at_ms: int = 0, **arguments: Any) -> StepReply:
        return await self.step(user, at_ms, join=False, **arguments)

    async def spend(self, user: str, at_ms: int = 0) -> int:
        return int(await self.spend_script([self.keys[2], self.keys[5], self.keys[8]], [user, T0_MS + at_ms]))

    def key(self, name: str) -> str:
        return next(key for key in self.keys if key.endswith(f":{name}"))

    async def members(self, name: str) -> list[str]:
        return [member.decode() for member in await self.client.zrange(self.key(name), 0, -1)]


def in_room(cluster: RunningCluster, scenario: Callable[[Room], Awaitable[None]], connections_max: int = 10) -> None:
    """Run `scenario` on a fresh event, over a pool of at most `connections_max` connections (calls
    beyond wait for one, as the router's do)."""
    async def call() -> None:
        pool = aioredis.BlockingConnectionPool.from_url(str(cluster.state()["redis_url"]),
                                                        max_connections=connections_max)
        client = aioredis.Redis(connection_pool=pool)
        try:
            await scenario(Room(client))
        finally:
            await client.aclose()

    asyncio.run(call())


def users(count: int, tag: str = "u") -> list[str]:
    return [user_digest(f"{tag}-{uuid.uuid4().hex[:6]}-{n:04d}") for n in range(count)]


# The line ----------------------------------------------------------------------------------------


def test_joins_take_fifo_tickets_and_joining_again_keeps_the_place(cluster: RunningCluster) -> None:
    async def scenario(room: Room) -> None:
        people = users(6)
        replies = [await room.step(user, rate=1, burst=1) for user in people]
        assert [reply.status for reply in replies] == ["admitted"] + ["waiting"] * 5  # the bucket's one token
        assert [reply.value for reply in replies[1:]] == [1, 2, 3, 4, 5]
        tickets = await room.client.zrange(room.key("line"), 0, -1, withscores=True)
        assert [score for _, score in tickets] == [2, 3, 4, 5, 6]  # INCR order: the first went to the admitted
        again = await room.step(people[3], rate=1, burst=1)
        assert (again.status, again.value) == ("waiting", 3)  # the same place, not the back
        assert (await room.poll(people[5], rate=1, burst=1)).value == 5
        assert int(await room.client.hget(room.key("meta"), "seq")) == 6  # no ticket for the rejoin

    in_room(cluster, scenario)


def test_admission_follows_the_token_bucket(cluster: RunningCluster) -> None:
    """rate 5/s, burst 5: five at once, then one per 200 ms of clock, and never more than the burst
    after a quiet spell, whoever steps."""
    async def scenario(room: Room) -> None:
        people = users(30)
        first = [await room.step(user, rate=5, burst=5) for user in people]
        assert sum(reply.status == "admitted" for reply in first) == 5
        assert (await room.poll(people[-1], 1000, rate=5, burst=5)).admitted_now == 5
        assert (await room.poll(people[-1], 1200, rate=5, burst=5)).admitted_now == 1
        assert (await room.poll(people[-1], 1300, rate=5, burst=5)).admitted_now == 0  # half a token
        assert (await room.poll(people[-1], 1400, rate=5, burst=5)).admitted_now == 1
        quiet = await room.poll(people[-1], 20_000, rate=5, burst=5)  # 18.6 s idle: 93 tokens, capped at 5
        assert quiet.admitted_now == 5
        assert len(await room.members("admitted")) == 17 and quiet.line_length == 13

    in_room(cluster, scenario)


def test_who_stops_polling_is_dropped_when_reached_without_using_a_token(cluster: RunningCluster) -> None:
    async def scenario(room: Room) -> None:
        first, gone, stays = users(3)
        assert (await room.step(first, rate=1, burst=1, idle_ms=1000)).status == "admitted"
        await room.step(gone, rate=1, burst=1, idle_ms=1000)
        await room.step(stays, rate=1, burst=1, idle_ms=1000)
        reply = await room.poll(stays, 1500, rate=1, burst=1, idle_ms=1000)
        assert (reply.status, reply.expired_now, reply.admitted_now) == ("admitted", 1, 1)
        assert (await room.poll(gone, 1500, rate=1, burst=1, idle_ms=1000)).status == "expired"
        # Negative control: the same arrangement, but the head was seen 700 ms ago (< idle_ms) when
        # the next token comes: it keeps the place and takes the admission.
        kept, behind = users(2)
        await room.step(kept, 1800, rate=1, burst=1, idle_ms=1000)
        await room.step(behind, 1800, rate=1, burst=1, idle_ms=1000)
        reply = await room.poll(behind, 2500, rate=1, burst=1, idle_ms=1000)
        assert (reply.status, reply.expired_now, reply.admitted_now) == ("waiting", 0, 1)
        assert (await room.poll(kept, 2500, rate=1, burst=1, idle_ms=1000)).status == "admitted"

    in_room(cluster, scenario)


def test_the_cap_bounds_outstanding_admissions_and_a_used_one_settles(cluster: RunningCluster) -> None:
    async def scenario(room: Room) -> None:
        people = users(4)
        replies = [await room.step(user, rate=100, burst=100, cap=2, settle_ms=500) for user in people]
        assert [reply.status for reply in replies] == ["admitted", "admitted", "waiting", "waiting"]
        assert await room.spend(people[0], 1000) == 1
        assert await room.spend(people[0], 1000) == 0  # already marked
        assert await room.spend(users(1)[0], 1000) == 0  # never admitted
        assert (await room.poll(people[2], 1200, rate=100, burst=100, cap=2, settle_ms=500)).status == "waiting"
        assert (await room.poll(people[2], 1600, rate=100, burst=100, cap=2, settle_ms=500)).status == "admitted"
        assert (await room.poll(people[3], 1600, rate=100, burst=100, cap=2, settle_ms=500)).status == "waiting"
        # Nothing available: the line reads sold_out with its place, and nobody is admitted.
        sold_out = await room.poll(people[3], 1700, rate=100, burst=100, cap=0, sold_out=True)
        assert (sold_out.status, sold_out.value, sold_out.admitted_now) == ("sold_out", 1, 0)

    in_room(cluster, scenario)


# The waiting list --------------------------------------------------------------------------------


def test_the_waiting_list_keeps_arrival_order_and_admits_what_fits(cluster: RunningCluster) -> None:
    """Sold out (cap 0): three users in line move to the waiting list out of order, with quantities
    1, 2 and 1; a newcomer joins it too. Tickets coming back go to the list first, in line order,
    each entry whose quantity fits (a request for two is passed over when one ticket is back),
    then to the line."""
    async def scenario(room: Room) -> None:
        people = users(6)
        sold = {"rate": 100, "burst": 100, "cap": 0, "sold_out": True}
        for user in people:
            assert (await room.step(user, **sold)).status == "sold_out"
        newcomer = users(1, "new")[0]
        for user, quantity in ((people[3], 1), (people[1], 2), (people[4], 1), (newcomer, 1)):
            moved = await room.step(user, 10, waitlist_quantity=quantity, **sold)
            assert moved.status == "waiting_list"
        positions = {user: (await room.poll(user, 20, **sold)).value for user in (people[1], people[3], people[4],
                                                                                   newcomer)}
        assert positions == {people[1]: 1, people[3]: 2, people[4]: 3, newcomer: 4}  # by line ticket
        assert await room.members("line") == [people[0], people[2], people[5]]
        assert (await room.poll(people[0], 20, **sold)).value == 1  # the line closed up behind them

        # Waiting-list users are never dropped for not polling (the line's idle_ms is 30 s).
        one_back = await room.poll(people[0], 40_000, rate=100, burst=100, cap=1)
        assert (one_back.admitted_now, one_back.waitlist_admitted_now) == (1, 1)
        assert await room.members("admitted") == [people[3]]  # people[1] wants 2: passed over
        assert (await room.poll(people[1], 40_000, rate=100, burst=100, cap=1)).status == "waiting_list"
        two_more = await room.poll(people[0], 40_100, rate=100, burst=100, cap=3)
        assert two_more.waitlist_admitted_now == 1
        admitted = await room.poll(people[1], 40_100, rate=100, burst=100, cap=3)
        assert (admitted.status, admitted.quantity) == ("admitted", 2)
        assert await room.client.zcard(room.key("admitted")) == 3  # tickets, not people
        assert (await room.poll(people[3], 40_100, cap=3)).quantity == 1

        # Joining again keeps the place and takes the new quantity.
        again = await room.step(people[4], 40_200, waitlist_quantity=3, **sold)
        assert (again.status, again.value) == ("waiting_list", 1)
        assert int(await room.client.hget(room.key("wants"), people[4])) == 3
        # Plenty back: the list first (people[4] for 3, the newcomer), then the line from its head:
        # people[0] polls and is admitted; people[2] and people[5] were last seen at 0 ms (idle_ms
        # 30 s) and are dropped.
        plenty = await room.poll(people[0], 40_300, rate=100, burst=100, cap=100)
        assert (plenty.waitlist_admitted_now, plenty.admitted_now, plenty.expired_now) == (2, 3, 2)
        assert plenty.waitlist_length == 0 and plenty.status == "admitted" and plenty.quantity == 0
        assert await room.client.zcard(room.key("admitted")) == 3 + 3 + 1 + 1

    in_room(cluster, scenario)


def test_only_a_join_that_asks_on_a_sold_out_event_joins_the_waiting_list(cluster: RunningCluster) -> None:
    """Negative control: only a join that asks for it (waitlist_quantity > 0) while the event is sold
    out moves the user; one already on the list may change the quantity at any time."""
    async def scenario(room: Room) -> None:
        user = users(1)[0]
        assert (await room.step(user, cap=0, waitlist_quantity=1)).status == "waiting"  # not sold out
        assert (await room.step(user, cap=0, sold_out=True)).status == "sold_out"
        assert (await room.step(user, cap=0, sold_out=True)).status == "sold_out"
        assert await room.members("waitlist") == [] and await room.members("line") == [user]
        assert (await room.step(user, cap=0, sold_out=True, waitlist_quantity=1)).status == "waiting_list"
        assert await room.members("waitlist") == [user] and await room.members("line") == []
        # A plain join of a waiting-list user keeps the list's place (it does not go back to the line).
        assert (await room.step(user, cap=0)).status == "waiting_list"
        assert (await room.step(user, cap=0, waitlist_quantity=4)).status == "waiting_list"
        assert int(await room.client.hget(room.key("wants"), user)) == 4

    in_room(cluster, scenario)


def test_the_waiting_list_is_bounded_for_newcomers(cluster: RunningCluster) -> None:
    async def scenario(room: Room) -> None:
        first, second, in_line = users(3)
        bounded = {"cap": 0, "sold_out": True, "waiting_max": 1}
        assert (await room.step(in_line, **bounded)).status == "sold_out"
        assert (await room.step(first, waitlist_quantity=1, **bounded)).status == "waiting_list"
        assert (await room.step(second, waitlist_quantity=1, **bounded)).status == "full"
        # One already in line moves anyway: the line shrinks by the one the list grows by.
        assert (await room.step(in_line, waitlist_quantity=1, **bounded)).status == "waiting_list"

    in_room(cluster, scenario)


def test_a_waiting_list_admission_is_used_whole_and_ages_out(cluster: RunningCluster) -> None:
    async def scenario(room: Room) -> None:
        user, other = users(2)
        await room.step(user, cap=0, sold_out=True, waitlist_quantity=3)
        admitted = await room.poll(user, 100, cap=3, settle_ms=200, admitted_ms=10_000)
        assert (admitted.status, admitted.quantity) == ("admitted", 3)
        assert sorted(await room.members("admitted")) == sorted([user, f"{user}:2", f"{user}:3"])
        assert await room.spend(user, 200) == 1
        assert sorted(await room.members("spent")) == sorted(await room.members("admitted"))
        admitted_ttl, spent_ttl = [await room.client.pttl(room.key(name)) for name in ("admitted", "spent")]
        assert 0 < admitted_ttl <= KEY_TTL_MS and abs(spent_ttl - admitted_ttl) < 1000  # spent expires with it
        # Used 100 ms ago (settle_ms 200): still three tickets outstanding; then none.
        assert (await room.step(other, 300, cap=3, settle_ms=200, admitted_ms=10_000)).status == "waiting"
        assert (await room.poll(other, 500, cap=1, settle_ms=200, admitted_ms=10_000)).status == "admitted"
        # token_seconds later the admission is forgotten, with its quantity: the user reads expired.
        aged = await room.poll(user, 10_200, cap=0, admitted_ms=10_000)
        assert aged.status == "expired"
        assert await room.client.hget(room.key("wants"), user) is None
        assert user not in await room.members("admitted") and f"{user}:2" not in await room.members("spent")

    in_room(cluster, scenario)


# ETA, keys, the opening, the burst ----------------------------------------------------------------


def test_the_first_eta_comes_back_once_with_the_admission(cluster: RunningCluster) -> None:
    async def scenario(room: Room) -> None:
        first, second, third = users(3)
        slow = {"rate": 1, "burst": 1, "cap": 2}  # room for first and second only
        at_once = await room.step(first, **slow)
        assert (at_once.status, at_once.placed_ms) == ("admitted", 0)  # never saw an ETA
        assert (await room.step(second, 100, **slow)).value == 1
        assert (await room.step(third, 100, sold_out=True, **slow)).status == "sold_out"
        await room.poll(second, 900, **slow)  # a later answer does not replace the first ETA
        admitted = await room.poll(second, 2500, **slow)
        assert admitted.status == "admitted"
        assert (admitted.value, admitted.placed_ms, admitted.eta_s) == (T0_MS + 2500, T0_MS + 100, 1)
        assert (await room.poll(second, 2600, **slow)).placed_ms == 0  # returned once
        # A sold_out answer gives no ETA, so none is recorded for it; the next waiting answer does.
        assert await room.client.hget(room.key("eta"), third) is None
        assert (await room.poll(third, 2600, **slow)).status == "waiting"
        assert await room.client.hget(room.key("eta"), third) == f"{T0_MS + 2600}:1".encode()

    in_room(cluster, scenario)


def test_every_key_expires_after_the_last_step(cluster: RunningCluster) -> None:
    async def scenario(room: Room) -> None:
        early, dropped, waiting, listed, late = users(5)
        slow = {"rate": 1, "burst": 1}
        await room.step(early, opens_ms=T0_MS + 1000)  # `early`
        await room.poll(early, 1000, opens_ms=T0_MS + 1000, **slow)  # the opening: line, admitted
        assert await room.spend(early, 1000) == 1  # spent
        await room.step(dropped, 1000, **slow)  # in line with an ETA
        await room.step(waiting, 1000, **slow)
        await room.step(listed, 1000, cap=0, sold_out=True, waitlist_quantity=2, **slow)  # waitlist, wants
        await room.poll(waiting, 5000, cap=1, idle_ms=2000, **slow)  # drops `dropped` (expired), admits it
        assert (await room.step(late, 5000, cap=1, **slow)).status == "waiting"  # line, seen, eta
        for key in room.keys:
            if key.endswith(":early"):
                assert not await room.client.exists(key)  # emptied at the opening
                continue
            ttl = await room.client.pttl(key)
            assert 0 < ttl <= KEY_TTL_MS, (key, ttl)

    in_room(cluster, scenario)


def test_the_opening_shuffle_is_opening_order_of_its_seed(cluster: RunningCluster) -> None:
    async def scenario(room: Room) -> None:
        early = users(25, "early")
        opens = {"opens_ms": T0_MS + 5000, "rate": 1, "burst": 1}
        for user in early:
            reply = await room.step(user, **opens)
            assert (reply.status, reply.value) == ("early", 0)
        assert (await room.poll(early[0], 4999, **opens)).status == "early"
        opened = await room.poll(early[0], 5000, seed=987_654, **opens)
        assert opened.shuffled_now == 25
        late = users(1, "late")[0]
        assert (await room.step(late, 5000, seed=1, **opens)).value == 25
        expected = opening_order(early, 987_654)
        assert await room.members("admitted") == expected[:1]  # the bucket's one token
        assert await room.members("line") == [*expected[1:], late]  # later joins queue behind, FIFO
        assert expected != sorted(early)  # a shuffle (1 chance in 25! otherwise)
        assert int(await room.client.hget(room.key("meta"), "shuffle_seed")) == 987_654

    in_room(cluster, scenario)


def test_a_thousand_concurrent_joins_get_positions_1_to_1000_once_each(cluster: RunningCluster) -> None:
    """1,000 joins in flight at once over 100 connections: each join is one atomic step, so each
    gets the next ticket and the position it answers is its rank at that moment — 1..1000, each
    exactly once, and the line agrees."""
    async def scenario(room: Room) -> None:
        people = users(1000, "burst")
        replies = await asyncio.gather(*(room.step(user, cap=0) for user in people))
        assert sorted(reply.value for reply in replies) == list(range(1, 1001))
        assert all(reply.status == "waiting" for reply in replies)
        line = await room.client.zrange(room.key("line"), 0, -1, withscores=True)
        assert len(line) == 1000 and sorted(score for _, score in line) == list(range(1, 1001))
        by_user = {member.decode(): rank + 1 for rank, (member, _) in enumerate(line)}
        assert {user: reply.value for user, reply in zip(people, replies, strict=True)} == by_user

    in_room(cluster, scenario, connections_max=100)
