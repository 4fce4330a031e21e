-- The tenant-wide connection's status on mailsync.connection-status.v1 (tenant_connection.status, key
-- tenant_connection_id): each change is written here in the transaction that makes it, and published after
-- the commit (at once when the writer can, else by the renewer's relay), so a crash loses none and a
-- republish carries the same event_id.
CREATE TABLE tenant_status_outbox (
    outbox_id            bigserial PRIMARY KEY,
    tenant_connection_id uuid NOT NULL REFERENCES tenant_connections ON DELETE CASCADE,
    account_id           text NOT NULL,
    tenant_id            text NOT NULL,
    status               text NOT NULL,
    reason               text,
    error_code           text,
    event_id             uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    created_at           timestamptz NOT NULL DEFAULT now(),
    lease_until          timestamptz,
    published_at         timestamptz
);
CREATE INDEX tenant_status_outbox_unpublished ON tenant_status_outbox (outbox_id) WHERE published_at IS NULL;
