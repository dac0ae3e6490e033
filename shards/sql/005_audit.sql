-- The audit trail organizers read (GET /v1/events/{id}/audit, docs/organizers.md "Audit").
-- Who acted in which role and in which request, what the action was called, and what else it
-- touched (a check-in's gate, an event edit's fields before and after). All nullable: rows
-- written before this migration, and changes no request caused (the hold-expiry timer, the
-- payment resolver), have no role or request id.
ALTER TABLE audit_log
    ADD COLUMN actor_role text,
    ADD COLUMN request_id text,
    ADD COLUMN action     text,
    ADD COLUMN detail     jsonb;

-- The read path pages one event's rows by audit_id (keyset); without this index each page is a
-- scan of the shard's whole history. One more index entry per audited row, and audited rows are
-- no longer written per hold (holds are counted, not audited), so the write path pays it only
-- for orders, tickets, check-ins, payments and event edits.
CREATE INDEX audit_log_event ON audit_log (event_id, audit_id);
