-- The alerts' outbox: the id of every stored alert whose trade_signal event is not yet known to be
-- in Redis. The writer stores an alert and its outbox row in one statement inside its fenced
-- transaction, publishes after the commit, then deletes the rows; a crash or a Redis outage in
-- between leaves them, and the next wave publishes what is left. A table of its own, not a column
-- of alerts: clearing a column would rewrite every alert row and its five index entries.
CREATE TABLE alert_outbox (
    alert_id bigint PRIMARY KEY REFERENCES alerts (id) ON DELETE CASCADE
);
