-- The shard lease (DESIGN §5 "Fencing"). One row per shard database. An actor that starts takes
-- the lease by incrementing the epoch; every write transaction re-checks that the epoch is still
-- its own, so a zombie actor from an older epoch commits nothing.
CREATE TABLE shard_lease (
    shard_id    integer     PRIMARY KEY,
    epoch       bigint      NOT NULL CHECK (epoch >= 0),
    holder      text        NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now()
);
