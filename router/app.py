"""The FastAPI application factory (``uvicorn router.app:create_app --factory``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from cluster.settings import Settings
from router.auth import AnyRole, TokenVerifier
from router.edge import EdgeMiddleware
from router.errors import install_error_handlers
from router.health import router as health_router
from router.jsonbody import JSONBody
from router.runtime import Runtime

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
    app.state.token_verifier = TokenVerifier(settings)
    install_error_handlers(app)
    app.include_router(health_router)

    @app.get("/v1/me", tags=["auth"], summary="Who the bearer token says you are")
    async def me(principal: AnyRole) -> JSONBody:
        return JSONBody({"sub": principal.user_id, "role": principal.role})

    app.add_middleware(
        EdgeMiddleware,
        body_bytes_max=settings.body_bytes_max,
        deadline_s=settings.request_deadline_s,
        checkout_deadline_s=settings.checkout_deadline_s,
        access_log=settings.access_log,
    )
    return app
