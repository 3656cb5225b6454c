-- 0006_trade_ids: the venue's trade id is part of a tick's identity (issue 17; docs/design/storage.md).
--
-- Two genuine trades can agree on symbol, source, time, price and size; only the venue's trade id tells
-- them apart. Until now the second was taken for a retry and dropped (its volume missing from the candle).
-- A tick now carries trade_id ('' when the venue or the worker gives none) and the unique identity becomes
-- (symbol, source, ts, price, volume, trade_id): a retried delivery of one trade id is still stored once,
-- and a tick without a trade id is deduplicated exactly as before.
--
-- Additive and safe on existing data: the column has a constant default (PostgreSQL 11+ adds it without
-- rewriting a row), every stored tick gets '', and rows unique under the old identity are unique under the
-- new one, so building the new index cannot fail. The index keeps its old name (so every read that names
-- it, and the partitions' copies, stay as they are); building it reads the whole table under this
-- transaction's lock, like 0005: on a large database run `perseus migrate` in a maintenance window.
-- Cores older than this migration insert with ON CONFLICT on the old five columns, which no longer names a
-- unique index: upgrade the cores together with the migration.

ALTER TABLE price_feeds ADD COLUMN trade_id text NOT NULL DEFAULT '';

CREATE UNIQUE INDEX price_feeds_identity_key ON price_feeds (symbol, source, ts DESC, price, volume, trade_id);
DROP INDEX price_feeds_symbol_source_ts_key;
ALTER INDEX price_feeds_identity_key RENAME TO price_feeds_symbol_source_ts_key;
