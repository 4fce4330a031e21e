"""What the settings page summarises of engagements and match decisions (reads only; the matcher writes them)."""

from __future__ import annotations

import asyncpg

from services.core.store.base import Repository


class Activity(Repository):
    async def poll_finds(self, connection_id: str) -> asyncpg.Record:
        """(found, matched): messages the polls of the last 24 hours found that notifications had not."""
        row: asyncpg.Record = await self._db.fetchrow(
            "SELECT count(*) AS found, count(*) FILTER (WHERE decision = 'matched') AS matched FROM match_decisions"
            " WHERE connection_id = $1::uuid AND source = 'delta' AND decided_at > now() - interval '24 hours'",
            connection_id)
        return row

    async def counts(self, user_id: str, account_id: str) -> asyncpg.Record:
        """(day, week): engagements seen in the user's mailbox in the last 24 hours and 7 days."""
        row: asyncpg.Record = await self._db.fetchrow(
            """SELECT count(*) FILTER (WHERE m.seen_at > now() - interval '24 hours') AS day, count(*) AS week
                 FROM engagement_mailboxes m JOIN engagements e ON e.engagement_id = m.engagement_id
                WHERE m.user_id = $1 AND e.account_id = $2 AND m.seen_at > now() - interval '7 days'""",
            user_id, account_id)
        return row

    async def recent(self, user_id: str, account_id: str, limit: int = 5) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._db.fetch(
            """SELECT e.subject, e.direction, e.occurred_at FROM engagement_mailboxes m
                 JOIN engagements e ON e.engagement_id = m.engagement_id
                WHERE m.user_id = $1 AND e.account_id = $2 ORDER BY m.seen_at DESC LIMIT $3""",
            user_id, account_id, limit)
        return rows
