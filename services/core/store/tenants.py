"""tenant_connections (the account's organisation-wide connection) and shared_mailboxes, as the API and the
admin page change and read them (the enrolment passes are still in services/core/tenant.py)."""

from __future__ import annotations

import asyncpg

from services.core.store.base import Repository

_COLUMNS = ("tenant_connection_id, account_id, tenant_id, status, reason, error_code, verified_domains, "
            "consented_at")


class TenantConnections(Repository):
    async def of_account(self, account_id: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._db.fetchrow(
            f"SELECT {_COLUMNS} FROM tenant_connections WHERE account_id = $1", account_id)  # noqa: S608
        return row

    async def panel_row(self, account_id: str) -> asyncpg.Record | None:
        """What /admin/email's organisation-wide panel shows."""
        row: asyncpg.Record | None = await self._db.fetchrow(
            "SELECT tenant_connection_id, tenant_id, status, reason, error_code, consented_at, last_synced_at"
            " FROM tenant_connections WHERE account_id = $1", account_id)
        return row

    async def open(self, account_id: str, tenant_id: str, reason: str) -> asyncpg.Record:
        """Create the account's tenant connection or reopen it: the tenant may change only while no consent
        holds (pending_consent, disconnected); a disconnected one waits for consent again."""
        row: asyncpg.Record = await self._db.fetchrow(
            f"""INSERT INTO tenant_connections (account_id, tenant_id, reason) VALUES ($1, $2, $3)
                ON CONFLICT (account_id) DO UPDATE SET
                    tenant_id = CASE WHEN tenant_connections.status IN ('pending_consent', 'disconnected')
                                     THEN $2 ELSE tenant_connections.tenant_id END,
                    status = CASE WHEN tenant_connections.status = 'disconnected' THEN 'pending_consent'
                                  ELSE tenant_connections.status END,
                    reason = CASE WHEN tenant_connections.status IN ('pending_consent', 'disconnected') THEN $3
                                  ELSE tenant_connections.reason END,
                    error_code = CASE WHEN tenant_connections.status IN ('pending_consent', 'disconnected')
                                      THEN NULL ELSE tenant_connections.error_code END,
                    updated_at = now()
                RETURNING {_COLUMNS}""", account_id, tenant_id, reason)  # noqa: S608
        return row

    async def sync_soon(self, account_id: str) -> None:
        """The tenant connection's next pass, now."""
        await self._db.execute("UPDATE tenant_connections SET next_sync_at = now() WHERE account_id = $1",
                               account_id)


class SharedMailboxes(Repository):
    async def add(self, account_id: str, address: str) -> str:
        mailbox_id = await self._db.fetchval(
            """INSERT INTO shared_mailboxes (account_id, address) VALUES ($1, $2)
               ON CONFLICT (account_id, address) DO UPDATE SET address = excluded.address
               RETURNING mailbox_id""", account_id, address)
        return str(mailbox_id)

    async def remove(self, mailbox_id: str, account_id: str) -> bool:
        gone = await self._db.fetchval("DELETE FROM shared_mailboxes WHERE mailbox_id = $1::uuid AND account_id = $2"
                                       " RETURNING mailbox_id", mailbox_id, account_id)
        return gone is not None
