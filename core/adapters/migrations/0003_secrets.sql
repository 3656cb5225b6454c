-- Secrets every core instance shares, made once by the database itself (gen_random_uuid draws
-- from the server's strong random source). `page_token` keys the cursors of paginated reads, so
-- a cursor names no internal id in a form a client can read, and one made by another instance
-- behind the same load balancer is still understood.
CREATE TABLE shared_secrets (
    name  text PRIMARY KEY,
    value bytea NOT NULL CONSTRAINT shared_secrets_length CHECK (length(value) >= 32)
);

INSERT INTO shared_secrets (name, value)
VALUES ('page_token', uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()));
