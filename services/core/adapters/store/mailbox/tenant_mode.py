"""The rows of mailbox_connections a tenant-wide connection enrols (mode = 'tenant') and gives back to their
users: part of the mailbox aggregate, which alone writes mailbox_connections."""

from __future__ import annotations

import asyncpg

from services.core.adapters.store.base import Repository


class TenantModeConnections(Repository):
    """The rows of mailbox_connections a tenant connection enrols (mode = 'tenant') and gives back."""

    async def enrolled(self, tenant_connection_id: str) -> dict[str, asyncpg.Record]:
        """(connection_id, status) by user_id, whatever their status."""
        rows = await self._db.fetch("SELECT user_id, connection_id, status FROM mailbox_connections"
                                    " WHERE tenant_connection_id = $1::uuid AND mode = 'tenant'",
                                    tenant_connection_id)
        return {r["user_id"]: r for r in rows}

    async def connected(self, tenant_connection_id: str) -> list[str]:
        rows = await self._db.fetch("SELECT connection_id FROM mailbox_connections WHERE tenant_connection_id ="
                                    " $1::uuid AND mode = 'tenant' AND status = 'connected'", tenant_connection_id)
        return [str(r["connection_id"]) for r in rows]

    async def enrol(self, *, account_id: str, user_id: str, tenant_id: str, graph_user_id: str, address: str,
                    aliases: list[str], tenant_connection_id: str, shared_mailbox_id: str | None) -> str:
        """The user's (or shared mailbox's) row in tenant mode: app tokens from now on, its own tokens wiped,
        polled at once. Returns its connection_id."""
        value = await self._db.fetchval(
            """INSERT INTO mailbox_connections (account_id, user_id, tenant_id, graph_user_id, mailbox_address,
                                                mailbox_addresses, connected_at, mode, tenant_connection_id,
                                                shared_mailbox_id, next_poll_at)
               VALUES ($1, $2, $3, $4, $5, $6, now(), 'tenant', $7::uuid, $8::uuid, now())
               ON CONFLICT (user_id) DO UPDATE SET tenant_id = $3, graph_user_id = $4, mailbox_address = $5,
                      mailbox_addresses = $6, connected_at = now(), mode = 'tenant', tenant_connection_id = $7::uuid,
                      shared_mailbox_id = $8::uuid, access_token_enc = NULL, refresh_token_enc = NULL,
                      access_expires_at = NULL, refresh_lease_until = NULL, next_poll_at = now(),
                      subscribe_failures = 0, subscribe_retry_at = NULL, updated_at = now()
               RETURNING connection_id""",
            account_id, user_id, tenant_id, graph_user_id, address, aliases, tenant_connection_id, shared_mailbox_id)
        return str(value)

    async def lock_enrolled(self, connection_id: str) -> asyncpg.Record | None:
        """(tenant_connection_id, user_id, account_id) of a tenant-mode connection, its row locked for the
        caller's transaction; None for any other connection."""
        row: asyncpg.Record | None = await self._db.fetchrow(
            "SELECT tenant_connection_id::text, user_id, account_id FROM mailbox_connections"
            " WHERE connection_id = $1::uuid AND mode = 'tenant' AND tenant_connection_id IS NOT NULL FOR UPDATE",
            connection_id)
        return row

    async def own_connected(self, user_id: str) -> asyncpg.Record | None:
        """(connection_id, graph_user_id) of the user's own (delegated) connection while it is connected."""
        row: asyncpg.Record | None = await self._db.fetchrow(
            "SELECT connection_id, graph_user_id FROM mailbox_connections WHERE user_id = $1 AND mode = 'user'"
            " AND status = 'connected'", user_id)
        return row

    async def back_to_user_mode(self, connection_id: str) -> str | None:
        """The row leaves tenant mode (a later sign-in of the user works as usual); its graph_user_id."""
        value = await self._db.fetchval(
            """UPDATE mailbox_connections SET mode = 'user', tenant_connection_id = NULL, updated_at = now()
                WHERE connection_id = $1::uuid RETURNING graph_user_id""", connection_id)
        return str(value) if value is not None else None
