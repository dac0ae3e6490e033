-- Which slots this shard database serves, and the moves that changed it (DESIGN §4,
-- docs/operations.md "Moving slots"). The settings' slot map seeds it (each actor inserts its
-- configured slots as 'owned' the first time, never overwriting a row); from then on only a slot
-- move (`ticketing slots move`, shards/slot_moves.py) changes it:
--   owned  — this shard serves the slot's events;
--   fenced — a move is taking the slot away: nobody serves it until the move copies its rows;
--   moved  — the slot's rows now live in another shard's database.
-- A slot is 'owned' in at most one shard database at any moment: the source is fenced before the
-- target's rows and 'owned' mark commit together. `version` is the shard-map version that last
-- changed the row; the map's version is the highest over all shard databases.
CREATE TABLE slot_owners (
    slot       smallint    PRIMARY KEY CHECK (slot BETWEEN 0 AND 255),
    state      text        NOT NULL CHECK (state IN ('owned', 'fenced', 'moved')),
    version    bigint      NOT NULL CHECK (version >= 1),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The slot of the request a key answered (NULL for keys written before this migration and ids
-- not of ours): a move copies the keys of its slots so that a replay after the move is answered
-- by the new owner exactly as before it.
ALTER TABLE idempotency_keys ADD COLUMN slot smallint CHECK (slot BETWEEN 0 AND 255);

-- The audit trail stays append-only for everyone but a slot move, which deletes the moved
-- events' rows from the source once the target holds them (in the same transaction that marks
-- the slots 'moved'), announcing itself with the transaction-local setting below.
CREATE OR REPLACE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('ticketing.slot_move', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only';
END $$;

-- Outbox rows a slot move carried over from another shard's outbox whose e-mail that shard's mail
-- relay had already planned (past its `mail_cursor`): this shard's relay must not plan them again.
ALTER TABLE outbox ADD COLUMN mail_planned boolean NOT NULL DEFAULT false;
