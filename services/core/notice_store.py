"""Notices in PostgreSQL: the incident rows and their outbox, written inside the status change's transaction
(services/core/connections.py StatusReporter.record); the renewer's relay publishes the outbox after the
commit (services/renewer/notices.py)."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.core import notices
from services.core.notices import Incident, Step


async def _open_incident(conn: asyncpg.Connection, connection_id: Any) -> Incident | None:
    # The caller's UPDATE of mailbox_connections holds the connection's row lock, so status changes of one
    # connection reach this point one at a time: no two incidents open for one connection.
    row = await conn.fetchrow(
        "SELECT notice_id, opened_at, last_notified_at FROM notices"
        " WHERE connection_id = $1 AND resolved_at IS NULL", connection_id)
    if row is None:
        return None
    return Incident(str(row["notice_id"]), row["opened_at"], row["last_notified_at"])


async def enqueue(conn: asyncpg.Connection, notice_id: str, user_id: str, kind: str, reminder: int = 0) -> None:
    await conn.execute(
        "INSERT INTO notice_outbox (notice_id, user_id, type, event_id) VALUES ($1::uuid, $2, $3, $4::uuid)"
        " ON CONFLICT (event_id) DO NOTHING", notice_id, user_id, kind, notices.event_id(kind, notice_id, reminder))


async def on_status_change(conn: asyncpg.Connection, row: asyncpg.Record | dict[str, Any]) -> Step:
    """Open, update or resolve the connection's incident for a status change just recorded in `conn`'s
    transaction (`row`: connection_id, user_id, account_id, status, reason, error_code)."""
    incident = await _open_incident(conn, row["connection_id"])
    step = notices.on_status_change(incident, row["status"])
    if step is Step.OPEN:
        notice_id = await conn.fetchval(
            """INSERT INTO notices (connection_id, user_id, account_id, status, reason, error_code)
               VALUES ($1, $2, $3, $4, $5, $6) RETURNING notice_id""",
            row["connection_id"], row["user_id"], row["account_id"], row["status"], row["reason"], row["error_code"])
        await enqueue(conn, str(notice_id), row["user_id"], notices.ACTION_REQUIRED)
    elif step is Step.UPDATE and incident is not None:
        # Reminders carry what is true now; the incident and its `since` stay the same.
        await conn.execute("UPDATE notices SET status = $2, reason = $3, error_code = $4 WHERE notice_id = $1::uuid",
                           incident.notice_id, row["status"], row["reason"], row["error_code"])
    elif step is Step.RESOLVE and incident is not None:
        await conn.execute("UPDATE notices SET resolved_at = now() WHERE notice_id = $1::uuid", incident.notice_id)
        await enqueue(conn, incident.notice_id, row["user_id"], notices.RESOLVED)
    return step
