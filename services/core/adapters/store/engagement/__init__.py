"""The engagement aggregate: engagements and their links, match_decisions, and the reads the pages summarise."""
