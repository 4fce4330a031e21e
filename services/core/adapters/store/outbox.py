"""outbox: events written with the change that caused them, published after the commit
(services/core/application/outbox.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from services.core.adapters.store.base import Repository


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One record to publish: `value` is the exact record value, `event_id` the event's own id."""

    topic: str
    key: str
    event_id: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Claimed:
    outbox_id: int
    topic: str
    key: str
    value: bytes


# A row may go when no older row of its (topic, key) is still unpublished, unless that older row goes in the
# same claim (published first, in one ordered batch): one key's events leave in the order they were written
# (compacted topics keep the last one, so the last one published must be the last one written).
_CLAIM = """
    UPDATE outbox o SET lease_until = now() + $1::interval
     WHERE o.outbox_id IN (
           SELECT x.outbox_id FROM outbox x
            WHERE x.published_at IS NULL AND (x.lease_until IS NULL OR x.lease_until < now())
              AND {which}
              AND NOT EXISTS (SELECT 1 FROM outbox y
                               WHERE y.topic = x.topic AND y.key = x.key AND y.published_at IS NULL
                                 AND y.outbox_id < x.outbox_id AND (y.lease_until >= now() OR {outside_claim}))
            ORDER BY x.outbox_id LIMIT $2 FOR UPDATE SKIP LOCKED)
    RETURNING o.outbox_id, o.topic, o.key, o.value"""


class Outbox(Repository):
    async def add(self, entries: Sequence[OutboxEntry]) -> list[int]:
        """Inside the caller's transaction. An event already queued (same event_id) is not queued again."""
        if not entries:
            return []
        rows = await self._db.fetch(
            """INSERT INTO outbox (topic, key, event_id, value)
               SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::bytea[])
               ON CONFLICT (event_id) DO NOTHING RETURNING outbox_id""",
            [e.topic for e in entries], [e.key for e in entries], [e.event_id for e in entries],
            [e.value for e in entries])
        return sorted(int(r["outbox_id"]) for r in rows)

    async def claim(self, *, lease: timedelta, limit: int, older_than: timedelta) -> list[Claimed]:
        """The relay's claim: rows left unpublished for `older_than` (their writer's own publish failed or
        never ran), oldest first, under a lease."""
        sql = _CLAIM.format(which="x.created_at < now() - $3::interval",
                            outside_claim="y.created_at >= now() - $3::interval")
        return _claimed(await self._db.fetch(sql, lease, limit, older_than))

    async def claim_ids(self, ids: Sequence[int], *, lease: timedelta) -> list[Claimed]:
        """The writer's claim of what it just committed; a row with an older unpublished row of its key outside
        `ids` is left to the relay."""
        sql = _CLAIM.format(which="x.outbox_id = ANY($3::bigint[])",
                            outside_claim="NOT (y.outbox_id = ANY($3::bigint[]))")
        return _claimed(await self._db.fetch(sql, lease, len(ids), list(ids)))

    async def still_unpublished(self, ids: Sequence[int]) -> list[int]:
        if not ids:
            return []
        rows = await self._db.fetch("SELECT outbox_id FROM outbox WHERE outbox_id = ANY($1::bigint[])"
                                    " AND published_at IS NULL ORDER BY outbox_id", list(ids))
        return [int(r["outbox_id"]) for r in rows]

    async def mark_published(self, ids: Sequence[int]) -> None:
        await self._db.execute("UPDATE outbox SET published_at = now(), lease_until = NULL"
                               " WHERE outbox_id = ANY($1::bigint[])", list(ids))

    async def release(self, ids: Sequence[int]) -> None:
        """A publish failed: the rows may go again at once rather than after the lease."""
        await self._db.execute("UPDATE outbox SET lease_until = NULL WHERE outbox_id = ANY($1::bigint[])"
                               " AND published_at IS NULL", list(ids))

    async def purge_published(self, *, older_than: timedelta, limit: int) -> int:
        deleted = await self._db.fetchval(
            """WITH gone AS (DELETE FROM outbox WHERE outbox_id IN (
                   SELECT outbox_id FROM outbox WHERE published_at < now() - $1::interval LIMIT $2)
                 RETURNING 1) SELECT count(*) FROM gone""", older_than, limit)
        return int(deleted or 0)

    async def unpublished(self) -> int:
        return int(await self._db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") or 0)


def _claimed(rows: Sequence[object]) -> list[Claimed]:
    found = [Claimed(int(r["outbox_id"]), r["topic"], r["key"], bytes(r["value"]))  # type: ignore[index]
             for r in rows]
    return sorted(found, key=lambda c: c.outbox_id)
