-- The alerts' outbox: a stored alert stays marked `unpublished` until its trade_signal event is in
-- Redis. The writer stores alerts inside its fenced transaction and publishes after it commits; a
-- crash or a Redis outage in between leaves the mark, and the next wave publishes what is marked.
-- Rows from before this migration were published when they were stored.
ALTER TABLE alerts ADD COLUMN unpublished boolean NOT NULL DEFAULT false;
CREATE INDEX alerts_unpublished_idx ON alerts (id) WHERE unpublished;
