"""notices: one row per incident (a connection that needs its user or an administrator), opened and closed
inside the status change's transaction, reminded about by the renewer."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from services.core.adapters.store.base import Repository
from services.core.domain.notices import Incident

_COLUMNS = ("notice_id, connection_id, user_id, account_id, status, reason, error_code, opened_at, "
            "last_notified_at, reminders, resolved_at")


class Notices(Repository):
    async def open_incident(self, connection_id: object) -> Incident | None:
        row = await self._db.fetchrow(
            "SELECT notice_id, opened_at, last_notified_at FROM notices"
            " WHERE connection_id = $1 AND resolved_at IS NULL", connection_id)
        return Incident(str(row["notice_id"]), row["opened_at"], row["last_notified_at"]) if row else None

    async def open(self, connection_id: object, user_id: str, account_id: str, status: str, reason: str | None,
                   error_code: str | None) -> asyncpg.Record:
        """A new incident; the whole row (its event is built from it)."""
        row: asyncpg.Record = await self._db.fetchrow(
            f"""INSERT INTO notices (connection_id, user_id, account_id, status, reason, error_code)
                VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_COLUMNS}""",  # noqa: S608
            connection_id, user_id, account_id, status, reason, error_code)
        return row

    async def update(self, notice_id: str, status: str, reason: str | None, error_code: str | None) -> None:
        """What is true now (reminders carry it); the incident and its `since` stay the same."""
        await self._db.execute("UPDATE notices SET status = $2, reason = $3, error_code = $4"
                               " WHERE notice_id = $1::uuid", notice_id, status, reason, error_code)

    async def resolve(self, notice_id: str) -> asyncpg.Record:
        row: asyncpg.Record = await self._db.fetchrow(
            f"UPDATE notices SET resolved_at = now() WHERE notice_id = $1::uuid RETURNING {_COLUMNS}",  # noqa: S608
            notice_id)
        return row

    async def due_reminders(self, notified_before: datetime, limit: int = 500) -> list[asyncpg.Record]:
        """Open incidents last told about before `notified_before`, the longest-waiting first."""
        rows: list[asyncpg.Record] = await self._db.fetch(
            "SELECT notice_id, user_id, opened_at, last_notified_at, reminders FROM notices"
            " WHERE resolved_at IS NULL AND last_notified_at <= $1 ORDER BY last_notified_at LIMIT $2",
            notified_before, limit)
        return rows

    async def record_reminder(self, incident: Incident, at: datetime) -> asyncpg.Record | None:
        """The reminder counted, only if no other replica reminded meanwhile (the last_notified_at read is
        still there); the whole row, None when another did."""
        row: asyncpg.Record | None = await self._db.fetchrow(
            f"""UPDATE notices SET last_notified_at = $3, reminders = reminders + 1
                 WHERE notice_id = $1::uuid AND resolved_at IS NULL AND last_notified_at = $2
             RETURNING {_COLUMNS}""", incident.notice_id, incident.last_notified_at, at)  # noqa: S608
        return row
