"""Structured (one JSON object per line) logging for every process of the cluster: the
supervisor's files, each router worker (configured in the worker itself: uvicorn's workers are
new processes that inherit nothing from the parent's logging), the shard actors (Ray worker
processes; their stderr lands in Ray's worker logs). Standard library `logging`, one formatter.

Every line has `ts`, `level`, `logger`, `msg`, whatever the call passed in `extra=`, and the id of
the HTTP request being served when there is one (`REQUEST_ID`, set by the router's edge), so any
line a request causes is findable by the id its client was given (`X-Request-Id`, `request_id` in
problem bodies).
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import Any

import orjson

# The request being served in this task (router/edge.py sets it; tasks it starts inherit it).
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def shared_context() -> contextvars.Context:
    """For a task that outlives the request that happened to start it and serves many (a batching
    lane, a flusher, a feed reader): a context without that request's id, so its log lines are
    not attributed to a stranger's request. `loop.create_task(coro, context=shared_context())`."""
    return contextvars.Context()

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if "request_id" not in entry:
            request_id = REQUEST_ID.get()
            if request_id is not None:
                entry["request_id"] = request_id
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "INFO", *, json_lines: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    route_ray_logging()


def add_json_file(path: Any) -> None:
    """Also write JSON lines to `path` (the supervisor: plain text on the terminal for the person
    who ran `ticketing up`, JSON in `<data>/logs/supervisor.log` for everyone else)."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)


def route_ray_logging() -> None:
    """Ray gives its logger a plain-text handler of its own, or none and `propagate = False`,
    when it is imported: send its lines through ours. Call again after `import ray`."""
    ray_logger = logging.getLogger("ray")
    ray_logger.handlers[:] = []
    ray_logger.propagate = True
