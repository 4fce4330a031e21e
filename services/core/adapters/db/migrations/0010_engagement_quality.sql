-- Engagement quality (issue 15): per-account privacy tier and automated-mail exclusion, a user's own
-- exclusions and role, and what each engagement keeps under its tier.

-- capture: what engagements keep and publish (metadata < subject < preview); the default keeps the subject,
-- as before. exclude_automated: bulk and machine mail never becomes an engagement.
ALTER TABLE accounts ADD COLUMN capture text NOT NULL DEFAULT 'subject'
    CHECK (capture IN ('metadata', 'subject', 'preview'));
ALTER TABLE accounts ADD COLUMN exclude_automated boolean NOT NULL DEFAULT true;

-- never_log: canonical entries, "addr@x" or "@domain". role: from user.upserted (member | admin).
ALTER TABLE users ADD COLUMN never_log text[] NOT NULL DEFAULT '{}';
ALTER TABLE users ADD COLUMN role text NOT NULL DEFAULT 'member' CHECK (role IN ('member', 'admin'));

-- An engagement keeps exactly its tier's fields: subject NULL under metadata, preview only under preview.
-- capture records the tier the row was stored (or last purged) under, so the API and the feed show
-- exactly those fields, and the purge knows which rows hold more than the account's current tier.
ALTER TABLE engagements ALTER COLUMN subject DROP NOT NULL;
ALTER TABLE engagements ALTER COLUMN subject DROP DEFAULT;
ALTER TABLE engagements ADD COLUMN preview text;
ALTER TABLE engagements ADD COLUMN capture text NOT NULL DEFAULT 'subject'
    CHECK (capture IN ('metadata', 'subject', 'preview'));
CREATE INDEX engagements_account_capture ON engagements (account_id, capture);

-- Decisions keep the subject only when the account's tier does (re-matching rebuilds mail from them).
ALTER TABLE match_decisions ALTER COLUMN subject DROP NOT NULL;
ALTER TABLE match_decisions ALTER COLUMN subject DROP DEFAULT;

-- The address of each contributing mailbox, for engagement.created mailbox_addresses[].
ALTER TABLE engagement_mailboxes ADD COLUMN mailbox_address text;
UPDATE engagement_mailboxes m SET mailbox_address = c.mailbox_address
  FROM mailbox_connections c WHERE c.connection_id = m.connection_id AND m.mailbox_address IS NULL;
