"""Checkout as a service (API.md "Checkout", DESIGN §9): the payment gateway port and its
simulator (`gateway`), the keys of its steps (`keys`), the saga (`service`) shared by the HTTP
route (`route`) and the checkout resolver (router/resolver.py)."""

from __future__ import annotations

from cluster.settings import Settings
from router.checkout.gateway import PaymentGateway
from router.checkout.service import CheckoutRequest, CheckoutService, RefundRequest, Unsettled
from router.runtime import Runtime
from router.shard_client import ShardClient
from shards.checkout_queries import CheckoutQueries

__all__ = ["CheckoutRequest", "CheckoutService", "RefundRequest", "Unsettled", "build_checkout_service"]


def build_checkout_service(runtime: Runtime, shard_client: ShardClient, gateway: PaymentGateway,
                           settings: Settings) -> CheckoutService:
    """The deployment's service: its shard client, its gateway and the shards' payment history."""
    queries = CheckoutQueries(runtime.databases.pool, settings.db_call_timeout_s)
    return CheckoutService(shard_client, gateway, queries, gateway_name=settings.payment_gateway,
                           retry_after_s=settings.retry_after_s)
