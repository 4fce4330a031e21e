"""The renewer's side of notices: the relay that publishes the outbox written with each status change, and
the daily reminders while an incident lasts (decisions in services/core/notices.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from prometheus_client import Counter

from services.core import events, notice_store, notices
from services.core.kafka import Publisher

log = logging.getLogger(__name__)

NOTICES = Counter("mailsync_notices_published_total", "Notices published on mailsync.notices.v1", ["type"])
LEASE = timedelta(seconds=30)  # longer than one publish of a batch with its retries
BATCH = 200


async def claim(pool: asyncpg.Pool, *, limit: int = BATCH) -> list[asyncpg.Record]:
    """Unpublished outbox rows, oldest first, under a lease (a short transaction, committed before publishing).
    A row whose user has an older row still unpublished under another replica's lease waits, so one
    person's notices (keyed by user_id) leave in the order they were written."""
    return list(await pool.fetch(
        """UPDATE notice_outbox o SET lease_until = now() + $1::interval
            WHERE o.outbox_id IN (
                SELECT x.outbox_id FROM notice_outbox x
                 WHERE x.published_at IS NULL AND (x.lease_until IS NULL OR x.lease_until < now())
                   AND NOT EXISTS (SELECT 1 FROM notice_outbox y WHERE y.user_id = x.user_id
                                      AND y.published_at IS NULL AND y.outbox_id < x.outbox_id
                                      AND y.lease_until >= now())
                 ORDER BY x.outbox_id LIMIT $2 FOR UPDATE SKIP LOCKED)
        RETURNING o.outbox_id, o.notice_id, o.type, o.event_id""", LEASE, limit))


async def _event(pool: asyncpg.Pool, outbox: asyncpg.Record, app_url: str) -> dict[str, Any] | None:
    row = await pool.fetchrow("SELECT * FROM notices WHERE notice_id = $1", outbox["notice_id"])
    if row is None:
        return None  # the connection was deleted with its notices (cascade)
    if outbox["type"] == notices.RESOLVED:
        return notices.resolved_event(str(outbox["event_id"]), dict(row))
    return notices.action_event(outbox["type"], str(outbox["event_id"]), dict(row), app_url)


async def relay(pool: asyncpg.Pool, publisher: Publisher, app_url: str) -> int:
    """One pass: claim, publish (no transaction open), mark published. A crash after publishing and before
    the mark republishes the same events with the same event ids when the lease lapses."""
    claimed = await claim(pool)
    if not claimed:
        return 0
    records: list[tuple[str, dict[str, Any]]] = []
    for outbox in claimed:
        event = await _event(pool, outbox, app_url)
        if event is not None:
            records.append((event["user_id"], event))
    await publisher.publish_many(events.NOTICES, records)
    await pool.execute("UPDATE notice_outbox SET published_at = now(), lease_until = NULL"
                       " WHERE outbox_id = ANY($1::bigint[])", [o["outbox_id"] for o in claimed])
    for _, event in records:
        NOTICES.labels(event["type"]).inc()
    return len(records)


async def remind(pool: asyncpg.Pool, *, now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 every: timedelta = notices.REMINDER_EVERY) -> int:
    """Queue a reminder for every open incident last told about a day ago (the relay publishes it)."""
    at = now()
    rows = await pool.fetch(
        "SELECT notice_id, user_id, opened_at, last_notified_at, reminders FROM notices"
        " WHERE resolved_at IS NULL AND last_notified_at <= $1 ORDER BY last_notified_at LIMIT 500", at - every)
    queued = 0
    for row in rows:
        incident = notices.Incident(str(row["notice_id"]), row["opened_at"], row["last_notified_at"])
        if not notices.reminder_due(incident, at, every):
            continue
        async with pool.acquire() as conn, conn.transaction():
            # Only if no other replica reminded meanwhile: the last_notified_at we read is still there.
            number = await conn.fetchval(
                """UPDATE notices SET last_notified_at = $3, reminders = reminders + 1
                    WHERE notice_id = $1::uuid AND resolved_at IS NULL AND last_notified_at = $2
                RETURNING reminders""", incident.notice_id, incident.last_notified_at, at)
            if number is None:
                continue
            await notice_store.enqueue(conn, incident.notice_id, row["user_id"], notices.REMINDER, number)
        queued += 1
    return queued
