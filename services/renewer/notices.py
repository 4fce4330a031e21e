"""The renewer's side of notices: the daily reminders while an incident lasts (decisions in
services/core/domain/notices.py). Their events, like the status changes', go through the outbox."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg

from services.core.adapters.kafka import Publisher
from services.core.adapters.store.legacy_outboxes import LegacyNoticeOutbox
from services.core.adapters.store.notices import Notices
from services.core.adapters.store.outbox import Outbox
from services.core.application import notice_store, outbox, tenant_status
from services.core.domain import notices

log = logging.getLogger(__name__)

LEGACY_BATCH = 500


async def remind(pool: asyncpg.Pool, *, app_url: str, now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 every: timedelta = notices.REMINDER_EVERY, publisher: Publisher | None = None) -> int:
    """Queue a reminder for every open incident last told about a day ago, published after each commit when
    `publisher` is given (else by the outbox relay). `app_url`: Settings.app_url."""
    at = now()
    queued = 0
    for row in await Notices(pool).due_reminders(at - every):
        incident = notices.Incident(str(row["notice_id"]), row["opened_at"], row["last_notified_at"])
        if not notices.reminder_due(incident, at, every):
            continue
        async with pool.acquire() as conn, conn.transaction():
            reminded = await Notices(conn).record_reminder(incident, at)
            if reminded is None:
                continue
            event_id = notices.event_id(notices.REMINDER, incident.notice_id, reminded["reminders"])
            ids = await Outbox(conn).add([notice_store.event_entry(notices.REMINDER, event_id, reminded, app_url)])
        await outbox.publish_now(pool, publisher, ids)
        queued += 1
    return queued


async def move_legacy_notices(pool: asyncpg.Pool, publisher: Publisher | None, app_url: str) -> int:
    """Until the release that drops notice_outbox: what pods of the previous release queued there and left
    unpublished moves into the outbox (its event ids kept), then is published. Returns how many moved."""
    async with pool.acquire() as conn, conn.transaction():
        legacy = LegacyNoticeOutbox(conn)
        rows = await legacy.take(LEGACY_BATCH)
        ids = await Outbox(conn).add([notice_store.event_entry(r["type"], r["event_id"], r, app_url) for r in rows])
        await legacy.mark_moved([r["outbox_id"] for r in rows])
    await outbox.publish_now(pool, publisher, ids)
    return len(rows)


async def move_legacy_outboxes(pool: asyncpg.Pool, publisher: Publisher | None, app_url: str) -> int:
    """Both legacy outboxes (notices, tenant connection statuses) into the outbox; see move_legacy_notices."""
    return await move_legacy_notices(pool, publisher, app_url) + await tenant_status.move_legacy(pool, publisher)

