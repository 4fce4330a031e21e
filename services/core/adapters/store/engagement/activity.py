"""What the pages summarise of engagements and match decisions: recent activity, what the polls found, push
coverage (reads only; the matcher writes them)."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from services.core.adapters.store.base import Repository

# Which decisions count for push coverage: from a notification (webhook) or only from the poll (delta), in the
# window, for mail received since the connection (back-fill of older mail is not push's to miss). Graph's
# receivedDateTime has whole seconds, connected_at microseconds: mail of the connection's own second counts.
_COUNTED = """d.decided_at > now() - $1::interval AND d.source IN ('webhook', 'delta')
       AND d.occurred_at >= date_trunc('second', c.connected_at)"""
_COVERAGE = """
    SELECT d.connection_id,
           count(*) FILTER (WHERE d.source = 'webhook') AS announced,
           count(*) FILTER (WHERE d.source = 'delta') AS poll_only
      FROM match_decisions d JOIN mailbox_connections c ON c.connection_id = d.connection_id
     WHERE {counted} {condition}
     GROUP BY d.connection_id""".replace("{counted}", _COUNTED)
# Every connected mailbox, with zero counts for one without decisions (its mark may have to be cleared).
_CONNECTED_COVERAGE = """
    SELECT c.connection_id, c.error_code,
           count(d.*) FILTER (WHERE d.source = 'webhook') AS announced,
           count(d.*) FILTER (WHERE d.source = 'delta') AS poll_only
      FROM mailbox_connections c
      LEFT JOIN match_decisions d ON d.connection_id = c.connection_id AND {counted}
     WHERE c.status = 'connected'
     GROUP BY c.connection_id, c.error_code""".replace("{counted}", _COUNTED)


class Activity(Repository):
    async def push_coverage(self, window: timedelta, connection_id: str) -> asyncpg.Record | None:
        """(announced, poll_only) of the connection over the window (services/core/application/coverage.py)."""
        row: asyncpg.Record | None = await self._db.fetchrow(
            _COVERAGE.format(condition="AND d.connection_id = $2::uuid"), window, connection_id)
        return row

    async def connected_push_coverage(self, window: timedelta) -> list[asyncpg.Record]:
        """(connection_id, error_code, announced, poll_only) of every connected mailbox over the window."""
        rows: list[asyncpg.Record] = await self._db.fetch(_CONNECTED_COVERAGE, window)
        return rows

    async def account_push_coverage(self, window: timedelta, account_id: str) -> list[asyncpg.Record]:
        """(connection_id, announced, poll_only) of each connection of the account over the window."""
        rows: list[asyncpg.Record] = await self._db.fetch(
            _COVERAGE.format(condition="AND c.account_id = $2"), window, account_id)
        return rows

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
