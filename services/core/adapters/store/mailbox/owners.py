"""Mailboxes as matching reads them (connections with their owners' addresses and mail policy), and the
matcher's mark after a batch: the mailbox aggregate's reads for matching and diagnose."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from services.core.adapters.store.base import Repository

_FOR_MATCHING = """
    SELECT c.connection_id, c.account_id, c.user_id, c.tenant_id, c.graph_user_id, c.mailbox_address,
           c.mailbox_addresses, c.status, a.account_id IS NOT NULL AS has_account, a.capture, a.exclude_automated,
           (SELECT u.never_log FROM users u WHERE u.user_id = c.user_id AND u.account_id = c.account_id) AS never_log,
           (SELECT u.email FROM users u WHERE u.user_id = c.user_id) AS directory_email,
           array(SELECT ua.address FROM user_addresses ua WHERE ua.user_id = c.user_id) AS user_addresses
      FROM mailbox_connections c LEFT JOIN accounts a ON a.account_id = c.account_id
     WHERE c.connection_id = ANY($1::uuid[])"""


class MailboxOwners(Repository):
    async def for_matching(self, connection_ids: Sequence[str]) -> list[asyncpg.Record]:
        """The connections with their account's policy columns (has_account, capture, exclude_automated), the
        owner's never_log, directory_email and user_addresses, in one read."""
        if not connection_ids:
            return []
        rows: list[asyncpg.Record] = await self._db.fetch(_FOR_MATCHING, list(connection_ids))
        return rows

    async def addresses_of(self, connection_id: str) -> asyncpg.Record | None:
        """(mailbox_addresses, mailbox_address) of a connection."""
        row: asyncpg.Record | None = await self._db.fetchrow(
            "SELECT mailbox_addresses, mailbox_address FROM mailbox_connections WHERE connection_id = $1",
            connection_id)
        return row

    async def of_user(self, user_id: str) -> asyncpg.Record | None:
        """The user's connection as diagnose explains it."""
        row: asyncpg.Record | None = await self._db.fetchrow(
            "SELECT connection_id, status, reason, last_synced_at, mailbox_addresses FROM mailbox_connections"
            " WHERE user_id = $1", user_id)
        return row

    async def status_at(self, connection_id: str, when: datetime) -> str | None:
        """The connection's status at that moment (its history)."""
        status: str | None = await self._db.fetchval(
            "SELECT status FROM connection_events WHERE connection_id = $1 AND at <= $2 ORDER BY at DESC LIMIT 1",
            connection_id, when)
        return status


class MatcherMarks(Repository):
    async def synced(self, connection_ids: Sequence[str]) -> None:
        """The mailboxes answered: their last successful sync moves."""
        if connection_ids:
            await self._db.execute(
                "UPDATE mailbox_connections SET last_synced_at = now() WHERE connection_id = ANY($1::uuid[])",
                list(connection_ids))
