-- The renewer's work: per-folder delta cursors, a polling schedule claimed with leases, and
-- back-fill / back-sync jobs that survive a crash (their cursor is stored after every page).
ALTER TABLE mailbox_connections ADD COLUMN next_poll_at timestamptz;
ALTER TABLE mailbox_connections ADD COLUMN poll_lease_until timestamptz;
ALTER TABLE mailbox_connections ADD COLUMN last_polled_at timestamptz;
CREATE INDEX mailbox_connections_due ON mailbox_connections (next_poll_at) WHERE status = 'connected';

CREATE TABLE delta_cursors (
    connection_id uuid NOT NULL REFERENCES mailbox_connections ON DELETE CASCADE,
    folder_id     text NOT NULL,
    folder_name   text NOT NULL DEFAULT '',
    delta_link    text,
    restarts      integer NOT NULL DEFAULT 0,
    last_polled_at timestamptz,
    PRIMARY KEY (connection_id, folder_id)
);

CREATE TABLE sync_jobs (
    job_id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    connection_id       uuid NOT NULL REFERENCES mailbox_connections ON DELETE CASCADE,
    kind                text NOT NULL CHECK (kind IN ('backfill', 'backsync')),
    since               timestamptz NOT NULL,
    until               timestamptz NOT NULL,
    dry_run             boolean NOT NULL DEFAULT false,
    status              text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    window_start        timestamptz,  -- resumable cursor: windows before this are done
    next_link           text,         -- resumable cursor inside the current window
    messages_seen       integer NOT NULL DEFAULT 0,
    engagements_created integer NOT NULL DEFAULT 0,
    estimated_total     integer,
    error               text,
    lease_until         timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sync_jobs_pending ON sync_jobs (created_at) WHERE status IN ('queued', 'running');
CREATE INDEX sync_jobs_connection ON sync_jobs (connection_id, created_at);
