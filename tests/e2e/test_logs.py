"""The router's logs of a running cluster (docs/operations.md "Logs"): one JSON object per line
from every worker, one access line per request findable by the id its client was given."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.harness import RunningCluster
from tests.support import problem

pytestmark = pytest.mark.e2e

LOG_WAIT_S = 5.0  # a worker's line reaches the file when it is written; allow for a busy box


def log_lines(cluster: RunningCluster) -> list[str]:
    return (cluster.data_dir / "logs" / "router.log").read_text(errors="replace").splitlines()


def find(cluster: RunningCluster, request_id: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + LOG_WAIT_S
    while True:
        found = [json.loads(line) for line in log_lines(cluster) if request_id in line]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_a_request_is_found_in_the_log_by_the_id_its_client_was_given(http: httpx.Client,
                                                                      cluster: RunningCluster) -> None:
    missing = uuid.uuid4()
    body = problem(http.get(f"/v1/events/{missing}"), 404, "EVENT_NOT_FOUND")
    request_id = body["request_id"]
    lines = find(cluster, request_id)
    access = [line for line in lines if line["logger"] == "ticketing.access"]
    assert len(access) == 1, lines
    assert access[0]["route"] == "/v1/events/{event_id}" and access[0]["status"] == 404
    assert access[0]["method"] == "GET" and access[0]["duration_ms"] >= 0
    assert {"ts", "level", "msg"} <= set(access[0])


def test_a_request_id_sent_by_the_client_is_kept(http: httpx.Client, cluster: RunningCluster) -> None:
    """A proxy's or client's own X-Request-Id (a safe token) is used, echoed and logged."""
    request_id = f"client-{uuid.uuid4().hex}"
    response = http.get("/healthz", headers={"X-Request-Id": request_id})
    assert response.status_code == 200 and response.headers["x-request-id"] == request_id
    assert [line["route"] for line in find(cluster, request_id) if line["logger"] == "ticketing.access"] == [
        "/healthz"]


def test_every_router_log_line_is_json(http: httpx.Client, cluster: RunningCluster) -> None:
    """The master's and every worker's lines alike (workers configure their own logging:
    they inherit none), Ray's included."""
    http.get("/readyz")
    bad = [line for line in log_lines(cluster) if line.strip() and not _is_json_object(line)]
    assert bad == [], bad[:5]


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def test_the_supervisor_writes_json_lines_too(cluster: RunningCluster) -> None:
    """`ticketing up` prints plain text for the person at the terminal and the same lines as JSON
    in logs/supervisor.log (every start-up phase among them)."""
    lines = [json.loads(line) for line in (cluster.data_dir / "logs" / "supervisor.log").read_text().splitlines()
             if line.strip()]
    assert lines and all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    assert any(line["msg"].startswith("started in") for line in lines), lines[-5:]
