"""`mailsync backsync`: queue a back-sync (the renewer runs it) and print its progress until it ends."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import asyncpg

from services.core.adapters.config import Settings
from services.core.adapters.store.jobs import SyncJobs
from services.core.adapters.store.mailbox.connections import MailboxConnections
from services.core.application.sync_requests import Refused, queue_backsync


async def follow_backsync(settings: Settings, connection: str, since: datetime, until: datetime,
                          dry_run: bool, *, poll_s: float = 1.0) -> int:
    try:
        connection_id = str(uuid.UUID(connection))
    except ValueError:
        print(f"mailsync backsync: {connection!r} is not a connection id")
        return 2
    conn = await asyncpg.connect(settings.database_url)
    try:
        jobs = SyncJobs(conn)
        found = await MailboxConnections(conn).status_of(connection_id, None)
        try:
            if found is None:
                raise Refused(404, "not_found", "no such connection")
            job_id = await queue_backsync(jobs, connection_id, None, found["status"], since=since, until=until,
                                          dry_run=dry_run)
        except Refused as refused:
            print(f"mailsync backsync: no connection {connection_id}" if refused.code == "not_found"
                  else f"mailsync backsync: {refused}")
            return 2
        print(f"back-sync {job_id} queued ({'dry run, ' if dry_run else ''}{since.isoformat()} → {until.isoformat()})")
        last = None
        while True:
            row = await jobs.progress(job_id)
            if row is None:  # deleted with its connection
                print(f"mailsync backsync: the connection {connection_id} was deleted")
                return 1
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
