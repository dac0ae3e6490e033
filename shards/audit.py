"""The audit trail (docs/organizers.md "Audit"): the rows the writer adds to ``audit_log`` and the
organizers' read of them.

Writing: `AuditRows` is the batch plan's list of audit rows (`shards.writer.BatchPlan.audit`). The
writer appends each row as ``(event_id, actor, entity, entity_id, from_status, to_status, at_s)``
as it always has; the list completes it with the request's context — who acted, in which role, in
which request (`shards.records.AuditContext`, set by the actor shell around an attributed
request's changes) — and the action's name (``entity.to_status`` unless the writer names it).
Rows of changes no request caused (expiry, the payment resolver) keep the record's own actor and
no role or request id.

Reading: `AuditQueries.page` reads one event's rows in ``audit_id`` order, oldest first, after a
keyset cursor (the last ``audit_id`` of the previous page): rows appended while a client pages
land after its cursor, so a chain of pages never skips or repeats a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from shards.pools import PoolOf
from shards.records import AUDIT_CONTEXT_END, AuditContext

# The action of a dynamic section's price change (docs/organizers.md "Audit"): subject the event,
# from → to the prices in cents, the section in its detail.
PRICE_CHANGED_ACTION = "section.price_changed"
# The writer's COPY columns, in the order of an `AuditRows` row.
AUDIT_COLUMNS = ("event_id", "actor", "entity", "entity_id", "from_status", "to_status", "at", "actor_role",
                 "request_id", "action", "detail")


class AuditRows(list[tuple[Any, ...]]):
    """Audit rows of one batch plan, completed with the request context current when appended."""

    __slots__ = ("context",)

    def __init__(self) -> None:
        super().__init__()
        self.context: AuditContext = AUDIT_CONTEXT_END

    def append(self, row: tuple[Any, ...], /) -> None:
        self.add(row)

    def add(self, row: tuple[Any, ...], action: str | None = None, detail: dict[str, Any] | None = None) -> None:
        """`row` as the writer builds it (see the module docstring), with its action and detail."""
        event_id, actor, entity, entity_id, from_status, to_status, at_s = row
        context = self.context
        if context.actor is not None:
            actor = context.actor  # who made the request: a validator checking in, an organizer refunding
        list.append(self, (event_id, actor, entity, entity_id, from_status, to_status, at_s, context.actor_role,
                           context.request_id, action or f"{entity}.{to_status}", detail))


PAGE_SQL = """
SELECT audit_id, at, actor, actor_role, entity, entity_id, action, from_status, to_status, request_id,
       detail::text AS detail
  FROM audit_log
 WHERE event_id = $1 AND audit_id > $2
 ORDER BY audit_id
 LIMIT $3"""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    audit_id: int
    at: datetime
    actor: str
    actor_role: str | None
    entity: str
    entity_id: UUID
    action: str
    from_status: str | None
    to_status: str
    request_id: str | None
    detail: dict[str, Any] | None


class AuditQueries:
    """Organizers' read of the audit log, one shard database at a time (`pool_of` is
    `ShardPools.pool`), within the pool's command timeout; served by ``audit_log_event``."""

    def __init__(self, pool_of: PoolOf) -> None:
        self._pool_of = pool_of

    async def page(self, shard_id: int, event_id: UUID, after_audit_id: int, rows_max: int) -> list[AuditEntry]:
        """Up to `rows_max` rows of the event with an ``audit_id`` above `after_audit_id`, oldest first."""
        pool = await self._pool_of(shard_id)
        rows = await pool.fetch(PAGE_SQL, event_id, after_audit_id, rows_max)
        return [AuditEntry(row["audit_id"], row["at"], row["actor"], row["actor_role"], row["entity"],
                           row["entity_id"], row["action"] or f"{row['entity']}.{row['to_status']}",
                           row["from_status"], row["to_status"], row["request_id"],
                           None if row["detail"] is None else orjson.loads(row["detail"]))
                for row in rows]
