-- Re-matching unmatched mail when the directory learns something new: the metadata needed to
-- rebuild the decision (never bodies), and indexes to find decisions by participant address/domain.
ALTER TABLE match_decisions ADD COLUMN subject text NOT NULL DEFAULT '';
ALTER TABLE match_decisions ADD COLUMN conversation_id text NOT NULL DEFAULT '';
ALTER TABLE match_decisions ADD COLUMN participant_addresses text[] NOT NULL DEFAULT '{}';
ALTER TABLE match_decisions ADD COLUMN participant_domains text[] NOT NULL DEFAULT '{}';
CREATE INDEX match_decisions_addresses ON match_decisions USING gin (participant_addresses);
CREATE INDEX match_decisions_domains ON match_decisions USING gin (participant_domains);
CREATE INDEX match_decisions_recent ON match_decisions (account_id, occurred_at);
