"""accounts, users and user_addresses as the subscriber reads them (the directory consumer writes them)."""

from __future__ import annotations

import asyncpg

from services.core.store.base import Repository, in_scope


class Directory(Repository):
    async def ensure_account(self, account_id: str) -> None:
        await self._db.execute("INSERT INTO accounts (account_id) VALUES ($1) ON CONFLICT DO NOTHING", account_id)

    async def account_of(self, user_id: str, account_id: str | None) -> str | None:
        """The user's account if it is `account_id` (any account for None), deleted users included."""
        value = await self._db.fetchval(
            f"SELECT account_id FROM users WHERE user_id = $1 AND {in_scope('account_id', 2)}",  # noqa: S608
            user_id, account_id)
        return str(value) if value is not None else None

    async def live_account_of(self, user_id: str, account_id: str | None) -> str | None:
        """As account_of, for users not deleted."""
        value = await self._db.fetchval(
            f"SELECT account_id FROM users WHERE user_id = $1 AND deleted_at IS NULL"  # noqa: S608
            f" AND {in_scope('account_id', 2)}", user_id, account_id)
        return str(value) if value is not None else None

    async def in_account(self, user_id: str, account_id: str) -> bool:
        return bool(await self._db.fetchval(
            "SELECT true FROM users WHERE user_id = $1 AND account_id = $2", user_id, account_id))

    async def email_of(self, user_id: str, account_id: str) -> str | None:
        """The user's address in the account's directory (`users.email`), None when there is none."""
        value = await self._db.fetchval(
            "SELECT email FROM users WHERE user_id = $1 AND account_id = $2 AND deleted_at IS NULL",
            user_id, account_id)
        return str(value) if value else None

    async def addresses(self, user_id: str, account_id: str) -> list[asyncpg.Record]:
        """(address, is_primary): `users.email` and the aliases of `user.upserted`; addresses learnt from
        Graph (`source = 'graph'`) are left out."""
        rows: list[asyncpg.Record] = await self._db.fetch(
            """SELECT u.email AS address, true AS is_primary FROM users u
                WHERE u.user_id = $1 AND u.account_id = $2 AND u.deleted_at IS NULL
               UNION ALL
               SELECT a.address, false FROM user_addresses a JOIN users u ON u.user_id = a.user_id
                WHERE a.user_id = $1 AND a.account_id = $2 AND u.account_id = $2 AND u.deleted_at IS NULL
                  AND a.source IN ('primary', 'alias')""", user_id, account_id)
        return rows

    async def admins(self, account_id: str, limit: int = 3) -> list[str]:
        """The account's administrators' addresses (role admin), a few, by address."""
        rows = await self._db.fetch(
            "SELECT email FROM users WHERE account_id = $1 AND role = 'admin' AND deleted_at IS NULL"
            " ORDER BY email LIMIT $2", account_id, limit)
        return [r["email"] for r in rows]

    async def overview(self, account_id: str) -> list[asyncpg.Record]:
        """Every user of the account with their connection, and why the organisation-wide connection did not
        enrol them (out_of_scope, failed) where it did not."""
        rows: list[asyncpg.Record] = await self._db.fetch(
            """SELECT u.user_id, u.email, c.connection_id, coalesce(c.status, 'never_connected') AS status,
                      c.reason, c.error_code, c.last_synced_at, c.mode, m.state AS tenant_state,
                      m.reason AS tenant_reason
                 FROM users u LEFT JOIN mailbox_connections c ON c.user_id = u.user_id
                                                            AND c.account_id = u.account_id
                 LEFT JOIN tenant_connections t ON t.account_id = u.account_id AND t.status = 'connected'
                 LEFT JOIN tenant_mailboxes m ON m.tenant_connection_id = t.tenant_connection_id
                                             AND m.user_id = u.user_id AND m.state IN ('out_of_scope', 'failed')
                WHERE u.account_id = $1 AND u.deleted_at IS NULL ORDER BY u.email, u.user_id""", account_id)
        return rows
