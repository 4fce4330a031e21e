"""Sync now and back-syncs: the decisions the API and the settings page share (which request is refused,
and how), over two small repository ports so a unit test can run them without PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

MAX_RANGE_DAYS = 3650


class Refused(Exception):
    """A sync or back-sync that cannot be queued; the API answers it as JSON, the settings page in words."""

    def __init__(self, http_status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.http_status, self.code = http_status, code


class PollScheduler(Protocol):
    async def poll_now(self, connection_id: str, account_id: str | None) -> bool: ...


class BacksyncQueue(Protocol):
    async def queue_backsync(self, connection_id: str, account_id: str | None, *, since: datetime,
                             until: datetime, dry_run: bool) -> str | None: ...


async def queue_sync(connections: PollScheduler, connection_id: str, account_id: str | None, status: str) -> None:
    """Sync now: the renewer polls the mailbox at its next tick."""
    if status != "connected":
        raise Refused(409, "not_connected", f"the mailbox is {status}; reconnect it first")
    if not await connections.poll_now(connection_id, account_id):
        raise Refused(404, "not_found", "no such connection")


async def queue_backsync(jobs: BacksyncQueue, connection_id: str, account_id: str | None, status: str, *,
                         since: datetime, until: datetime, dry_run: bool) -> str:
    """The one place a back-sync is queued (the API and the settings page's "Import older email"): the range
    is checked and capped at MAX_RANGE_DAYS, the mailbox must be connected. Returns the job id."""
    if since >= until:
        raise Refused(400, "bad_request", "since must be before until")
    if (until - since).days > MAX_RANGE_DAYS:
        raise Refused(400, "bad_request", f"a back-sync covers at most {MAX_RANGE_DAYS} days")
    if status != "connected":
        raise Refused(409, "not_connected", f"the mailbox is {status}; reconnect it first")
    job_id = await jobs.queue_backsync(connection_id, account_id, since=since, until=until, dry_run=dry_run)
    if job_id is None:
        raise Refused(404, "not_found", "no such connection")
    return job_id
