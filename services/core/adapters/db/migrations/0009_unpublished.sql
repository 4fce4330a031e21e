-- Engagements whose engagement.created has not been acknowledged: the matcher's relay republishes the
-- ones left behind (a batch that failed after its commit and whose record then went elsewhere).
CREATE INDEX engagements_unpublished ON engagements (created_at) WHERE published_at IS NULL;
