-- The OAuth flow bound to the browser that started it and the mailbox bound to its user:
-- nonce_hash is the SHA-256 (hex) of the nonce kept in the starting browser's HttpOnly cookie;
-- signed_in_as records the mailbox a refused (mailbox_mismatch) attempt signed in with, so the page
-- can say "You signed in as X". Rows are purged a while after they expire (see oauth.purge_states).
ALTER TABLE oauth_states ADD COLUMN nonce_hash text;
ALTER TABLE oauth_states ADD COLUMN signed_in_as text;
ALTER TABLE oauth_states ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX oauth_states_expiry ON oauth_states (expires_at);
