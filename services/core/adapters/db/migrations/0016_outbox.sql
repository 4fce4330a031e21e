-- One transactional outbox for every event published after a database change: the event is written here in
-- the transaction that makes the change, published after the commit (at once by the writer, else by the
-- relay), and marked. `value` is the record exactly as it goes to Kafka, so nothing is rebuilt from other
-- tables; `event_id` is unique, so a redelivered change does not queue a second event.
CREATE TABLE outbox (
    outbox_id    bigserial PRIMARY KEY,
    topic        text NOT NULL,
    key          text NOT NULL,
    event_id     uuid NOT NULL UNIQUE,
    value        bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    lease_until  timestamptz,
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (outbox_id) WHERE published_at IS NULL;
-- Per-key order: "is an older row of this key still unpublished?"
CREATE INDEX outbox_unpublished_key ON outbox (topic, key, outbox_id) WHERE published_at IS NULL;
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
