-- 0007_candle_inbox: ingested ticks wait here for the candles of their exchange's writer (issue 17;
-- docs/design/ingestion.md).
--
-- A tick ingested through IngestService (any core) of an exchange whose candles are built from trades is
-- put here in the statement that stores it in price_feeds, so a row exists exactly when its tick is
-- committed. The writer leading that exchange (one at a time, fenced) deletes the rows in its fenced
-- transactions and adds their ticks to its candles: a row is taken once, by the writer whose term is
-- current, or stays for the next one. The candle rebuild of a new writer skips the ticks still here (they
-- are taken right after it), so no tick is counted twice and none is missed across a takeover.
--
-- Additive: a new table; nothing stored before is touched.

CREATE TABLE candle_inbox (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source  text NOT NULL,
    symbol  text NOT NULL,
    price   numeric NOT NULL,
    volume  numeric NOT NULL,
    ts      timestamptz NOT NULL,
    tick_id bigint NOT NULL
);

-- the writer takes its exchange's rows (by source and symbol); the rebuild asks whether a tick is still here
CREATE INDEX candle_inbox_source_symbol_idx ON candle_inbox (source, symbol);
CREATE INDEX candle_inbox_tick_idx ON candle_inbox (tick_id);
