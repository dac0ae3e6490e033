"""Run the router under uvicorn with uvloop, httptools and N worker processes."""

from __future__ import annotations

from typing import Any

import uvicorn

from cluster.logs import configure_logging
from cluster.settings import Settings


def worker_app() -> Any:
    """The app, made in each uvicorn worker: a worker is a new process (spawned) that inherits
    none of the parent's logging, so it configures its own JSON lines before anything logs."""
    from router.app import create_app

    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(settings)


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level)
    uvicorn.run(
        "router.server:worker_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.router_workers,
        loop="uvloop",
        http="httptools",
        access_log=False,  # the edge (router/edge.py) writes the structured access log with request ids
        log_config=None,
        # X-Forwarded-For decides the client address, which rate limits are charged to: trusted only
        # from the proxies named in `forwarded_allow_ips` (none by default: no proxy-headers layer).
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or None,
        server_header=False,
        backlog=settings.router_backlog_max,
        limit_concurrency=settings.router_connections_max,
        timeout_keep_alive=settings.keep_alive_s,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
    )


if __name__ == "__main__":
    main()
