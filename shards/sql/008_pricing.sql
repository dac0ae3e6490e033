-- Dynamic pricing (issue 15; docs/organizers.md "Dynamic pricing", docs/inventory.md).
-- A section may opt in to a price that moves with demand between an organizer's floor and
-- ceiling. `sections.price_cents` stays the one current price: the writer updates it in the same
-- group commit as the change that moved it (an audit row says from → to), and recovery builds the
-- layout from it, so a restarted actor sells at the price it last committed.
-- Numbered 008 only to follow 007 on main; nothing here reads or needs what 007 adds.
ALTER TABLE sections
    ADD COLUMN pricing_mode  text    NOT NULL DEFAULT 'fixed' CHECK (pricing_mode IN ('fixed', 'dynamic')),
    ADD COLUMN floor_cents   integer CHECK (floor_cents >= 0),
    ADD COLUMN ceiling_cents integer,
    -- The database's own guard: a dynamic price never leaves its bounds, whatever the actor does.
    ADD CONSTRAINT sections_dynamic_price_bounds CHECK (
        pricing_mode = 'fixed'
        OR (floor_cents IS NOT NULL AND ceiling_cents IS NOT NULL
            AND floor_cents <= price_cents AND price_cents <= ceiling_cents));

-- A hold keeps the price it was created with. Every item's price is total_cents / quantity
-- (one section, one price: GA holds and nearly every seat hold); a hold of seats across sections
-- lists one price per seat, in seat_nos order. NULL otherwise, and for rows written before this
-- migration (all prices were fixed then: the section's; a NULL on seats across sections says so).
ALTER TABLE holds ADD COLUMN item_prices_cents integer[];

-- A ticket keeps the price it was sold at: order totals, refunds and revenue read it, never the
-- section's price of today. Nullable so that nothing writing tickets must change in lockstep;
-- readers fall back to the section's price, which was fixed when such rows were written, and
-- the backfill below leaves no old row without it.
ALTER TABLE tickets ADD COLUMN price_cents integer CHECK (price_cents >= 0);
UPDATE tickets t SET price_cents = s.price_cents
  FROM sections s
 WHERE s.event_id = t.event_id AND s.section_id = t.section_id AND t.price_cents IS NULL;
