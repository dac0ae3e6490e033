"""lua/token_bucket.lua and the batching RateLimiter, against the cluster's real Redis.

The script is tested on its own with the clock passed in; the limiter is tested for what batching
must not change (each request charged, the same answers and Retry-After as one call each), for
what it must achieve (one script call for every check waiting in a tick) and for failing open.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from cluster.runstate import free_port
from cluster.settings import Settings
from router.problems import ApiError
from router.ratelimit import FAILED_OPEN, KEY_PREFIX, SCRIPT, RateLimiter
from tests.harness import RunningCluster

pytestmark = pytest.mark.integration


class Runtime:
    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client


def with_redis(url: str, scenario: Callable[[aioredis.Redis], Awaitable[Any]], **options: Any) -> Any:
    async def call() -> Any:
        client = aioredis.from_url(url, **options)
        try:
            return await scenario(client)
        finally:
            await client.aclose()

    return asyncio.run(call())


def redis_url(cluster: RunningCluster) -> str:
    return str(cluster.state()["redis_url"])


def run(cluster: RunningCluster, keys: list[str], now_ms: int, *limits: float) -> list[int]:
    """One request over `keys` (one bucket each, `limits` = rate, burst per bucket): [admitted, retry_after_ms]."""
    async def call(client: aioredis.Redis) -> list[int]:
        [retry_after_ms] = await client.eval(SCRIPT, len(keys), *keys, now_ms, len(keys), *limits)
        return [int(retry_after_ms == 0), int(retry_after_ms)]

    return list(with_redis(redis_url(cluster), call))


async def outcome(limiter: RateLimiter, user: str, address: str) -> int:
    """0 when admitted, else the Retry-After the 429 carries (seconds)."""
    try:
        await limiter.check(user, address)
    except ApiError as refused:
        assert refused.status == 429 and refused.code == "RATE_LIMITED"
        return int(refused.headers["Retry-After"])
    return 0


def count_commands(client: aioredis.Redis) -> list[str]:
    """Record the name of every command `client` sends from now on (the limiter's only way to Redis)."""
    sent: list[str] = []
    execute = client.execute_command

    async def counting(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]).upper())
        return await execute(*args, **options)

    client.execute_command = counting  # type: ignore[method-assign]
    return sent


def failed_open() -> dict[str, float]:
    """`ticketing_rate_limit_fail_open_total` by reason, as this process counted it so far."""
    return {sample.labels["reason"]: sample.value for metric in FAILED_OPEN.collect() for sample in metric.samples
            if sample.name.endswith("_total")}


def counted_since(before: dict[str, float]) -> dict[str, float]:
    return {reason: count - before.get(reason, 0) for reason, count in failed_open().items()
            if count != before.get(reason, 0)}


# The script on its own ------------------------------------------------------------------------------


def test_burst_then_refill(cluster: RunningCluster) -> None:
    key = f"test:bucket:{uuid.uuid4()}"
    admitted = [run(cluster, [key], 1_000_000, 2, 5)[0] for _ in range(6)]
    assert admitted == [1, 1, 1, 1, 1, 0]
    assert run(cluster, [key], 1_000_000, 2, 5) == [0, 500]  # one token at 2/s: 500 ms away
    assert run(cluster, [key], 1_000_500, 2, 5)[0] == 1  # refilled by the clock, not by waiting
    assert run(cluster, [key], 1_000_500, 2, 5)[0] == 0


def test_all_or_nothing_across_buckets(cluster: RunningCluster) -> None:
    roomy, tight = f"test:bucket:{uuid.uuid4()}", f"test:bucket:{uuid.uuid4()}"
    assert run(cluster, [roomy, tight], 0, 100, 100, 1, 1)[0] == 1
    refused = run(cluster, [roomy, tight], 0, 100, 100, 1, 1)
    assert refused == [0, 1000]
    # The refused request took nothing from the bucket that had room: its other 99 tokens fit.
    assert [run(cluster, [roomy], 0, 100, 100)[0] for _ in range(100)].count(1) == 99


def test_a_batch_answers_and_stores_exactly_what_one_call_each_would(cluster: RunningCluster) -> None:
    """Batching is no approximation: the same requests sent as one batch and as one call each (at
    the same clock readings, on twin keys) get the same answers and leave byte-identical buckets,
    with repeated buyers and addresses inside a batch, refused requests and fractional refills."""
    limits = (7.0, 3, 13.0, 5)  # rate, burst of the user bucket; of the address bucket
    draw = random.Random(12)
    runs = {name: f"test:twin:{uuid.uuid4()}:{name}" for name in ("batch", "single")}

    def keys(prefix: str, request: tuple[int, int]) -> list[str]:
        return [f"{prefix}:user:{request[0]}", f"{prefix}:addr:{request[1]}"]

    async def scenario(client: aioredis.Redis) -> None:
        script = client.register_script(SCRIPT)
        now_ms = 5_000_000
        answers: list[int] = []
        for _ in range(8):
            now_ms += draw.choice((0, 37, 90, 400, 1500))
            requests = [(draw.randrange(4), draw.randrange(3)) for _ in range(draw.randrange(1, 40))]
            batched = await script([key for request in requests for key in keys(runs["batch"], request)],
                                   [now_ms, 2, *limits])
            single = [(await script(keys(runs["single"], request), [now_ms, 2, *limits]))[0] for request in requests]
            assert [int(answer) for answer in batched] == [int(answer) for answer in single]
            answers += [int(answer) for answer in single]
            for user in range(4):
                for scope, identity in (("user", user), ("addr", user % 3)):
                    batch_state = await client.hgetall(f"{runs['batch']}:{scope}:{identity}")
                    single_state = await client.hgetall(f"{runs['single']}:{scope}:{identity}")
                    assert batch_state == single_state
                    ttl_ms = [await client.pttl(f"{runs[name]}:{scope}:{identity}") for name in runs]
                    assert abs(ttl_ms[0] - ttl_ms[1]) < 500  # the same TTL, read moments apart
        assert answers.count(0) > 10 and len(set(answers)) > 3  # admitted, and refused with several waits

    with_redis(redis_url(cluster), scenario)


def test_keys_expire_and_stay_bounded(cluster: RunningCluster) -> None:
    """Client-chosen ids (any length, any code point) become fixed-size keys that expire."""
    async def scenario(client: aioredis.Redis) -> None:
        limiter = RateLimiter(Runtime(client), Settings())
        user = "\ud800" + "x" * 10_000 + str(uuid.uuid4())  # a lone surrogate is valid JSON in a `sub`
        await limiter.check(user, "203.0.113.7")
        from router.ratelimit import bucket_key

        for key in (bucket_key("user", user), bucket_key("addr", "203.0.113.7")):
            assert key.startswith(KEY_PREFIX) and len(key) < 64
            assert 0 < await client.pttl(key) <= 3000  # burst 20 at 10/s: full again in 2 s, + 1 s

    with_redis(redis_url(cluster), scenario)


# The batching limiter ------------------------------------------------------------------------------


def test_concurrent_checks_cost_one_script_call_and_admit_exactly_the_burst(cluster: RunningCluster) -> None:
    """A full batch of checks (the default bound, 128) made in one tick by one flooding buyer (from
    many addresses) and a patient one is charged with ONE Redis command; the flooder gets exactly
    the burst, the other is untouched."""
    async def scenario(client: aioredis.Redis) -> None:
        settings = Settings(rate_limit_user_burst=20, rate_limit_user_per_s=0.01)
        limiter = RateLimiter(Runtime(client), settings)
        await limiter.check(f"warm-{uuid.uuid4()}", "192.0.2.1")  # the script is loaded from here on
        sent = count_commands(client)
        flooder, patient = f"flooder-{uuid.uuid4()}", f"patient-{uuid.uuid4()}"
        floods = settings.rate_limit_batch_max - 5
        checks = [outcome(limiter, flooder, f"198.51.100.{index % 50}") for index in range(floods)]
        checks[60:60] = [outcome(limiter, patient, "198.51.100.7") for _ in range(5)]  # amid the flood
        answers = await asyncio.gather(*checks)
        assert sent == ["EVALSHA"]
        flooder_answers = answers[:60] + answers[65:]
        assert flooder_answers.count(0) == 20 and flooder_answers[:20] == [0] * 20  # in arrival order
        assert all(answer >= 1 for answer in flooder_answers[20:])
        assert answers[60:65] == [0] * 5

    with_redis(redis_url(cluster), scenario)


def test_negative_control_batches_of_one_cost_a_call_per_check(cluster: RunningCluster) -> None:
    """With the batch bounded to one check the same flood costs one call per check — the count
    above can see a per-request round trip — and the answers are the same: batching changes none."""
    async def scenario(client: aioredis.Redis) -> None:
        settings = Settings(rate_limit_user_burst=20, rate_limit_user_per_s=0.01, rate_limit_batch_max=1)
        limiter = RateLimiter(Runtime(client), settings)
        await limiter.check(f"warm-{uuid.uuid4()}", "192.0.2.1")
        sent = count_commands(client)
        flooder = f"flooder-{uuid.uuid4()}"
        answers = await asyncio.gather(*[outcome(limiter, flooder, "198.51.100.1") for _ in range(60)])
        assert sent == ["EVALSHA"] * 60
        assert answers.count(0) == 20 and answers[:20] == [0] * 20

    with_redis(redis_url(cluster), scenario)


def test_a_flood_larger_than_the_batch_goes_out_in_bounded_batches(cluster: RunningCluster) -> None:
    async def scenario(client: aioredis.Redis) -> None:
        settings = Settings(rate_limit_user_burst=30, rate_limit_user_per_s=0.01, rate_limit_batch_max=7)
        limiter = RateLimiter(Runtime(client), settings)
        await limiter.check(f"warm-{uuid.uuid4()}", "192.0.2.1")
        sent = count_commands(client)
        flooder = f"flooder-{uuid.uuid4()}"
        answers = await asyncio.gather(*[outcome(limiter, flooder, "198.51.100.2") for _ in range(100)])
        assert sent == ["EVALSHA"] * 15  # ceil(100 / 7)
        assert answers.count(0) == 30 and answers[:30] == [0] * 30

    with_redis(redis_url(cluster), scenario)


def test_retry_after_is_the_wait_for_a_token_in_whole_seconds(cluster: RunningCluster) -> None:
    async def scenario(client: aioredis.Redis) -> None:
        limiter = RateLimiter(Runtime(client), Settings(rate_limit_user_per_s=0.25, rate_limit_user_burst=2))
        buyer = f"slow-{uuid.uuid4()}"
        # Both checks of the tick are charged, in order; the third waits 4 s for a token at 0.25/s.
        assert await asyncio.gather(*[outcome(limiter, buyer, "192.0.2.9") for _ in range(3)]) == [0, 0, 4]
        fast = RateLimiter(Runtime(client), Settings(rate_limit_user_per_s=10, rate_limit_user_burst=1))
        buyer = f"fast-{uuid.uuid4()}"
        assert [await outcome(fast, buyer, "192.0.2.9") for _ in range(2)] == [0, 1]  # 100 ms: at least 1 s

    with_redis(redis_url(cluster), scenario)


def test_limiter_reloads_the_script_after_a_flush(cluster: RunningCluster) -> None:
    async def scenario(client: aioredis.Redis) -> None:
        limiter = RateLimiter(Runtime(client), Settings(rate_limit_user_burst=3))
        user = f"user-{uuid.uuid4()}"
        await limiter.check(user, "127.0.0.9")
        await client.script_flush()  # as after a Redis restart: EVALSHA now answers NOSCRIPT
        await limiter.check(user, "127.0.0.9")
        await limiter.check(user, "127.0.0.9")
        with pytest.raises(ApiError) as refused:
            await limiter.check(user, "127.0.0.9")
        assert refused.value.code == "RATE_LIMITED" and int(refused.value.headers["Retry-After"]) >= 1

    with_redis(redis_url(cluster), scenario)


# Failing open --------------------------------------------------------------------------------------


def test_a_dead_redis_fails_the_whole_batch_open_and_counts_it() -> None:
    """Nothing listens where Redis should be: every check of the batch is admitted, and counted
    (as the client's reconnection attempts end in an error or run into `redis_timeout_s`)."""
    before = failed_open()

    async def scenario(client: aioredis.Redis) -> list[int]:
        limiter = RateLimiter(Runtime(client), Settings(rate_limit_user_burst=1, redis_timeout_s=1.0))
        return list(await asyncio.gather(*[outcome(limiter, "dead", "192.0.2.1") for _ in range(30)]))

    nobody_listens = f"redis://127.0.0.1:{free_port()}"
    # The client as router/runtime.py makes it.
    options = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0, "health_check_interval": 30}
    assert with_redis(nobody_listens, scenario, **options) == [0] * 30
    assert sum(counted_since(before).values()) == 30 and set(counted_since(before)) <= {"redis_error", "timeout"}


def test_a_silent_redis_fails_open_within_the_timeout_and_sheds_what_cannot_wait() -> None:
    """A Redis that accepts and never answers: the batch in flight fails open after
    `redis_timeout_s`, what queued behind it goes next, and a check finding the pending list full
    is admitted at once — the limiter never holds a request much longer than two timeouts."""
    async def scenario() -> None:
        connections: list[asyncio.StreamWriter] = []  # held open, never answered
        server = await asyncio.start_server(lambda reader, writer: connections.append(writer), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = aioredis.from_url(f"redis://127.0.0.1:{port}")
        settings = Settings(rate_limit_user_burst=1, redis_timeout_s=0.3, rate_limit_batch_max=4,
                            rate_limit_pending_max=6)
        limiter = RateLimiter(Runtime(client), settings)
        before = failed_open()
        started = time.monotonic()
        first = [asyncio.ensure_future(outcome(limiter, "silent", "192.0.2.1")) for _ in range(4)]
        await asyncio.sleep(0.05)  # the first four are in flight now; the next six wait, four are shed
        rest = await asyncio.gather(*[outcome(limiter, "silent", "192.0.2.1") for _ in range(10)])
        assert await asyncio.gather(*first) == [0] * 4 and rest == [0] * 10
        # The six queued behind the timed-out call failed open with it: waiting their turn (two more
        # calls of four and two) would have taken three timeouts, 0.9 s.
        assert time.monotonic() - started < 0.8
        assert counted_since(before) == {"timeout": 10, "pending_full": 4}
        server.close()
        await client.aclose()

    asyncio.run(scenario())
