"""The back-fill of a gap: what a (re)connect, a re-enrolment or a healed connection imports, so mail that
arrived while mailsync could not read the mailbox still becomes engagements."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.core.adapters.config import Settings
from services.core.adapters.store.jobs import SyncJobs


def backfill_since(settings: Settings, last_synced_at: datetime | None, now: datetime) -> datetime:
    """A first connection imports the last day; a reconnect imports the whole gap (up to a cap)."""
    since = last_synced_at if last_synced_at else now - timedelta(hours=settings.backfill_first_h)
    return max(since, now - timedelta(days=settings.backfill_cap_days))


async def queue_backfill(jobs: SyncJobs, settings: Settings, connection_id: str,
                         last_synced_at: datetime | None) -> None:
    """Inside the caller's transaction (the change that opens the gap's end)."""
    now = datetime.now(UTC)
    since = backfill_since(settings, last_synced_at, now)
    if since < now:
        await jobs.queue_backfill(connection_id, since, now)
