"""sync_jobs: back-syncs (asked for by the user or the API) and back-fills (queued by a connect)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from services.core.store.base import Repository, in_scope


class SyncJobs(Repository):
    async def queue_backsync(self, connection_id: str, account_id: str | None, *, since: datetime,
                             until: datetime, dry_run: bool) -> str | None:
        """The job's id; None when there is no such connection (in the account)."""
        job_id = await self._db.fetchval(
            f"""INSERT INTO sync_jobs (connection_id, kind, since, until, dry_run)
                SELECT connection_id, 'backsync', $2, $3, $4 FROM mailbox_connections
                 WHERE connection_id = $1::uuid AND {in_scope("account_id", 5)}
                RETURNING job_id""", connection_id, since, until, dry_run, account_id)  # noqa: S608
        return str(job_id) if job_id is not None else None

    async def queue_backfill(self, connection_id: str, since: datetime, until: datetime) -> None:
        await self._db.execute("INSERT INTO sync_jobs (connection_id, kind, since, until)"
                               " VALUES ($1::uuid, 'backfill', $2, $3)", connection_id, since, until)

    async def in_account(self, job_id: str, account_id: str | None) -> asyncpg.Record | None:
        """Any job of a connection in the account (the API's back-sync progress)."""
        row: asyncpg.Record | None = await self._db.fetchrow(
            f"""SELECT j.* FROM sync_jobs j JOIN mailbox_connections c ON c.connection_id = j.connection_id
                 WHERE j.job_id = $1::uuid AND {in_scope("c.account_id", 2)}""",  # noqa: S608
            job_id, account_id)
        return row

    async def users_backsync(self, job_id: str, user_id: str, account_id: str) -> asyncpg.Record | None:
        """A back-sync of the user's own mailbox (the settings page's progress bar)."""
        row: asyncpg.Record | None = await self._db.fetchrow(
            """SELECT j.* FROM sync_jobs j JOIN mailbox_connections c ON c.connection_id = j.connection_id
                WHERE j.job_id = $1::uuid AND j.kind = 'backsync' AND c.user_id = $2 AND c.account_id = $3""",
            job_id, user_id, account_id)
        return row

    async def latest_backsync(self, connection_id: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._db.fetchrow(
            "SELECT * FROM sync_jobs WHERE connection_id = $1::uuid AND kind = 'backsync'"
            " ORDER BY created_at DESC LIMIT 1", connection_id)
        return row

    async def estimate_range(self, job_id: str, connection_id: str | None) -> asyncpg.Record | None:
        """(since, until) of an estimate (a dry-run back-sync) of the connection."""
        row: asyncpg.Record | None = await self._db.fetchrow(
            "SELECT since, until FROM sync_jobs WHERE job_id = $1::uuid"
            " AND connection_id = $2::uuid AND dry_run", job_id, connection_id)
        return row
