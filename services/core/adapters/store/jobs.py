"""sync_jobs: back-syncs (asked for by the user or the API) and back-fills (queued by a connect), and the
renewer's run of them: claimed under a lease, progress stored after every page, finished."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import asyncpg

from services.core.adapters.store.base import Repository, in_scope


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

    async def progress(self, job_id: str) -> asyncpg.Record | None:
        """status, messages_seen, engagements_created, estimated_total, error (`mailsync backsync` follows it)."""
        row: asyncpg.Record | None = await self._db.fetchrow(
            "SELECT status, messages_seen, engagements_created, estimated_total, error FROM sync_jobs"
            " WHERE job_id = $1::uuid", job_id)
        return row

    # --- the renewer's run of a job ---

    async def claim_next(self, lease: timedelta) -> asyncpg.Record | None:
        """The next job to run, leased: back-fills (a new or reconnected mailbox) before requested back-syncs,
        oldest first, and never a second one for a mailbox that has one running (Graph's per-mailbox budget)."""
        row: asyncpg.Record | None = await self._db.fetchrow(
            """UPDATE sync_jobs SET status = 'running', lease_until = now() + $1::interval, updated_at = now()
                WHERE job_id = (SELECT j.job_id FROM sync_jobs j
                                 WHERE j.status IN ('queued', 'running')
                                   AND (j.lease_until IS NULL OR j.lease_until < now())
                                   AND NOT EXISTS (SELECT 1 FROM sync_jobs r
                                                    WHERE r.connection_id = j.connection_id AND r.job_id <> j.job_id
                                                      AND r.status = 'running' AND r.lease_until >= now())
                                 ORDER BY j.kind = 'backsync', j.created_at LIMIT 1 FOR UPDATE OF j SKIP LOCKED)
            RETURNING *""", lease)
        return row

    async def get(self, job_id: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._db.fetchrow("SELECT * FROM sync_jobs WHERE job_id = $1::uuid",
                                                             job_id)
        return row

    async def record_progress(self, job_id: str, *, window_start: datetime, next_link: str | None, seen: int,
                              estimate: int, with_contacts: int, lease: timedelta) -> None:
        """The cursor after a page (a crashed job resumes from it), the lease extended."""
        await self._db.execute(
            """UPDATE sync_jobs SET window_start = $2, next_link = $3, messages_seen = $4, estimated_total = $5,
                      lease_until = now() + $6::interval, updated_at = now(),
                      estimated_with_contacts = CASE WHEN dry_run THEN $7::integer END WHERE job_id = $1::uuid""",
            job_id, window_start, next_link, seen, estimate, lease, with_contacts)

    async def release(self, job_id: str) -> None:
        """The renewer is stopping: another replica may resume the job at once."""
        await self._db.execute("UPDATE sync_jobs SET lease_until = NULL WHERE job_id = $1::uuid", job_id)

    async def complete(self, job_id: str) -> None:
        await self._db.execute(
            "UPDATE sync_jobs SET status = 'done', estimated_total = messages_seen, lease_until = NULL,"
            " updated_at = now() WHERE job_id = $1::uuid", job_id)

    async def fail(self, job_id: str, error: str) -> None:
        await self._db.execute("UPDATE sync_jobs SET status = 'failed', error = $2, lease_until = NULL,"
                               " updated_at = now() WHERE job_id = $1::uuid", job_id, error)

    async def known_contacts(self, account_id: str, addresses: Sequence[str]) -> set[str]:
        """Which of these addresses are a contact's in the account (the estimate's one read of the directory's
        contact_addresses per listing page)."""
        rows = await self._db.fetch(
            "SELECT DISTINCT address FROM contact_addresses WHERE account_id = $1 AND address = ANY($2::text[])",
            account_id, list(addresses))
        return {str(r["address"]) for r in rows}

    async def add_engagements_created(self, by_job: Mapping[str, int]) -> None:
        """Engagements a back-fill or back-sync job's messages created, added to its count."""
        if by_job:
            await self._db.executemany(
                "UPDATE sync_jobs SET engagements_created = engagements_created + $2 WHERE job_id::text = $1",
                sorted(by_job.items()))
