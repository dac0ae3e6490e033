"""The router's own cost of one `POST /v1/holds`, in process: the edge and the hold handler with
the shard call and the rate limiter stubbed out (no HTTP server, no Ray, no Redis).

    python -m loadtest.edge_bench [--requests 20000] [--profile]

What it measures is the Python the router runs per hold — header scan, request id, token check
(cached: every token is seen once before the clock starts), body validation, the command, the
reply's rendering, metrics — so a change there shows without the noise of a whole cluster.
`--profile` prints cProfile's top functions by own time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import tempfile
import time
import uuid
from collections.abc import MutableMapping
from typing import Any

import orjson

from actors.inventory.holds import HoldStatus
from actors.inventory.results import HoldItem, HoldView
from cluster.settings import Settings
from router.app import create_app
from router.auth import issue_token

SECRET = "edge-bench-secret-0123456789abcdef"
TOKENS = 2000


class _Shard:
    """Answers every hold at once, as a shard actor would after its commit."""

    def __init__(self, shard_map: Any) -> None:
        self.shard_map = shard_map

    async def apply(self, shard_id: int, command: Any, *, retryable: bool) -> HoldView:
        return HoldView(command.hold_id, command.event_id, HoldStatus.HELD, time.time() + 600,
                        (HoldItem(None, "floor", 5000),), 5000, "EUR")


class _Limiter:
    async def check(self, user_id: str, client_address: str) -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    app = create_app(Settings(jwt_secret=SECRET, data_dir=tempfile.mkdtemp(prefix="edge-bench-"), access_log=False))
    app.state.shard_client = _Shard(app.state.shard_client.shard_map)
    app.state.rate_limiter = _Limiter()
    tokens = [issue_token(SECRET, f"user-{n}", "buyer", 3600).encode() for n in range(TOKENS)]
    body = orjson.dumps({"event_id": str(uuid.uuid4()), "section": "floor", "quantity": 1})
    sent: list[Any] = []

    async def one(serial: int) -> None:
        scope = {"type": "http", "method": "POST", "path": "/v1/holds", "query_string": b"",
                 "client": ("127.0.0.1", 5000),
                 "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                             (b"content-length", str(len(body)).encode()),
                             (b"authorization", b"Bearer " + tokens[serial % TOKENS]),
                             (b"idempotency-key", uuid.uuid4().hex.encode())]}

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)

    async def run(requests: int) -> float:
        for serial in range(TOKENS):  # every token verified once: the cache is warm
            await one(serial)
        if sent[0]["status"] != 201:
            raise SystemExit(f"the hold was not accepted: {sent[:2]}")
        sent.clear()
        started = time.perf_counter()
        for serial in range(requests):
            await one(serial)
        return (time.perf_counter() - started) / requests

    print(f"{1e6 * asyncio.run(run(args.requests)):.1f} µs of router Python per hold (in process)")
    if args.profile:
        profile = cProfile.Profile()
        profile.enable()
        asyncio.run(run(args.requests))
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
