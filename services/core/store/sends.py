"""sends: mail the application asked mailsync to send (the renewer's send worker makes the Graph call)."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.core.store.base import Repository, in_scope

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
