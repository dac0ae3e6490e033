-- The system of record of one shard (DESIGN §6). The shard actor is the only writer; every write
-- transaction re-checks the lease epoch first (001_lease.sql). Money is integer cents, times are
-- timestamptz, ids are UUIDs. Seats are addressed by their event-local seat_no (0..N-1, in
-- section/row/number order); labels are derived from the layout in `sections.rows`, so a
-- 1,000,000-seat venue costs no per-seat layout rows.

CREATE TABLE events (
    event_id          uuid        PRIMARY KEY,
    slot              smallint    NOT NULL CHECK (slot BETWEEN 0 AND 255),
    organizer_id      text        NOT NULL,
    title             text        NOT NULL,
    category          text        NOT NULL DEFAULT '',
    description       text        NOT NULL DEFAULT '',
    venue             jsonb       NOT NULL DEFAULT '{}',
    city              text        GENERATED ALWAYS AS (venue->>'city') STORED,
    starts_at         timestamptz NOT NULL,
    ends_at           timestamptz,
    currency          char(3)     NOT NULL,
    hold_seconds      integer     NOT NULL CHECK (hold_seconds > 0),
    per_person_limit  integer     CHECK (per_person_limit > 0),
    queue             jsonb       NOT NULL DEFAULT '{}',
    sale_windows      jsonb       NOT NULL DEFAULT '[]',
    status            text        NOT NULL CHECK (status IN ('on_sale', 'paused', 'cancelled')),
    seat_count        integer     NOT NULL CHECK (seat_count >= 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at IS NULL OR ends_at > starts_at)
);
-- Browse: keyset pagination ordered by (starts_at, event_id); recovery: events of my slots.
CREATE INDEX events_starts_at ON events (starts_at, event_id);
CREATE INDEX events_slot ON events (slot);
CREATE INDEX events_category ON events (category, starts_at, event_id);
CREATE INDEX events_city ON events (city, starts_at, event_id);

CREATE TABLE sections (
    event_id         uuid    NOT NULL REFERENCES events ON DELETE CASCADE,
    section_id       text    NOT NULL,
    position         integer NOT NULL CHECK (position >= 0),
    name             text    NOT NULL,
    kind             text    NOT NULL CHECK (kind IN ('ga', 'seated')),
    capacity         integer NOT NULL CHECK (capacity > 0),
    price_cents      integer NOT NULL CHECK (price_cents >= 0),
    first_seat_no    integer CHECK (first_seat_no >= 0),
    rows             jsonb   NOT NULL DEFAULT '[]',  -- seated: [{"label": "1", "seats": 30}, ...]
    blocked_seat_nos integer[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (event_id, section_id),
    UNIQUE (event_id, position)
);

CREATE TABLE ga_pools (
    event_id   uuid    NOT NULL,
    section_id text    NOT NULL,
    capacity   integer NOT NULL CHECK (capacity > 0),
    held       integer NOT NULL DEFAULT 0 CHECK (held >= 0),
    sold       integer NOT NULL DEFAULT 0 CHECK (sold >= 0),
    PRIMARY KEY (event_id, section_id),
    FOREIGN KEY (event_id, section_id) REFERENCES sections ON DELETE CASCADE,
    -- The database's own guard against overselling a pool, whatever the actor believes.
    CHECK (held + sold <= capacity)
);

CREATE TABLE holds (
    hold_id     uuid        PRIMARY KEY,
    event_id    uuid        NOT NULL REFERENCES events,
    user_id     text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('seats', 'ga', 'best_available')),
    section_id  text,
    seat_nos    integer[]   NOT NULL DEFAULT '{}',
    quantity    integer     NOT NULL CHECK (quantity > 0),
    total_cents bigint      NOT NULL CHECK (total_cents >= 0),
    status      text        NOT NULL
                CHECK (status IN ('held', 'payment_pending', 'confirmed', 'failed', 'expired', 'released')),
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
-- Recovery loads the live holds of an event; the API lists a user's holds.
CREATE INDEX holds_live ON holds (event_id) WHERE status IN ('held', 'payment_pending');
CREATE INDEX holds_user ON holds (user_id, created_at);

-- One row per seat that is held or sold. The primary key is the database's own guard: two
-- owners can never both hold or sell one seat.
CREATE TABLE seat_claims (
    event_id uuid    NOT NULL REFERENCES events,
    seat_no  integer NOT NULL CHECK (seat_no >= 0),
    hold_id  uuid    NOT NULL REFERENCES holds,
    state    text    NOT NULL CHECK (state IN ('held', 'sold')),
    order_id uuid,
    PRIMARY KEY (event_id, seat_no),
    CHECK ((state = 'sold') = (order_id IS NOT NULL))
);

CREATE TABLE orders (
    order_id    uuid        PRIMARY KEY,
    event_id    uuid        NOT NULL REFERENCES events,
    hold_id     uuid        NOT NULL UNIQUE REFERENCES holds,
    user_id     text        NOT NULL,
    total_cents bigint      NOT NULL CHECK (total_cents >= 0),
    currency    char(3)     NOT NULL,
    status      text        NOT NULL CHECK (status IN ('confirmed', 'refunded')),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX orders_user ON orders (user_id, created_at);
CREATE INDEX orders_event ON orders (event_id);

CREATE TABLE tickets (
    ticket_id  uuid        PRIMARY KEY,
    event_id   uuid        NOT NULL REFERENCES events,
    order_id   uuid        NOT NULL REFERENCES orders,
    user_id    text        NOT NULL,
    seat_no    integer     CHECK (seat_no >= 0),
    section_id text        NOT NULL,
    status     text        NOT NULL
               CHECK (status IN ('valid', 'checked_in', 'refunded', 'transferred', 'cancelled')),
    replaces   uuid        REFERENCES tickets,
    issued_at  timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
-- At most one live ticket per seat: the database's guard against selling a seat twice.
CREATE UNIQUE INDEX tickets_one_live_per_seat ON tickets (event_id, seat_no)
    WHERE seat_no IS NOT NULL AND status IN ('valid', 'checked_in');
CREATE INDEX tickets_user ON tickets (user_id, event_id, issued_at, ticket_id);
CREATE INDEX tickets_event_live ON tickets (event_id) WHERE status IN ('valid', 'checked_in');
CREATE INDEX tickets_order ON tickets (order_id);
-- Offline scanners page through void tickets by time.
CREATE INDEX tickets_void ON tickets (event_id, updated_at, ticket_id)
    WHERE status IN ('refunded', 'transferred', 'cancelled');

-- A ticket is admitted once: the primary key refuses a second check-in.
CREATE TABLE checkins (
    ticket_id  uuid        PRIMARY KEY REFERENCES tickets,
    event_id   uuid        NOT NULL REFERENCES events,
    gate       text        NOT NULL,
    checked_in_at timestamptz NOT NULL
);

CREATE TABLE payments (
    payment_id      uuid        PRIMARY KEY,
    event_id        uuid        NOT NULL REFERENCES events,
    hold_id         uuid        NOT NULL REFERENCES holds,
    order_id        uuid        REFERENCES orders,
    user_id         text        NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('charge', 'refund')),
    gateway         text        NOT NULL,
    gateway_ref     text,
    idempotency_key text        NOT NULL,
    amount_cents    bigint      NOT NULL CHECK (amount_cents >= 0),
    currency        char(3)     NOT NULL,
    status          text        NOT NULL CHECK (status IN ('pending', 'succeeded', 'declined', 'failed', 'unknown')),
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    UNIQUE (gateway, idempotency_key)
);
CREATE INDEX payments_hold ON payments (hold_id);

-- Append-only history: who did what, when, from which state to which.
CREATE TABLE audit_log (
    audit_id    bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    uuid        NOT NULL,
    actor       text        NOT NULL,
    entity      text        NOT NULL,
    entity_id   uuid        NOT NULL,
    from_status text,
    to_status   text        NOT NULL,
    at          timestamptz NOT NULL
);
CREATE INDEX audit_log_entity ON audit_log (entity_id, audit_id);

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();

-- Side effects (webhooks, e-mail, Redis publishes) are recorded in the same transaction as the
-- change that causes them and delivered after commit.
CREATE TABLE outbox (
    outbox_id    bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     uuid        NOT NULL,
    topic        text        NOT NULL,
    payload      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (outbox_id) WHERE published_at IS NULL;

-- The first response to (user, Idempotency-Key), kept at least 24 h (API.md "Idempotency").
CREATE TABLE idempotency_keys (
    user_id     text        NOT NULL,
    key         text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    fingerprint bytea       NOT NULL,
    result      jsonb       NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
