-- The writer fence of each exchange: the lease term of the one instance allowed to write for it.
-- A new writer raises the term here before it writes; every write of an exchange's feed runs in a
-- transaction that first reads the term FOR SHARE and gives up if it is not its own. So the
-- claim waits for the old writer's transactions in flight, and after it no write of an old,
-- paused or partitioned writer can commit (a fencing token, on top of the lease in Redis).
CREATE TABLE writer_fences (
    exchange_id bigint PRIMARY KEY REFERENCES exchanges (id),
    term        bigint NOT NULL CONSTRAINT writer_fences_term CHECK (term > 0),
    holder      text NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now()
);
