-- Tenant-wide connection (application permissions, one administrator consent per organisation).
-- A tenant-mode mailbox is an ordinary mailbox_connections row (mode = 'tenant') whose tokens come from
-- the app credential instead of a stored refresh token, so fetch, subscribe, renew and poll run unchanged.

CREATE TABLE tenant_connections (
    tenant_connection_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id        text NOT NULL UNIQUE,
    tenant_id         text NOT NULL,  -- fixed at creation: the admin callback refuses any other tenant
    status            text NOT NULL DEFAULT 'pending_consent' CHECK (status IN
                      ('pending_consent', 'connected', 'consent_revoked', 'disconnected')),
    reason            text,
    error_code        text,
    consented_at      timestamptz,
    verified_domains  text[] NOT NULL DEFAULT '{}',
    sync_lease_until  timestamptz,  -- one replica enrols at a time
    next_sync_at      timestamptz NOT NULL DEFAULT now(),
    last_synced_at    timestamptz,
    status_changed_at timestamptz NOT NULL DEFAULT now(),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenant_connections_due ON tenant_connections (next_sync_at) WHERE status = 'connected';

-- Admin consent states: signed, single-use, expiring; the link travels between browsers, so no cookie.
CREATE TABLE tenant_consent_states (
    state_id             text PRIMARY KEY,
    tenant_connection_id uuid NOT NULL REFERENCES tenant_connections ON DELETE CASCADE,
    account_id           text NOT NULL,
    tenant_id            text NOT NULL,
    expires_at           timestamptz NOT NULL,
    used_at              timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenant_consent_states_expiry ON tenant_consent_states (expires_at);

-- Shared mailboxes the account names through the API (support@, sales@): never discovered, only named.
CREATE TABLE shared_mailboxes (
    mailbox_id   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id   text NOT NULL,
    address      text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, address)
);
CREATE INDEX shared_mailboxes_lookup ON shared_mailboxes (account_id, address);

-- What the tenant connection decided for each mailbox: enrolled, out_of_scope (the tenant's application
-- access policy excludes it; rechecked rarely, never in a loop) or failed (with the reason).
CREATE TABLE tenant_mailboxes (
    tenant_connection_id uuid NOT NULL REFERENCES tenant_connections ON DELETE CASCADE,
    user_id      text NOT NULL,  -- the directory user, or 'shared:<mailbox_id>'
    account_id   text NOT NULL,
    state        text NOT NULL CHECK (state IN ('enrolled', 'out_of_scope', 'failed')),
    reason       text,
    checked_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_connection_id, user_id)
);

ALTER TABLE mailbox_connections ADD COLUMN mode text NOT NULL DEFAULT 'user' CHECK (mode IN ('user', 'tenant'));
ALTER TABLE mailbox_connections ADD COLUMN tenant_connection_id uuid
    REFERENCES tenant_connections ON DELETE SET NULL;
ALTER TABLE mailbox_connections ADD COLUMN shared_mailbox_id uuid;
CREATE INDEX mailbox_connections_tenant ON mailbox_connections (tenant_connection_id)
    WHERE tenant_connection_id IS NOT NULL;
