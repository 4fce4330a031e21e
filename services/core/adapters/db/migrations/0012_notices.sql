-- Notices that reach people (mailsync.notices.v1): one row per incident (a connection that needs its user
-- or an administrator), opened in the same transaction as the status change that started it and closed by
-- the one that heals it. What to publish is written to an outbox in that same transaction; a relay in the
-- renewer publishes it after the commit, so a crash can neither lose a notice nor invent a second one.
CREATE TABLE notices (
    notice_id        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    connection_id    uuid NOT NULL REFERENCES mailbox_connections ON DELETE CASCADE,
    user_id          text NOT NULL,
    account_id       text NOT NULL,
    status           text NOT NULL,
    reason           text,
    error_code       text,
    opened_at        timestamptz NOT NULL DEFAULT now(),
    last_notified_at timestamptz NOT NULL DEFAULT now(),  -- the action_required, then each reminder
    reminders        integer NOT NULL DEFAULT 0,
    resolved_at      timestamptz
);
-- At most one open incident per connection.
CREATE UNIQUE INDEX notices_open ON notices (connection_id) WHERE resolved_at IS NULL;
CREATE INDEX notices_reminders ON notices (last_notified_at) WHERE resolved_at IS NULL;

CREATE TABLE notice_outbox (
    outbox_id    bigserial PRIMARY KEY,
    notice_id    uuid NOT NULL REFERENCES notices ON DELETE CASCADE,
    user_id      text NOT NULL,
    type         text NOT NULL CHECK (type IN ('notice.action_required', 'notice.reminder', 'notice.resolved')),
    event_id     uuid NOT NULL UNIQUE,  -- stable: a republish after a crash carries the same id
    created_at   timestamptz NOT NULL DEFAULT now(),
    lease_until  timestamptz,
    published_at timestamptz
);
CREATE INDEX notice_outbox_unpublished ON notice_outbox (outbox_id) WHERE published_at IS NULL;

-- Push coverage (services/core/coverage.py) reads the last 24 h of decisions made from a notification or
-- from the poll: the renewer for every connection each minute, the pages for one connection or account.
CREATE INDEX match_decisions_coverage ON match_decisions (decided_at) WHERE source IN ('webhook', 'delta');

-- A dry-run back-sync's estimate also counts the messages that have a known contact among their participants
-- ("about 340 emails, 12 with your contacts"), stored with the cursor so a resumed estimate keeps counting.
ALTER TABLE sync_jobs ADD COLUMN estimated_with_contacts integer;
