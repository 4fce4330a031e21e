"""subscriptions and subscription_deletions as the API and the webhook's trust read them (their writes are
still in services/core/subscriptions.py and the renewer)."""

from __future__ import annotations

import asyncpg

from services.core.store.base import Repository


class Subscriptions(Repository):
    async def of_connection(self, connection_id: object, account_id: str) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._db.fetch(
            "SELECT subscription_id, resource, expires_at FROM subscriptions WHERE connection_id = $1"
            " AND account_id = $2 ORDER BY expires_at", connection_id, account_id)
        return rows

    async def pending_deletions(self, connection_id: object, account_id: str) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._db.fetch(
            "SELECT subscription_id, resource, expires_at, pending_since, attempts, last_error"
            " FROM subscription_deletions WHERE connection_id = $1 AND account_id = $2 ORDER BY pending_since",
            connection_id, account_id)
        return rows

    async def live(self, subscription_id: str) -> asyncpg.Record | None:
        """A subscription notifications may be trusted for: not pending deletion (moved to
        `subscription_deletions` by a disconnect) and its mailbox not disconnected (one created in a race
        with the disconnect is refused as well)."""
        row: asyncpg.Record | None = await self._db.fetchrow(
            "SELECT s.subscription_id, s.connection_id, s.account_id, s.tenant_id, s.client_state"
            " FROM subscriptions s JOIN mailbox_connections c ON c.connection_id = s.connection_id"
            " WHERE s.subscription_id = $1 AND c.status <> 'disconnected'", subscription_id)
        return row
