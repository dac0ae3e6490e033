-- Checkout: who each ticket is for (API.md "holders", one per ticket, else the buyer).
ALTER TABLE tickets ADD COLUMN holder_name text, ADD COLUMN holder_email text;
-- The checkout resolver finds pinned holds whose payment outcome is unknown.
CREATE INDEX holds_pinned ON holds (updated_at) WHERE status = 'payment_pending';
CREATE INDEX payments_order ON payments (order_id) WHERE order_id IS NOT NULL;
