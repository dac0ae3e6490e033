"""The FastAPI application factory (``uvicorn router.app:create_app --factory``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from cluster.settings import Settings
from router.auth import TokenVerifier
from router.edge import EdgeMiddleware
from router.errors import install_error_handlers
from router.events_api import router as events_router
from router.health import router as health_router
from router.holds_api import router as holds_router
from router.jsonbody import JSONBody
from router.queue_tokens import QueueTokens
from router.runtime import Runtime
from router.shard_client import ShardClient

API_VERSION = "1.0.0"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = Runtime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await shard_client.close()
            await runtime.close()

    app = FastAPI(
        title="Ticketing cluster",
        version=API_VERSION,
        summary="Sell every seat exactly once, fast, under flash-sale load.",
        default_response_class=JSONBody,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.runtime = runtime
    app.state.token_verifier = verifier = TokenVerifier(settings)
    app.state.queue_tokens = QueueTokens(verifier.key if isinstance(verifier.key, str) else settings.jwt_secret)
    app.state.shard_client = shard_client = ShardClient(runtime, settings)
    install_error_handlers(app)
    app.include_router(health_router)

    app.include_router(events_router)
    app.include_router(holds_router)
    app.add_middleware(
        EdgeMiddleware,
        body_bytes_max=settings.body_bytes_max,
        deadline_s=settings.request_deadline_s,
        checkout_deadline_s=settings.checkout_deadline_s,
        access_log=settings.access_log,
    )
    return app
