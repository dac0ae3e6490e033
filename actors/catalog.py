"""The events a shard owns, as the API shows them: typed documents, and the state a rebuild replaces.

The core (`actors.inventory`) knows layouts, prices and sale rules; the *document* is everything
else an organizer wrote (title, venue, queue settings) in the API's own shape, kept beside the
core so reads answer from memory. `EventBody` types it (a TypedDict: the same dict the API
renders and Postgres stores in `events`, with its keys named and typed).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict
from uuid import UUID

from actors.inventory import ShardInventory


class QueueBody(TypedDict, total=False):
    enabled: bool
    admit_per_second: int
    token_seconds: int


class SaleWindowBody(TypedDict):
    name: NotRequired[str]
    starts_at: str
    ends_at: NotRequired[str | None]
    code: NotRequired[str | None]


class PricingBody(TypedDict):
    mode: str  # "dynamic" (a fixed price has no `pricing` in the document)
    floor_cents: int
    ceiling_cents: int


class SectionBody(TypedDict):
    id: str
    name: str
    kind: str  # "ga" | "seated"
    price_cents: int  # as created or recovered; reads show a dynamic section's current price (actors/reads.py)
    pricing: NotRequired[PricingBody]
    capacity: NotRequired[int]
    rows: NotRequired[list[dict[str, Any]]]
    blocked: NotRequired[list[str]]


class EventBody(TypedDict):
    id: str
    title: str
    category: str
    description: str
    venue: dict[str, Any]
    starts_at: str
    ends_at: str | None
    currency: str
    hold_seconds: int
    per_person_limit: int | None
    queue: QueueBody
    sale_windows: list[SaleWindowBody]
    sections: list[SectionBody]
    status: str
    organizer_id: str
    created_at: str


class Catalog:
    """The documents of a shard's events, by id."""

    def __init__(self, documents: dict[UUID, EventBody] | None = None) -> None:
        self._documents: dict[UUID, EventBody] = documents or {}

    def get(self, event_id: UUID) -> EventBody | None:
        return self._documents.get(event_id)

    def put(self, event_id: UUID, document: EventBody) -> None:
        self._documents[event_id] = document

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._documents

    def __iter__(self) -> Iterator[UUID]:
        return iter(self._documents)

    def __len__(self) -> int:
        return len(self._documents)

    def seated_sections(self, event_id: UUID, section_id: str | None) -> list[str] | None:
        """Ids of the event's seated sections (only `section_id`'s, when given); None: no such event."""
        document = self._documents.get(event_id)
        if document is None:
            return None
        return [section["id"] for section in document["sections"] if section["kind"] == "seated"
                and (section_id is None or section["id"] == section_id)]


@dataclass
class ShardState:
    """What recovery builds and commands change, replaced whole by every rebuild: collaborators
    take it per call rather than keeping parts of it, which a rebuild would leave stale."""

    inventory: ShardInventory
    catalog: Catalog = field(default_factory=Catalog)
    epoch: int = 0
    # Events whose rows recovery refused (actors/restore.py): id → what was wrong.
    quarantined: dict[UUID, str] = field(default_factory=dict)

    def is_quarantined(self, event_id: Any) -> bool:
        return bool(self.quarantined) and event_id in self.quarantined
