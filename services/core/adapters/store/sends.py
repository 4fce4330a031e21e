"""sends: mail the application asked mailsync to send (the renewer's send worker makes the Graph call)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.core.adapters.store.base import Repository, in_scope

_SEND = """SELECT s.*, (SELECT e.engagement_id FROM engagements e WHERE e.account_id = s.account_id
                          AND e.send_id = s.send_id LIMIT 1) AS engagement_id
             FROM sends s WHERE {where} AND {scope}"""


class Sends(Repository):
    async def by_key(self, user_id: str, idempotency_key: str, account_id: str | None) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._db.fetchrow(
            _SEND.format(where="s.user_id = $1 AND s.idempotency_key = $2", scope=in_scope("s.account_id", 3)),
            user_id, idempotency_key, account_id)
        return row

    async def by_id(self, send_id: str, account_id: str | None) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._db.fetchrow(
            _SEND.format(where="s.send_id = $1::uuid", scope=in_scope("s.account_id", 2)), send_id, account_id)
        return row

    async def add(self, *, send_id: str, account_id: str, user_id: str, connection_id: Any, idempotency_key: str,
                  internet_message_id: str, to: list[str], cc: list[str], recipient_count: int, subject: str,
                  body: str, body_type: str) -> bool:
        """False when the same (user, key) is already stored (a concurrent request won)."""
        inserted = await self._db.fetchval(
            """INSERT INTO sends (send_id, account_id, user_id, connection_id, idempotency_key, internet_message_id,
                                  to_addresses, cc_addresses, recipient_count, subject, body, body_type)
               VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
               ON CONFLICT (user_id, idempotency_key) DO NOTHING RETURNING send_id""",
            send_id, account_id, user_id, connection_id, idempotency_key, internet_message_id, to, cc,
            recipient_count, subject, body, body_type)
        return inserted is not None

    async def id_for_key(self, user_id: str, idempotency_key: str) -> str:
        return str(await self._db.fetchval("SELECT send_id FROM sends WHERE user_id = $1 AND idempotency_key = $2",
                                           user_id, idempotency_key))

    # --- the send worker (services/renewer/sends.py): each statement its own short transaction, none across
    # the Graph call; an outcome (mark_sent, mark_failed) commits with its event in the outbox ---

    async def claim_due(self, lease: timedelta) -> asyncpg.Record | None:
        """One due send, leased to this worker, with the database's `db_now` (the worker's clock)."""
        row: asyncpg.Record | None = await self._db.fetchrow(
            """UPDATE sends SET lease_until = now() + $1::interval, updated_at = now()
                WHERE send_id = (SELECT send_id FROM sends
                                  WHERE status = 'queued' AND next_attempt_at <= now()
                                    AND (lease_until IS NULL OR lease_until < now())
                                  ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED)
            RETURNING *, now() AS db_now""", lease)
        return row

    async def start_attempt(self, send_id: str, lease: timedelta) -> bool:
        """In doubt from here on (committed before sendMail is called); False when the send is no longer
        queued."""
        started = await self._db.fetchval(
            """UPDATE sends SET in_doubt = true, attempts = attempts + 1, attempt_started_at = now(),
                      lease_until = now() + $2::interval, updated_at = now()
                WHERE send_id = $1::uuid AND status = 'queued' RETURNING true""", send_id, lease)
        return bool(started)

    async def retry_later(self, send_id: str, wait: timedelta, reason: str | None) -> None:
        """Still queued (and still in doubt if it was), tried again in `wait`."""
        await self._db.execute(
            """UPDATE sends SET next_attempt_at = now() + $2::interval, lease_until = NULL, error = $3,
                      updated_at = now() WHERE send_id = $1::uuid AND status = 'queued'""", send_id, wait, reason)

    async def wait_until(self, send_id: str, until: datetime | None, reason: str | None) -> None:
        await self._db.execute(
            """UPDATE sends SET next_attempt_at = $2, lease_until = NULL, error = $3, updated_at = now()
                WHERE send_id = $1::uuid AND status = 'queued'""", send_id, until, reason)

    async def mark_sent(self, send_id: str) -> asyncpg.Record | None:
        """The send as now stored, None when it was no longer queued (another worker concluded it). The body
        is not kept."""
        row: asyncpg.Record | None = await self._db.fetchrow(
            """UPDATE sends SET status = 'sent', in_doubt = false, error = NULL, body = NULL, lease_until = NULL,
                      sent_at = coalesce(attempt_started_at, now()), updated_at = now()
                WHERE send_id = $1::uuid AND status = 'queued' RETURNING *""", send_id)
        return row

    async def mark_failed(self, send_id: str, reason: str, *, in_doubt: bool | None) -> asyncpg.Record | None:
        """As mark_sent; `in_doubt` None keeps what is stored (an earlier attempt may have gone)."""
        row: asyncpg.Record | None = await self._db.fetchrow(
            """UPDATE sends SET status = 'failed', error = $2, body = NULL, lease_until = NULL, updated_at = now(),
                      in_doubt = coalesce($3, in_doubt)
                WHERE send_id = $1::uuid AND status = 'queued' RETURNING *""", send_id, reason, in_doubt)
        return row

    async def sending_last_day(self, connection_id: str, leaving_out: str) -> list[tuple[datetime, int]]:
        """(when, recipients) of the mailbox's sends of the last day, and of those in doubt (they may have
        gone), `leaving_out` left out, oldest first."""
        sent = await self._db.fetch(
            "SELECT sent_at, recipient_count FROM sends WHERE connection_id = $1::uuid"
            " AND sent_at > now() - interval '1 day' ORDER BY sent_at", connection_id)
        doubt = await self._db.fetch(
            "SELECT attempt_started_at, recipient_count FROM sends WHERE connection_id = $1::uuid AND in_doubt"
            " AND status = 'queued' AND attempt_started_at > now() - interval '1 day' AND send_id <> $2::uuid",
            connection_id, leaving_out)
        return sorted([(r["sent_at"], r["recipient_count"]) for r in sent]
                      + [(r["attempt_started_at"], r["recipient_count"]) for r in doubt])
