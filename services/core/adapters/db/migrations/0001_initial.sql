-- Directory (mirrored from crm.directory.v1), connections, subscriptions, engagements, decisions.
-- Every table that holds tenant data carries account_id, and every lookup filters on it.

CREATE TABLE accounts (
    account_id      text PRIMARY KEY,
    name            text NOT NULL DEFAULT '',
    domain_matching boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    user_id    text PRIMARY KEY,
    account_id text NOT NULL REFERENCES accounts ON DELETE CASCADE,
    email      text NOT NULL,
    deleted_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX users_account ON users (account_id);

-- Every address a user sends or receives as: primary, directory aliases, Graph proxyAddresses.
CREATE TABLE user_addresses (
    user_id    text NOT NULL REFERENCES users ON DELETE CASCADE,
    account_id text NOT NULL,
    address    text NOT NULL,
    source     text NOT NULL CHECK (source IN ('primary', 'alias', 'graph')),
    PRIMARY KEY (user_id, address, source)
);
CREATE INDEX user_addresses_lookup ON user_addresses (account_id, address);

CREATE TABLE clients (
    client_id  text PRIMARY KEY,
    account_id text NOT NULL REFERENCES accounts ON DELETE CASCADE,
    name       text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE client_domains (
    client_id  text NOT NULL REFERENCES clients ON DELETE CASCADE,
    account_id text NOT NULL,
    domain     text NOT NULL,
    PRIMARY KEY (client_id, domain)
);
CREATE INDEX client_domains_lookup ON client_domains (account_id, domain);

CREATE TABLE contacts (
    contact_id text PRIMARY KEY,
    account_id text NOT NULL REFERENCES accounts ON DELETE CASCADE,
    client_id  text,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE contact_addresses (
    contact_id text NOT NULL REFERENCES contacts ON DELETE CASCADE,
    account_id text NOT NULL,
    address    text NOT NULL,
    is_primary boolean NOT NULL,
    PRIMARY KEY (contact_id, address)
);
CREATE INDEX contact_addresses_lookup ON contact_addresses (account_id, address);

CREATE TABLE blocklist_entries (
    account_id text NOT NULL REFERENCES accounts ON DELETE CASCADE,
    entry      text NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('address', 'domain')),
    PRIMARY KEY (account_id, entry)
);

CREATE TABLE mailbox_connections (
    connection_id     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id        text NOT NULL,
    user_id           text NOT NULL UNIQUE,
    tenant_id         text,
    graph_user_id     text,
    mailbox_address   text,
    mailbox_addresses text[] NOT NULL DEFAULT '{}',  -- from Graph proxyAddresses, normalised
    status            text NOT NULL DEFAULT 'never_connected' CHECK (status IN
                      ('never_connected', 'connected', 'reconnect_required', 'consent_required', 'disconnected')),
    reason            text,
    error_code        text,
    scopes            text[] NOT NULL DEFAULT '{}',
    -- Tokens: AES-GCM ciphertext; the key id travels inside each blob so keys can rotate.
    access_token_enc  bytea,
    refresh_token_enc bytea,
    access_expires_at timestamptz,
    connected_at      timestamptz,
    last_synced_at    timestamptz,
    status_changed_at timestamptz NOT NULL DEFAULT now(),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mailbox_connections_account ON mailbox_connections (account_id);

CREATE TABLE connection_events (
    id            bigserial PRIMARY KEY,
    connection_id uuid NOT NULL REFERENCES mailbox_connections ON DELETE CASCADE,
    status        text NOT NULL,
    reason        text,
    error_code    text,
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX connection_events_by_connection ON connection_events (connection_id, at);

CREATE TABLE subscriptions (
    subscription_id text PRIMARY KEY,
    connection_id   uuid NOT NULL REFERENCES mailbox_connections ON DELETE CASCADE,
    account_id      text NOT NULL,
    tenant_id       text NOT NULL DEFAULT '',
    resource        text NOT NULL,
    client_state    text NOT NULL,
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    renewed_at      timestamptz
);
CREATE INDEX subscriptions_expiry ON subscriptions (expires_at);
CREATE INDEX subscriptions_connection ON subscriptions (connection_id);

CREATE TABLE oauth_states (
    state_id      text PRIMARY KEY,
    user_id       text NOT NULL,
    account_id    text NOT NULL,
    code_verifier text NOT NULL,
    login_hint    text,
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz
);

CREATE TABLE engagements (
    engagement_id       uuid PRIMARY KEY,
    account_id          text NOT NULL,
    internet_message_id text NOT NULL,
    conversation_id     text NOT NULL DEFAULT '',
    subject             text NOT NULL DEFAULT '',
    direction           text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    occurred_at         timestamptz NOT NULL,
    participants        jsonb NOT NULL,
    source              text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    published_at        timestamptz,  -- NULL until engagement.created was acknowledged by Kafka
    UNIQUE (account_id, internet_message_id)
);

CREATE TABLE engagement_mailboxes (
    engagement_id uuid NOT NULL REFERENCES engagements ON DELETE CASCADE,
    user_id       text NOT NULL,
    connection_id uuid NOT NULL,
    message_id    text NOT NULL,
    folder        text NOT NULL,
    seen_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (engagement_id, user_id)
);

CREATE TABLE engagement_contacts (
    engagement_id uuid NOT NULL REFERENCES engagements ON DELETE CASCADE,
    contact_id    text NOT NULL,
    account_id    text NOT NULL,
    occurred_at   timestamptz NOT NULL,  -- copied so the timeline is one index scan
    PRIMARY KEY (engagement_id, contact_id)
);
CREATE INDEX engagement_contacts_timeline ON engagement_contacts (contact_id, occurred_at DESC, engagement_id DESC);

CREATE TABLE engagement_clients (
    engagement_id uuid NOT NULL REFERENCES engagements ON DELETE CASCADE,
    client_id     text NOT NULL,
    account_id    text NOT NULL,
    PRIMARY KEY (engagement_id, client_id)
);

-- Why each message seen in each mailbox is or is not an engagement; participant addresses kept
-- (never bodies) so mail can be re-matched when a contact appears later.
CREATE TABLE match_decisions (
    user_id             text NOT NULL,
    message_key         text NOT NULL,  -- internetMessageId, or "id:" + Graph id when it has none
    account_id          text NOT NULL,
    connection_id       uuid NOT NULL,
    message_id          text NOT NULL,
    internet_message_id text,
    decision            text NOT NULL,
    reasons             jsonb NOT NULL,
    folder              text,
    direction           text,
    participants        jsonb NOT NULL DEFAULT '[]',
    occurred_at         timestamptz,
    engagement_id       uuid,
    source              text NOT NULL,
    decided_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, message_key)
);
CREATE INDEX match_decisions_imid ON match_decisions (account_id, internet_message_id);
CREATE INDEX match_decisions_message ON match_decisions (connection_id, message_id);
