"""The tenant-wide connection's tables: tenant_connections (the account's organisation-wide connection),
tenant_consent_states (its single-use consent links), tenant_mailboxes (what each enrolment pass decided per
mailbox), shared_mailboxes, and the tenant-mode rows of mailbox_connections the enrolment passes write."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from services.core.adapters.store.base import Repository

_COLUMNS = ("tenant_connection_id, account_id, tenant_id, status, reason, error_code, verified_domains, "
            "consented_at")
# What a tenant_connection.status event says (services/core/application/tenant_status.py).
_STATUS = "tenant_connection_id, account_id, tenant_id, status, reason, error_code"


class TenantConnections(Repository):
    async def of_account(self, account_id: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._db.fetchrow(
            f"SELECT {_COLUMNS} FROM tenant_connections WHERE account_id = $1", account_id)  # noqa: S608
        return row

    async def get(self, tenant_connection_id: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._db.fetchrow(
            f"SELECT {_COLUMNS} FROM tenant_connections WHERE tenant_connection_id = $1::uuid",  # noqa: S608
            tenant_connection_id)
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

    async def change_status(self, tenant_connection_id: str, status: str, reason: str | None,
                            error_code: str | None) -> asyncpg.Record | None:
        """The connection as it is now when anything differs (None when nothing does)."""
        row: asyncpg.Record | None = await self._db.fetchrow(
            f"""UPDATE tenant_connections SET status = $2, reason = $3, error_code = $4, updated_at = now(),
                       status_changed_at = CASE WHEN status <> $2 THEN now() ELSE status_changed_at END,
                       consented_at = CASE WHEN $2 = 'connected' AND status <> 'connected' THEN now()
                                           ELSE consented_at END
                 WHERE tenant_connection_id = $1::uuid
                   AND (status, coalesce(reason, ''), coalesce(error_code, ''))
                       IS DISTINCT FROM ($2, coalesce($3, ''), coalesce($4, ''))
             RETURNING {_STATUS}""", tenant_connection_id, status, reason, error_code)  # noqa: S608
        return row

    async def revoke_consent(self, tenant_connection_id: str, reason: str, error_code: str | None
                             ) -> asyncpg.Record | None:
        """consent_revoked, only from connected (one change however many passes notice the revocation)."""
        row: asyncpg.Record | None = await self._db.fetchrow(
            f"""UPDATE tenant_connections SET status = 'consent_revoked', reason = $2, error_code = $3,
                       status_changed_at = now(), updated_at = now()
                 WHERE tenant_connection_id = $1::uuid AND status = 'connected'
             RETURNING {_STATUS}""", tenant_connection_id, reason, error_code)  # noqa: S608
        return row

    async def record_verified_domains(self, tenant_connection_id: str, domains: list[str]) -> None:
        await self._db.execute("UPDATE tenant_connections SET verified_domains = $2"
                               " WHERE tenant_connection_id = $1::uuid", tenant_connection_id, domains)

    async def mark_synced(self, tenant_connection_id: str) -> None:
        await self._db.execute("UPDATE tenant_connections SET last_synced_at = now()"
                               " WHERE tenant_connection_id = $1::uuid", tenant_connection_id)

    async def sync_soon(self, account_id: str) -> None:
        """The tenant connection's next pass, now."""
        await self._db.execute("UPDATE tenant_connections SET next_sync_at = now() WHERE account_id = $1",
                               account_id)

    async def claim_due(self, limit: int, lease: timedelta, interval: timedelta) -> list[str]:
        """Connected tenant connections due an enrolment pass, claimed with a lease (one replica each)."""
        rows = await self._db.fetch(
            """UPDATE tenant_connections t SET sync_lease_until = now() + $2::interval,
                      next_sync_at = now() + $3::interval
                 FROM (SELECT tenant_connection_id FROM tenant_connections
                        WHERE status = 'connected' AND next_sync_at <= now()
                          AND (sync_lease_until IS NULL OR sync_lease_until < now())
                        ORDER BY next_sync_at LIMIT $1 FOR UPDATE SKIP LOCKED) due
                WHERE t.tenant_connection_id = due.tenant_connection_id
            RETURNING t.tenant_connection_id""", limit, lease, interval)
        return [str(r["tenant_connection_id"]) for r in rows]

    async def release(self, tenant_connection_id: str) -> None:
        await self._db.execute("UPDATE tenant_connections SET sync_lease_until = NULL"
                               " WHERE tenant_connection_id = $1::uuid", tenant_connection_id)


class TenantConsentStates(Repository):
    async def create(self, state_id: str, tenant_connection_id: str, account_id: str, tenant_id: str,
                     ttl: timedelta) -> None:
        await self._db.execute(
            """INSERT INTO tenant_consent_states (state_id, tenant_connection_id, account_id, tenant_id, expires_at)
               VALUES ($1, $2::uuid, $3, $4, now() + $5::interval)""",
            state_id, tenant_connection_id, account_id, tenant_id, ttl)

    async def use(self, state_id: str) -> asyncpg.Record | None:
        """Consume a valid, unexpired state: (tenant_connection_id, account_id, tenant_id), None if none is."""
        row: asyncpg.Record | None = await self._db.fetchrow(
            """UPDATE tenant_consent_states SET used_at = now()
                WHERE state_id = $1 AND used_at IS NULL AND expires_at > now()
            RETURNING tenant_connection_id, account_id, tenant_id""", state_id)
        return row

    async def lookup(self, state_id: str) -> asyncpg.Record | None:
        """(used_at, expires_at): why a state could not be used."""
        row: asyncpg.Record | None = await self._db.fetchrow(
            "SELECT used_at, expires_at FROM tenant_consent_states WHERE state_id = $1", state_id)
        return row

    async def void_all(self, tenant_connection_id: str) -> None:
        """Every unused consent link of the connection becomes used."""
        await self._db.execute("UPDATE tenant_consent_states SET used_at = now()"
                               " WHERE tenant_connection_id = $1::uuid AND used_at IS NULL", tenant_connection_id)


class TenantMailboxes(Repository):
    """tenant_mailboxes: per tenant connection and mailbox, what the last enrolment attempt decided."""

    async def decide(self, tenant_connection_id: str, user_id: str, account_id: str, state: str,
                     reason: str | None) -> None:
        await self._db.execute(
            """INSERT INTO tenant_mailboxes (tenant_connection_id, user_id, account_id, state, reason)
               VALUES ($1::uuid, $2, $3, $4, $5)
               ON CONFLICT (tenant_connection_id, user_id) DO UPDATE SET state = $4, reason = $5,
                      checked_at = now()""",
            tenant_connection_id, user_id, account_id, state, reason)

    async def decisions(self, tenant_connection_id: str) -> dict[str, asyncpg.Record]:
        """(state, checked_at) by user_id."""
        rows = await self._db.fetch("SELECT user_id, state, checked_at FROM tenant_mailboxes"
                                    " WHERE tenant_connection_id = $1::uuid", tenant_connection_id)
        return {r["user_id"]: r for r in rows}

    async def forget(self, tenant_connection_id: str, user_id: str) -> None:
        await self._db.execute("DELETE FROM tenant_mailboxes WHERE tenant_connection_id = $1::uuid AND user_id = $2",
                               tenant_connection_id, user_id)

    async def forget_all(self, tenant_connection_id: str) -> None:
        await self._db.execute("DELETE FROM tenant_mailboxes WHERE tenant_connection_id = $1::uuid",
                               tenant_connection_id)

    async def counts(self, tenant_connection_id: str) -> dict[str, int]:
        """How many mailboxes are in each state (enrolled, out_of_scope, failed: 0 when none)."""
        rows = await self._db.fetch("SELECT state, count(*) AS n FROM tenant_mailboxes"
                                    " WHERE tenant_connection_id = $1::uuid GROUP BY state", tenant_connection_id)
        counts = {"enrolled": 0, "out_of_scope": 0, "failed": 0}
        counts.update({r["state"]: r["n"] for r in rows})
        return counts


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

    async def of_account(self, account_id: str) -> list[asyncpg.Record]:
        """(mailbox_id, address) by address."""
        rows: list[asyncpg.Record] = await self._db.fetch(
            "SELECT mailbox_id, address FROM shared_mailboxes WHERE account_id = $1 ORDER BY address", account_id)
        return rows


class AccountUsers(Repository):
    """The account's directory users as the enrolment pass reads them (the directory consumer writes them)."""

    async def live(self, account_id: str) -> list[asyncpg.Record]:
        """(user_id, email) of every user not deleted, by user_id."""
        rows: list[asyncpg.Record] = await self._db.fetch(
            "SELECT user_id, email FROM users WHERE account_id = $1 AND deleted_at IS NULL ORDER BY user_id",
            account_id)
        return rows

