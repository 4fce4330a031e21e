"""`mailsync backsync`: queue a back-sync (the renewer runs it) and print its progress until it ends."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import asyncpg

from services.core.config import Settings


async def follow_backsync(settings: Settings, connection: str, since: datetime, until: datetime,
                          dry_run: bool, *, poll_s: float = 1.0) -> int:
    try:
        connection_id = str(uuid.UUID(connection))
    except ValueError:
        print(f"mailsync backsync: {connection!r} is not a connection id")
        return 2
    conn = await asyncpg.connect(settings.database_url)
    try:
        status = await conn.fetchval("SELECT status FROM mailbox_connections WHERE connection_id = $1::uuid",
                                     connection_id)
        if status is None:
            print(f"mailsync backsync: no connection {connection_id}")
            return 2
        if status != "connected":
            print(f"mailsync backsync: the mailbox is {status}; reconnect it first")
            return 2
        job_id = await conn.fetchval(
            "INSERT INTO sync_jobs (connection_id, kind, since, until, dry_run)"
            " VALUES ($1::uuid, 'backsync', $2, $3, $4) RETURNING job_id", connection_id, since, until, dry_run)
        print(f"back-sync {job_id} queued ({'dry run, ' if dry_run else ''}{since.isoformat()} → {until.isoformat()})")
        last = None
        while True:
            row = await conn.fetchrow("SELECT status, messages_seen, engagements_created, estimated_total, error"
                                      " FROM sync_jobs WHERE job_id = $1", job_id)
            line = (f"{row['status']}: {row['messages_seen']} messages seen of ~{row['estimated_total'] or '?'},"
                    f" {row['engagements_created']} engagements created")
            if line != last:
                print(line, flush=True)
                last = line
            if row["status"] in ("done", "failed", "cancelled"):
                if row["error"]:
                    print(f"error: {row['error']}")
                return 0 if row["status"] == "done" else 1
            await asyncio.sleep(poll_s)
    finally:
        await conn.close()
