"""The demo event `ticketing up --demo` puts on sale, created through the public API."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cluster.supervisor import Deployment

log = logging.getLogger("ticketing.demo")

DEMO_REQUEST_TIMEOUT_S = 30


def demo_event_body(now: datetime) -> dict[str, Any]:
    starts = (now + timedelta(days=30)).replace(hour=20, minute=0, second=0, microsecond=0)
    return {
        "title": "Demo Night", "category": "concert", "description": "A demo event created by ticketing up --demo.",
        "venue": {"name": "Demo Arena", "city": "Lisbon", "country": "PT"},
        "starts_at": starts.isoformat().replace("+00:00", "Z"),
        "ends_at": (starts + timedelta(hours=3)).isoformat().replace("+00:00", "Z"),
        "currency": "EUR", "hold_seconds": 600, "per_person_limit": 6,
        "sections": [
            {"id": "floor", "name": "Floor", "kind": "ga", "capacity": 5000, "price_cents": 9900},
            {"id": "A", "name": "Block A", "kind": "seated", "price_cents": 14900,
             "rows": [{"label": str(row), "seats": 30} for row in range(1, 21)]},
        ],
    }


def ensure_demo_event(deployment: Deployment) -> str | None:
    """Create the demo event once per data folder; returns its id (None when the API refused)."""
    from cluster.secrets import ensure_jwt_secret
    from router.auth import issue_token

    marker = deployment.data_dir / "demo_event_id"
    if marker.exists():
        event_id = marker.read_text().strip()
        log.info("demo event %s", event_id)
        return event_id
    secret = deployment.settings.jwt_secret or ensure_jwt_secret(deployment.data_dir)
    token = issue_token(secret, "demo-organizer", "organizer", 300)
    request = urllib.request.Request(
        deployment.base_url + "/v1/events", method="POST",
        data=json.dumps(demo_event_body(datetime.now(UTC))).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=DEMO_REQUEST_TIMEOUT_S) as response:
            event_id = str(json.loads(response.read())["id"])
    except urllib.error.HTTPError as error:
        log.warning("the demo event was not created: %s %s", error.code, error.read()[:300])
        return None
    marker.write_text(event_id)
    print(f"demo event {event_id} is on sale: {deployment.base_url}/v1/events/{event_id}", flush=True)
    return event_id
