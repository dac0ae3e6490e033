-- Search (GET /v1/events?q=, docs/browse-and-stream.md "Search"): a weighted full-text document per
-- event — title (A), venue name and city (B), description (C) — kept by Postgres itself as a
-- stored generated column, so no writer has to remember it and it cannot drift from the row.
-- The 'simple' configuration lowercases and splits words but neither stems nor drops stop words:
-- the catalogue is in many languages, and an English stemmer mangles "Lisboa" or drops "The Who".
-- The GIN index serves `search @@ to_tsquery(...)`, prefix terms (`word:*`) included.
ALTER TABLE events ADD COLUMN search tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('simple'::regconfig, title), 'A')
    || setweight(to_tsvector('simple'::regconfig,
                             coalesce(venue->>'name', '') || ' ' || coalesce(venue->>'city', '')), 'B')
    || setweight(to_tsvector('simple'::regconfig, description), 'C')
) STORED;
CREATE INDEX events_search ON events USING gin (search);

-- GET /v1/events?organizer=me: an organizer's events in the listing's keyset order.
CREATE INDEX events_organizer ON events (organizer_id, starts_at, event_id);

-- Sales reports (GET /v1/events/{id}/sales) count an event's holds by status for the hold
-- conversion; without this index that is a scan of every hold of the shard. It costs one more
-- index entry per hold written (insert and status change), on the busiest table: the reason to
-- keep it to the one column.
CREATE INDEX holds_event ON holds (event_id);
