-- Sending mail from the application (docs/design.md#sends). A send is stored, with its idempotency key and
-- the internetMessageId mailsync gives the message, before any call to Graph; the renewer's worker claims it
-- with a lease, calls Graph with no transaction open and records the outcome in a second transaction.
CREATE TABLE sends (
    send_id             uuid PRIMARY KEY,
    account_id          text NOT NULL,
    user_id             text NOT NULL,
    connection_id       uuid NOT NULL REFERENCES mailbox_connections ON DELETE CASCADE,
    idempotency_key     text NOT NULL,
    internet_message_id text NOT NULL UNIQUE,
    to_addresses        text[] NOT NULL,
    cc_addresses        text[] NOT NULL DEFAULT '{}',
    recipient_count     integer NOT NULL,
    subject             text NOT NULL DEFAULT '',
    body                text,  -- kept only until the send is decided (sent or failed), then cleared
    body_type           text NOT NULL CHECK (body_type IN ('text', 'html')),
    status              text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sent', 'failed')),
    error               text,
    -- A call to Graph began and its answer is not recorded (a crash, a lost answer, a 5xx): the message is
    -- looked up by internet_message_id before anything is sent again.
    in_doubt            boolean NOT NULL DEFAULT false,
    attempts            integer NOT NULL DEFAULT 0,
    attempt_started_at  timestamptz,
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    lease_until         timestamptz,
    sent_at             timestamptz,
    published_at        timestamptz,  -- send.completed / send.failed acknowledged by Kafka
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX sends_due ON sends (next_attempt_at) WHERE status = 'queued';
CREATE INDEX sends_unpublished ON sends (updated_at) WHERE status <> 'queued' AND published_at IS NULL;
CREATE INDEX sends_recent ON sends (connection_id, sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX sends_account ON sends (account_id);

-- The engagement a send became (its Sent Items copy, matched through the normal path).
ALTER TABLE engagements ADD COLUMN send_id uuid;
