-- 0009_lean_candle_inbox: candle_inbox keeps only the index its writer reads by (issue 16's benchmark line,
-- issue 18's ingestion; docs/design/ingestion.md).
--
-- Every ingested tick of a trades-built source is also a candle_inbox row, written in the insert that stores
-- it. The row's identity column (a sequence call and a primary-key index entry per tick) was never read, and
-- the tick_id index served only the anti-join of a candle rebuild, which runs once per writer takeover over
-- an inbox its writer keeps near empty (a hash anti-join needs no index). Each cost an index insert per
-- ingested tick: ingestion measured 0.92x of the code before the inbox, PostgreSQL doing ~+2 ms per 1,000
-- feeds; PostgreSQL CPU per 1,000 inserted feeds went 0.81x and 0.95x in two alternating runs (bench/README.md).
-- The (source, symbol) index stays: the writer takes its symbols' rows by it every second.
--
-- Compatible both ways with running cores: no statement names the dropped column or index.
ALTER TABLE candle_inbox DROP COLUMN id;
DROP INDEX IF EXISTS candle_inbox_tick_idx;
