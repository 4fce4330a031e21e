-- Disconnect wipes the tokens and sets the status first, in one transaction; the mailbox's Graph
-- subscriptions move here in that same transaction and are deleted at Graph after the commit, best effort.
-- A row here is never renewed and no notification for it is trusted (both read `subscriptions` only).
-- What Graph did not confirm stays until the renewer deletes it with a usable grant (the user connected
-- again) or its expiry at Graph has passed (then Graph has dropped it and the row is forgotten).
CREATE TABLE subscription_deletions (
    subscription_id text PRIMARY KEY,
    connection_id   uuid NOT NULL REFERENCES mailbox_connections ON DELETE CASCADE,
    account_id      text NOT NULL,
    graph_user_id   text NOT NULL DEFAULT '',  -- the mailbox the subscription watches
    resource        text NOT NULL,
    expires_at      timestamptz NOT NULL,      -- Graph drops it by then
    pending_since   timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz                -- a renewer replica is deleting it at Graph
);
CREATE INDEX subscription_deletions_connection ON subscription_deletions (connection_id);
CREATE INDEX subscription_deletions_expiry ON subscription_deletions (expires_at);
