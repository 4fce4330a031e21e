-- A connected mailbox whose subscription cannot be created (Graph refuses the notificationUrl, an outage)
-- is tried again with back-off, not on every renewer tick (services/renewer/subscriptions.py
-- ensure_subscriptions): the first failure is retried at once, later ones after 30 s, 90 s, ... up to an hour.
ALTER TABLE mailbox_connections ADD COLUMN subscribe_failures integer NOT NULL DEFAULT 0;
ALTER TABLE mailbox_connections ADD COLUMN subscribe_retry_at timestamptz;
