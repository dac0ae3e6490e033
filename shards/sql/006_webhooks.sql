-- Webhook registrations and their delivery log (shared/API.md "Webhooks", shards/webhooks.py).
-- Applied to every shard database like every migration, but only shard 0's tables are used: a
-- registration belongs to an organizer, not to an event, so it has no event_id to shard by, and
-- the relay of every shard reads an organizer's registrations from one place (docs/organizers.md).
CREATE TABLE webhooks (
    webhook_id   uuid        PRIMARY KEY,
    organizer_id text        NOT NULL,
    url          text        NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    topics       text[]      NOT NULL CHECK (cardinality(topics) >= 1),
    secret       text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz
);
CREATE INDEX webhooks_organizer ON webhooks (organizer_id, created_at) WHERE deleted_at IS NULL;

-- One row per delivery attempt of one outbox row (shard, outbox_id) to one webhook. `result`:
-- succeeded (2xx), failed (retried at next_attempt_at), dead (the last allowed attempt failed).
CREATE TABLE webhook_deliveries (
    delivery_id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id      uuid        NOT NULL REFERENCES webhooks (webhook_id),
    shard_id        int         NOT NULL,
    outbox_id       bigint      NOT NULL,
    message_id      text        NOT NULL,
    event_id        uuid        NOT NULL,
    topic           text        NOT NULL,
    attempt         int         NOT NULL CHECK (attempt >= 1),
    result          text        NOT NULL CHECK (result IN ('succeeded', 'failed', 'dead')),
    status_code     int,
    error           text,
    attempted_at    timestamptz NOT NULL,
    next_attempt_at timestamptz,
    UNIQUE (webhook_id, shard_id, outbox_id, attempt)
);
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (webhook_id, delivery_id);
CREATE INDEX webhook_deliveries_message ON webhook_deliveries (shard_id, outbox_id, webhook_id, attempt);
