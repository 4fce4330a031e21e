-- Engagements a pod of the release before the outbox committed and never announced (published_at unset), taken
-- once here for the matcher's legacy drain to move into the outbox. From 0016 on nothing sets published_at, so
-- the partial indexes on it would hold every new engagement and every finished send: they go.
CREATE TABLE legacy_unannounced_engagements (
    engagement_id uuid PRIMARY KEY REFERENCES engagements ON DELETE CASCADE
);
INSERT INTO legacy_unannounced_engagements (engagement_id)
SELECT engagement_id FROM engagements WHERE published_at IS NULL;
DROP INDEX IF EXISTS engagements_unpublished;
DROP INDEX IF EXISTS sends_unpublished;
