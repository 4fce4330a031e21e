"""mailbox_connections: one row per user's mailbox, and its status history (connection_events). Its sealed
tokens are services/core/adapters/store/mailbox/tokens.py's."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.core.adapters.store.base import Repository, in_scope


@dataclass(frozen=True)
class Connection:
    connection_id: str
    account_id: str
    user_id: str
    tenant_id: str | None
    graph_user_id: str | None
    mailbox_address: str | None
    mailbox_addresses: tuple[str, ...]
    status: str

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Connection:
        return cls(
            connection_id=str(row["connection_id"]), account_id=row["account_id"], user_id=row["user_id"],
            tenant_id=row["tenant_id"], graph_user_id=row["graph_user_id"],
            mailbox_address=row["mailbox_address"], mailbox_addresses=tuple(row["mailbox_addresses"] or ()),
            status=row["status"],
        )


@dataclass(frozen=True, slots=True)
class ChangedStatus:
    """A connection's status as a change just set it."""

    connection_id: str
    user_id: str
    account_id: str
    status: str
    reason: str | None
    error_code: str | None


class MailboxConnections(Repository):
    async def get(self, connection_id: str) -> Connection | None:
        row = await self._db.fetchrow(
            "SELECT connection_id, account_id, user_id, tenant_id, graph_user_id, mailbox_address,"
            " mailbox_addresses, status FROM mailbox_connections WHERE connection_id = $1::uuid", connection_id)
        return Connection.from_row(row) if row is not None else None

    async def change_status(self, connection_id: str, status: str, reason: str | None,
                            error_code: str | None, *, signed_in: bool = False) -> ChangedStatus | None:
        """Inside the caller's transaction: the new status, only when it differs from the current one, and its
        line in the connection's history. None when nothing changed (or no such connection). The row stays
        locked until the commit, so one connection's changes follow one another.

        A disconnected connection stays disconnected until a sign-in or an enrolment connects it (`signed_in`):
        a failure met by a call that was already under way when the user disconnected (a token refresh answered
        invalid_grant, the subscription DELETE answered 401) must not ask them to reconnect a mailbox they
        let go, nor a coverage check mark it connected again."""
        row = await self._db.fetchrow(
            """UPDATE mailbox_connections SET status = $2, reason = $3, error_code = $4,
                      status_changed_at = now(), updated_at = now()
                WHERE connection_id = $1::uuid
                  AND (status <> 'disconnected' OR $5)
                  AND (status, coalesce(reason, ''), coalesce(error_code, ''))
                      IS DISTINCT FROM ($2, coalesce($3, ''), coalesce($4, ''))
            RETURNING connection_id, user_id, account_id, status, reason, error_code""",
            connection_id, status, reason, error_code, signed_in)
        if row is None:
            return None
        await self._db.execute(
            "INSERT INTO connection_events (connection_id, status, reason, error_code) VALUES ($1, $2, $3, $4)",
            row["connection_id"], row["status"], row["reason"], row["error_code"])
        return ChangedStatus(str(row["connection_id"]), row["user_id"], row["account_id"], row["status"],
                             row["reason"], row["error_code"])

    async def view_row(self, user_id: str, account_id: str | None) -> asyncpg.Record | None:
        """The user's connection as the API shows it."""
        row: asyncpg.Record | None = await self._db.fetchrow(
            f"""SELECT c.connection_id, c.user_id, c.account_id, c.status, c.reason, c.error_code, c.scopes,
                      c.connected_at, c.last_synced_at, c.mailbox_address, c.status_changed_at, c.mode
                 FROM mailbox_connections c WHERE c.user_id = $1 AND {in_scope("c.account_id", 2)}""",  # noqa: S608
            user_id, account_id)
        return row

    async def user_of(self, connection_id: str, account_id: str | None) -> str | None:
        value = await self._db.fetchval(
            f"SELECT user_id FROM mailbox_connections WHERE connection_id = $1::uuid"  # noqa: S608
            f" AND {in_scope('account_id', 2)}", connection_id, account_id)
        return str(value) if value is not None else None

    async def status_of(self, connection_id: str, account_id: str | None) -> asyncpg.Record | None:
        """connection_id and status, in the caller's account."""
        row: asyncpg.Record | None = await self._db.fetchrow(
            f"SELECT connection_id, status FROM mailbox_connections WHERE connection_id = $1::uuid"  # noqa: S608
            f" AND {in_scope('account_id', 2)}", connection_id, account_id)
        return row

    async def lock_for_disconnect(self, connection_id: str, account_id: str | None) -> asyncpg.Record | None:
        """Inside the caller's transaction: the row locked, with the access token read before the wipe."""
        row: asyncpg.Record | None = await self._db.fetchrow(
            f"""SELECT graph_user_id, access_token_enc, access_expires_at FROM mailbox_connections
                 WHERE connection_id = $1::uuid AND {in_scope("account_id", 2)} FOR UPDATE""",  # noqa: S608
            connection_id, account_id)
        return row

    async def wipe_tokens(self, connection_id: str) -> None:
        await self._db.execute(
            "UPDATE mailbox_connections SET access_token_enc = NULL, refresh_token_enc = NULL,"
            " access_expires_at = NULL, refresh_lease_until = NULL, updated_at = now()"
            " WHERE connection_id = $1::uuid",
            connection_id)

    async def poll_now(self, connection_id: str, account_id: str | None) -> bool:
        """The renewer polls the mailbox at its next tick; False when no such connection (in the account)."""
        updated = await self._db.fetchval(
            f"UPDATE mailbox_connections SET next_poll_at = now() WHERE connection_id = $1::uuid"  # noqa: S608
            f" AND {in_scope('account_id', 2)} RETURNING true", connection_id, account_id)
        return bool(updated)

    async def for_send(self, user_id: str, account_id: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._db.fetchrow(
            "SELECT connection_id, status, scopes, mailbox_address, mode FROM mailbox_connections"
            " WHERE user_id = $1 AND account_id = $2", user_id, account_id)
        return row

    async def tenant_of(self, connection_id: str) -> str | None:
        value = await self._db.fetchval(
            "SELECT tenant_id FROM mailbox_connections WHERE connection_id = $1::uuid", connection_id)
        return str(value) if value is not None else None

    async def active_mode(self, user_id: str, account_id: str) -> str | None:
        """The mode of the user's connection unless it is disconnected."""
        value = await self._db.fetchval(
            "SELECT mode FROM mailbox_connections WHERE user_id = $1 AND account_id = $2"
            " AND status <> 'disconnected'", user_id, account_id)
        return str(value) if value is not None else None

    async def id_of_user(self, user_id: str, account_id: str) -> str | None:
        value = await self._db.fetchval(
            "SELECT connection_id FROM mailbox_connections WHERE user_id = $1 AND account_id = $2",
            user_id, account_id)
        return str(value) if value is not None else None

    async def ensure(self, account_id: str, user_id: str) -> str:
        """The user's connection row, created (never_connected) when there is none."""
        value = await self._db.fetchval(
            "INSERT INTO mailbox_connections (account_id, user_id) VALUES ($1, $2)"
            " ON CONFLICT (user_id) DO UPDATE SET updated_at = now() RETURNING connection_id", account_id, user_id)
        return str(value)

    async def last_synced_at(self, user_id: str) -> datetime | None:
        """The last successful sync of the user's connection; None without one (or before its first sync)."""
        row = await self._db.fetchrow("SELECT last_synced_at FROM mailbox_connections WHERE user_id = $1", user_id)
        return row["last_synced_at"] if row is not None else None

    async def last_synced_of(self, connection_id: str) -> datetime | None:
        value: datetime | None = await self._db.fetchval(
            "SELECT last_synced_at FROM mailbox_connections WHERE connection_id = $1::uuid", connection_id)
        return value

    async def upsert_signed_in(self, *, account_id: str, user_id: str, tenant_id: str | None, graph_user_id: str,
                               address: str | None, aliases: list[str]) -> str:
        """The user's own (delegated) connection after a sign-in; returns its id."""
        value = await self._db.fetchval(
            """INSERT INTO mailbox_connections (account_id, user_id, tenant_id, graph_user_id, mailbox_address,
                                                mailbox_addresses, connected_at)
               VALUES ($1, $2, $3, $4, $5, $6, now())
               ON CONFLICT (user_id) DO UPDATE SET tenant_id = $3, graph_user_id = $4, mailbox_address = $5,
                      mailbox_addresses = $6, connected_at = now(), updated_at = now()
               RETURNING connection_id""",
            account_id, user_id, tenant_id, graph_user_id, address, aliases)
        return str(value)

    async def of_shared_mailbox(self, mailbox_id: str, account_id: str) -> asyncpg.Record | None:
        """The tenant-mode connection of a shared mailbox, with its organisation's tenant id."""
        row: asyncpg.Record | None = await self._db.fetchrow(
            "SELECT c.connection_id, t.tenant_id FROM mailbox_connections c JOIN tenant_connections t"
            " ON t.tenant_connection_id = c.tenant_connection_id WHERE c.shared_mailbox_id = $1::uuid"
            " AND c.account_id = $2 AND c.mode = 'tenant'", mailbox_id, account_id)
        return row

    async def health_table(self) -> list[asyncpg.Record]:
        """Every connection's health as `mailsync status` prints it (text columns)."""
        rows: list[asyncpg.Record] = await self._db.fetch(
            """SELECT c.connection_id::text, c.user_id, coalesce(c.mailbox_address, '') AS mailbox_address,
                      c.status, coalesce(c.error_code, '') AS error_code,
                      coalesce(to_char(c.last_synced_at, 'YYYY-MM-DD HH24:MI:SS'), 'never') AS last_synced_at,
                      coalesce((SELECT to_char(min(s.expires_at), 'YYYY-MM-DD HH24:MI')
                                  FROM subscriptions s WHERE s.connection_id = c.connection_id), 'none')
                        AS subscription_expires
                 FROM mailbox_connections c ORDER BY c.account_id, c.user_id""")
        return rows
