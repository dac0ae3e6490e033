"""The FastAPI application factory (``uvicorn router.app:create_app --factory``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from starlette.types import Receive, Scope, Send

from actors.protocol import GetOrder
from cluster.settings import Settings
from router.audit_api import router as audit_router
from router.auth import TokenVerifier
from router.browse import count_shard_failures_from_zero
from router.browse import router as browse_router
from router.cancellation import CancellationSaga
from router.checkins_api import router as checkins_router
from router.checkout import build_checkout_service
from router.checkout.gateway import build_gateway
from router.checkout.route import router as checkout_router
from router.edge import Edge, HotRoutes
from router.events_api import HOT_ROUTES as EVENT_HOT_ROUTES
from router.events_api import router as events_router
from router.events_cache import EventsCache
from router.health import ReadinessProber
from router.health import router as health_router
from router.holds_api import HOT_ROUTES as HOLD_HOT_ROUTES
from router.holds_api import router as holds_router
from router.http_metrics import observe_payment_call
from router.jsonbody import JSONBody
from router.mail_relay import MailRelay
from router.openapi import install_openapi
from router.orders_api import router as orders_router
from router.pages import router as pages_router
from router.problems import install_error_handlers
from router.queue_api import HOT_ROUTES as QUEUE_HOT_ROUTES
from router.queue_api import EventCache
from router.queue_tokens import QueueTokens
from router.ratelimit import RateLimiter
from router.reports_api import ExportSlots
from router.reports_api import router as reports_router
from router.resolver import CheckoutResolver
from router.runtime import Runtime
from router.seat_stream import lifespan as seat_streams_lifespan
from router.seat_stream import router as seat_stream_router
from router.shard_client import ShardClient
from router.snapshots import ReadSnapshots
from router.tickets.ticket_codes import TicketCodes
from router.waiting_room import WaitingRoom
from router.webhook_relay import WebhookRelay
from router.webhooks_api import router as webhooks_router
from shards.mail import MailQueries
from shards.webhooks import OutboxRelayQueries, WebhookRegistry

API_VERSION = "1.0.0"


class TicketingApp(FastAPI):
    """The FastAPI app, entered through its edge: every HTTP request passes `edge` (router/edge.py),
    which serves the hot routes itself and hands the rest to FastAPI's own stack."""

    edge: Edge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.edge(scope, receive, send)
        else:  # lifespan
            await super().__call__(scope, receive, send)

    async def framework(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's stack (middleware, routing, dependencies): where the edge sends other routes."""
        await super().__call__(scope, receive, send)


def add_routes(app: FastAPI, router: APIRouter) -> None:
    """Add `router`'s routes to the app as if declared on it (see create_app for why)."""
    app.router.routes.extend(router.routes)


def create_app(settings: Settings | None = None) -> TicketingApp:
    settings = settings or Settings()
    runtime = Runtime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            async with seat_streams_lifespan(app):
                for background in (resolver, cancellation, relay, mail_relay, readiness, shard_client):
                    background.start()
                yield
        finally:
            await readiness.stop()
            await mail_relay.stop()
            await relay.stop()
            await cancellation.stop()
            await resolver.stop()
            await shard_client.close()
            await runtime.close()

    app = TicketingApp(
        title="Ticketing cluster",
        version=API_VERSION,
        summary="Sell every seat exactly once, fast, under flash-sale load.",
        default_response_class=JSONBody,
        lifespan=lifespan,
        # Our own Prometheus metrics and request logs cover this; FastAPI's OpenTelemetry hooks
        # cost time on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.settings = settings
    app.state.runtime = runtime
    app.state.token_verifier = TokenVerifier(settings)
    app.state.queue_tokens = QueueTokens.for_deployment(settings)
    app.state.shard_client = shard_client = ShardClient(runtime, settings)
    app.state.gateway = gateway = build_gateway(
        settings.payment_gateway, settings.resolved_data_dir, call_timeout_s=settings.gateway_call_timeout_s,
        slow_delay_s=settings.gateway_slow_delay_s, on_call=observe_payment_call)
    app.state.ticket_codes = TicketCodes(settings.resolved_data_dir, settings.qr_cache_entries_max)
    app.state.checkout = checkout = build_checkout_service(runtime, shard_client, gateway, settings)
    resolver = CheckoutResolver(runtime, checkout, settings)
    cancellation = CancellationSaga(runtime, checkout, settings)
    app.state.rate_limiter = RateLimiter(runtime, settings)
    app.state.waiting_room = WaitingRoom(runtime, settings)
    app.state.queue_settings = EventCache(settings.queue_settings_cache_s, settings.queue_settings_cache_entries_max)
    app.state.readiness = readiness = ReadinessProber(runtime)
    app.state.read_snapshots = ReadSnapshots(settings.read_snapshot_s, settings.read_snapshot_entries_max)
    app.state.events_cache = EventsCache(runtime, settings)
    count_shard_failures_from_zero(settings.shard_count)
    app.state.export_slots = ExportSlots(settings.exports_per_worker_max)
    app.state.webhooks = webhooks = WebhookRegistry(runtime.databases.pool)
    relay = WebhookRelay(webhooks, OutboxRelayQueries(runtime.databases.pool), settings)
    # E-mailed tickets (router/mail_relay.py): started only when smtp_host is set. Codes are signed
    # from the order the shard actor reads back, as GET /v1/tickets/{id} signs them.
    mail_relay = MailRelay(MailQueries(runtime.databases.pool),
                           lambda shard_id, order_id: shard_client.read(shard_id, GetOrder(order_id, None)),
                           app.state.ticket_codes, settings)
    install_error_handlers(app, settings.retry_after_s)
    hot_routes = HotRoutes([*HOLD_HOT_ROUTES, *EVENT_HOT_ROUTES, *QUEUE_HOT_ROUTES])
    install_openapi(app, hot_routes)
    # The busiest routes first: reads and checkout, then the rest. Routes are added to the
    # app's own list rather than with include_router, which in this FastAPI keeps each router as a
    # nested matcher that every request walks (measured: ~185 µs of route matching per request).
    for module_router in (holds_router, events_router, checkout_router, orders_router, checkins_router,
                          browse_router, reports_router, audit_router, seat_stream_router, health_router):
        add_routes(app, module_router)
    add_routes(app, webhooks_router)  # organizers' rare calls: last
    add_routes(app, pages_router)  # the web pages (docs/web.md): loaded once per visit
    app.edge = Edge(
        app.framework,
        hot_routes,
        app,
        body_bytes_max=settings.body_bytes_max,
        deadline_s=settings.request_deadline_s,
        checkout_deadline_s=settings.checkout_deadline_s,
        export_deadline_s=settings.export_deadline_s,
        retry_after_s=settings.retry_after_s,
        metrics_flush_interval_s=settings.metrics_flush_interval_s,
        access_log=settings.access_log,
    )
    return app
