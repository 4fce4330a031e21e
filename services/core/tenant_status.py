"""The tenant-wide connection's status on Kafka: `tenant_connection.status` on mailsync.connection-status.v1,
keyed by tenant_connection_id (docs/asyncapi.yaml).

Each change is written to `tenant_status_outbox` inside the transaction that makes it (`queue`), then
published after the commit: at once by the writer when it can (`announce`), else by the renewer's relay on
its next tick. Claims take a short lease in their own statement, so no transaction is open while Kafka is
called; a crash after publishing and before the mark republishes the same event_id (consumers deduplicate).
"""

from __future__ import annotations

import logging
from datetime import UTC, timedelta
from typing import Any

import asyncpg
from prometheus_client import Counter

from services.core import events
from services.core.event_types import TenantConnectionStatusChanged, to_value
from services.core.kafka import Publisher, PublishError

log = logging.getLogger(__name__)

PUBLISHED = Counter("mailsync_tenant_status_published_total", "tenant_connection.status events published")
LEASE = timedelta(seconds=30)  # longer than one publish of a batch with its retries
BATCH = 100


async def queue(conn: asyncpg.Connection, tenant_connection_id: str) -> None:
    """Inside the caller's transaction, after it changed the row: what the tenant connection is now."""
    await conn.execute(
        """INSERT INTO tenant_status_outbox (tenant_connection_id, account_id, tenant_id, status, reason, error_code)
           SELECT tenant_connection_id, account_id, tenant_id, status, reason, error_code
             FROM tenant_connections WHERE tenant_connection_id = $1::uuid""", tenant_connection_id)


async def claim(pool: asyncpg.Pool, *, limit: int = BATCH) -> list[asyncpg.Record]:
    """Unpublished rows, oldest first, under a lease. A row whose tenant connection has an older row still
    unpublished under another lease waits, so one connection's statuses leave in the order written (the
    topic is compacted: the last one published must be the last one written)."""
    return list(await pool.fetch(
        """UPDATE tenant_status_outbox o SET lease_until = now() + $1::interval
            WHERE o.outbox_id IN (
                SELECT x.outbox_id FROM tenant_status_outbox x
                 WHERE x.published_at IS NULL AND (x.lease_until IS NULL OR x.lease_until < now())
                   AND NOT EXISTS (SELECT 1 FROM tenant_status_outbox y
                                    WHERE y.tenant_connection_id = x.tenant_connection_id
                                      AND y.published_at IS NULL AND y.outbox_id < x.outbox_id
                                      AND y.lease_until >= now())
                 ORDER BY x.outbox_id LIMIT $2 FOR UPDATE SKIP LOCKED)
        RETURNING o.outbox_id, o.tenant_connection_id, o.account_id, o.tenant_id, o.status, o.reason,
                  o.error_code, o.event_id, o.created_at""", LEASE, limit))


def status_event(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    return to_value(TenantConnectionStatusChanged(
        tenant_connection_id=str(row["tenant_connection_id"]), account_id=row["account_id"],
        tenant_id=row["tenant_id"], status=row["status"], reason=row["reason"], error_code=row["error_code"],
        event_id=str(row["event_id"]),
        occurred_at=row["created_at"].astimezone(UTC).isoformat().replace("+00:00", "Z")))


async def relay(pool: asyncpg.Pool, publisher: Publisher) -> int:
    """One pass: claim, publish (no transaction open), mark published. Returns how many were published."""
    claimed = await claim(pool)
    if not claimed:
        return 0
    records = [(str(row["tenant_connection_id"]), status_event(row)) for row in claimed]
    try:
        await publisher.publish_many(events.CONNECTION_STATUS, records)
    except Exception:
        # Let them go at once for the next pass rather than after the lease.
        await pool.execute("UPDATE tenant_status_outbox SET lease_until = NULL WHERE outbox_id = ANY($1::bigint[])",
                           [r["outbox_id"] for r in claimed])
        raise
    await pool.execute("UPDATE tenant_status_outbox SET published_at = now(), lease_until = NULL"
                       " WHERE outbox_id = ANY($1::bigint[])", [r["outbox_id"] for r in claimed])
    PUBLISHED.inc(len(records))
    return len(records)


async def announce(pool: asyncpg.Pool, publisher: Publisher | None) -> None:
    """Publish what was just committed, best effort: a failure leaves it to the renewer's relay."""
    if publisher is None:
        return
    try:
        await relay(pool, publisher)
    except (PublishError, OSError, asyncpg.PostgresError) as exc:
        log.warning("tenant status left to the relay", extra={"error": type(exc).__name__})
