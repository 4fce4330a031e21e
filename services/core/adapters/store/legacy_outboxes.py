"""notice_outbox and tenant_status_outbox, the two outboxes the single one (outbox) replaced. Nothing writes
them any more once every pod runs this release; until the release that drops them, the renewer moves what
pods of the previous release left unpublished into the outbox (services/renewer/notices.py)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from services.core.adapters.store.base import Repository

# Rows an old relay holds under a lease stay its own; a row waits while an older row of its key is held so,
# so one key's events still leave in the order written.
_FREE = "x.published_at IS NULL AND (x.lease_until IS NULL OR x.lease_until < now())"


class LegacyNoticeOutbox(Repository):
    async def take(self, limit: int) -> list[asyncpg.Record]:
        """Inside the caller's transaction: unpublished rows with their notice, oldest first, locked."""
        rows: list[asyncpg.Record] = await self._db.fetch(
            f"""SELECT x.outbox_id, x.type, x.event_id::text, n.notice_id, n.connection_id, n.user_id, n.account_id,
                       n.status, n.reason, n.error_code, n.opened_at
                  FROM notice_outbox x JOIN notices n USING (notice_id)
                 WHERE {_FREE}
                   AND NOT EXISTS (SELECT 1 FROM notice_outbox y WHERE y.user_id = x.user_id
                                      AND y.published_at IS NULL AND y.outbox_id < x.outbox_id
                                      AND y.lease_until >= now())
                 ORDER BY x.outbox_id LIMIT $1 FOR UPDATE OF x SKIP LOCKED""", limit)  # noqa: S608
        return rows

    async def mark_moved(self, ids: Sequence[int]) -> None:
        await self._db.execute("UPDATE notice_outbox SET published_at = now(), lease_until = NULL"
                               " WHERE outbox_id = ANY($1::bigint[])", list(ids))


class LegacyTenantStatusOutbox(Repository):
    async def take(self, limit: int, topic: str) -> list[asyncpg.Record]:
        """Inside the caller's transaction: unpublished rows, oldest first, locked; `superseded` when the outbox
        already holds a later status of the same tenant connection on `topic` (compacted: the last one
        published must stay the last one written)."""
        rows: list[asyncpg.Record] = await self._db.fetch(
            f"""SELECT x.outbox_id, x.tenant_connection_id, x.account_id, x.tenant_id, x.status, x.reason,
                       x.error_code, x.event_id, x.created_at,
                       EXISTS (SELECT 1 FROM outbox o WHERE o.topic = $2
                                  AND o.key = x.tenant_connection_id::text AND o.created_at >= x.created_at)
                           AS superseded
                  FROM tenant_status_outbox x
                 WHERE {_FREE}
                   AND NOT EXISTS (SELECT 1 FROM tenant_status_outbox y
                                    WHERE y.tenant_connection_id = x.tenant_connection_id
                                      AND y.published_at IS NULL AND y.outbox_id < x.outbox_id
                                      AND y.lease_until >= now())
                 ORDER BY x.outbox_id LIMIT $1 FOR UPDATE OF x SKIP LOCKED""", limit, topic)  # noqa: S608
        return rows

    async def mark_moved(self, ids: Sequence[int]) -> None:
        await self._db.execute("UPDATE tenant_status_outbox SET published_at = now(), lease_until = NULL"
                               " WHERE outbox_id = ANY($1::bigint[])", list(ids))
