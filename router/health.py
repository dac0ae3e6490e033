"""Liveness, readiness and metrics endpoints (API.md "Operations")."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from cluster.logs import shared_context
from router.http_metrics import COMPONENT_UP, render
from router.jsonbody import JSONBody
from router.problems import problem_response
from router.runtime import Runtime

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> JSONBody:
    return JSONBody({"status": "ok"})


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics() -> Response:
    body, content_type = render()
    return Response(body, media_type=content_type)


@router.get("/metrics/actors", summary="Prometheus metrics of every shard actor", include_in_schema=False)
async def actor_metrics(request: Request) -> Response:
    """Each actor's own registry, gathered through Ray (shards that do not answer are skipped and
    show up as `ticketing_component_up{component="shard-k"} 0` on /metrics after the next probe)."""
    runtime: Runtime = request.app.state.runtime
    timeout_s = runtime.settings.probe_timeout_s

    async def one(shard_id: int) -> bytes:
        try:
            handle = await asyncio.to_thread(runtime.actor, shard_id)
            return bytes(await asyncio.wait_for(handle.metrics_text.remote(), timeout_s))
        except Exception:
            runtime.forget_actor(shard_id)
            return b""

    texts = await asyncio.gather(*(one(shard_id) for shard_id in range(runtime.settings.shard_count)))
    return Response(_merge_expositions(texts), media_type="text/plain; version=0.0.4; charset=utf-8")


def _merge_expositions(texts: list[bytes]) -> bytes:
    """Concatenate expositions so each metric family's HELP/TYPE appears once, before its samples."""
    families: dict[str, list[str]] = {}
    headers: dict[str, list[str]] = {}
    for text in texts:
        current = ""
        for line in text.decode().splitlines():
            if line.startswith("# "):
                current = line.split(" ", 3)[2]
                headers.setdefault(current, [])
                if line not in headers[current]:
                    headers[current].append(line)
            elif line:
                families.setdefault(current, []).append(line)
    lines = []
    for name, header in headers.items():
        lines.extend(header)
        lines.extend(families.get(name, []))
    return ("\n".join(lines) + "\n").encode()


class ReadinessProber:
    """Probes every dependency every `readiness_probe_interval_s` in the background, so
    `ticketing_component_up` follows the components whether or not anyone calls `/readyz`.

    `/readyz` answers from the last round while it is fresh (within two intervals) and every
    component was up; otherwise it probes now, so a component coming back is seen at once (and a
    load balancer polling a healthy router costs nothing). Concurrent probes share one round.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.components: dict[str, str] = {}
        self.checked_at = 0.0  # time.monotonic() of the last round, 0: none yet
        self._round: asyncio.Task[dict[str, str]] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="readiness-prober")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self.probe()
            await asyncio.sleep(self.runtime.settings.readiness_probe_interval_s)

    async def probe(self) -> dict[str, str]:
        """One round (or the one under way): every component's outcome, gauges updated."""
        if self._round is None or self._round.done():
            self._round = asyncio.get_running_loop().create_task(self._probe_all(), context=shared_context())
        return await asyncio.shield(self._round)

    async def current(self) -> dict[str, str]:
        fresh = time.monotonic() - self.checked_at < 2 * self.runtime.settings.readiness_probe_interval_s
        if self.checked_at and fresh and all(outcome == "ok" for outcome in self.components.values()):
            return self.components
        return await self.probe()

    async def _probe_all(self) -> dict[str, str]:
        runtime = self.runtime
        timeout_s = runtime.settings.probe_timeout_s
        probes: dict[str, Callable[[], Awaitable[Any]]] = {"ray": runtime.ensure_ray}
        for shard_id in range(runtime.settings.shard_count):
            probes[f"shard-{shard_id}"] = _actor_probe(runtime, shard_id)
            probes[f"postgres-{shard_id}"] = _postgres_probe(runtime, shard_id)
        probes["redis"] = _redis_probe(runtime)
        names = list(probes)
        outcomes = await asyncio.gather(*(_run(name, probes[name], timeout_s) for name in names))
        components = dict(zip(names, outcomes, strict=True))
        for name, outcome in components.items():
            COMPONENT_UP.labels(name).set(1 if outcome == "ok" else 0)
        self.components, self.checked_at = components, time.monotonic()
        return components


@router.get("/readyz", summary="Every dependency answers",
            responses={503: {"description": "Some component does not answer; the body names it"}})
async def readyz(request: Request) -> Response:
    prober: ReadinessProber = request.app.state.readiness
    components = await prober.current()
    down = [name for name, outcome in components.items() if outcome != "ok"]
    if down:
        return problem_response(503, "NOT_READY", "not answering: " + ", ".join(down),
                                headers={"Retry-After": "1"}, down=down, components=components)
    return JSONBody({"status": "ready", "components": components})


class Recovering(Exception):
    """The shard actor answers but is still rebuilding from Postgres."""


async def _run(name: str, probe: Callable[[], Awaitable[Any]], timeout_s: float) -> str:
    """"ok" or why `name` is down, in words that reveal nothing internal: an exception's text can
    carry a DSN, a user name or a file path, so it is logged, not returned."""
    try:
        result = await asyncio.wait_for(probe(), timeout_s)
    except TimeoutError:
        return f"down: no answer within {timeout_s} s"
    except Recovering:
        return "down: recovering"
    except Exception as error:
        log.warning("readiness probe %s failed: %s: %s", name, type(error).__name__, str(error)[:300])
        return "down: error"
    return "ok" if result is not False else "down: not connected"


def _actor_probe(runtime: Runtime, shard_id: int) -> Callable[[], Awaitable[Any]]:
    async def probe() -> Any:
        try:
            handle = await asyncio.to_thread(runtime.actor, shard_id)
            health = await handle.health.remote()
            if not health.get("ready"):
                raise Recovering
            return health
        except Exception:
            runtime.forget_actor(shard_id)  # re-resolve by name next time (the actor may be new)
            raise

    return probe


def _postgres_probe(runtime: Runtime, shard_id: int) -> Callable[[], Awaitable[Any]]:
    async def probe() -> Any:
        return await runtime.reads.probe(shard_id, runtime.settings.probe_timeout_s)

    return probe


def _redis_probe(runtime: Runtime) -> Callable[[], Awaitable[Any]]:
    async def probe() -> Any:
        if runtime.redis is None:
            return False
        return await runtime.redis.ping()

    return probe
