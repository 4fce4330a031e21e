-- What a reauthorizationRequired needs to decide whether notifications may have been missed
-- (services/renewer/lifecycle.py may_have_missed):
--   authorized_until: expiry of the access token the subscription was created or last PATCHed with; Graph
--                     pauses delivery once it passes unanswered. NULL: not known (rows from before this column).
--   reauth_failed_at: when a PATCH of this subscription first failed since its last success.
ALTER TABLE subscriptions ADD COLUMN authorized_until timestamptz;
ALTER TABLE subscriptions ADD COLUMN reauth_failed_at timestamptz;
