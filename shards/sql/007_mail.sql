-- E-mailed tickets (router/mail_relay.py, shards/mail.py, docs/organizers.md "E-mailed tickets"):
-- the e-mail relay's own progress over this shard's outbox. It never reads or writes the webhook
-- relay's `published_at`: the two consumers of the outbox advance independently.

-- How far the e-mail relay has read the outbox: every row up to `outbox_id` has its deliveries
-- planned in `mail_deliveries` (or needed none). One row per shard database. It starts at the
-- outbox's end when this migration runs, so orders made before e-mail existed are not mailed.
CREATE TABLE mail_cursor (
    only_row   boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    outbox_id  bigint      NOT NULL CHECK (outbox_id >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO mail_cursor (outbox_id) SELECT coalesce(max(outbox_id), 0) FROM outbox;

-- One e-mail to one address about one outbox row: an order's tickets held by that address, or a
-- cancelled ticket's notice. `recipient` is '' for the tickets that had no holder address (status
-- skipped: nothing is sent for them). `status`: pending (due at next_attempt_at), sent, skipped,
-- dead (the last allowed attempt failed, or the message could not be built). A row recorded sent is
-- never sent again; one sent but not yet recorded (the relay died in between) is sent again.
CREATE TABLE mail_deliveries (
    outbox_id         bigint      NOT NULL,
    recipient         text        NOT NULL CHECK (length(recipient) <= 254),
    topic             text        NOT NULL CHECK (topic IN ('order.confirmed', 'ticket.cancelled')),
    event_id          uuid        NOT NULL,
    order_id          uuid,
    holder_name       text,
    ticket_ids        uuid[]      NOT NULL,
    status            text        NOT NULL CHECK (status IN ('pending', 'sent', 'skipped', 'dead')),
    attempts          int         NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    error             text,
    outbox_created_at timestamptz NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    sent_at           timestamptz,
    PRIMARY KEY (outbox_id, recipient),
    CHECK ((recipient = '') = (status = 'skipped'))
);
-- The relay's work list: only pending rows are indexed, so the index stays as small as the backlog.
CREATE INDEX mail_deliveries_pending ON mail_deliveries (outbox_id) WHERE status = 'pending';
