"""The tenant-wide connection's status on Kafka: `tenant_connection.status` on mailsync.connection-status.v1,
keyed by tenant_connection_id (docs/asyncapi.yaml).

Each change writes its event to the outbox inside the transaction that makes it (`record`); the writer
publishes it after the commit (services/core/application/outbox.py publish_now), else the outbox relay does. The event
is built once, when the change is made, so a republish after a crash carries the same event_id.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.core.adapters.kafka import Publisher
from services.core.adapters.store.legacy_outboxes import LegacyTenantStatusOutbox
from services.core.adapters.store.outbox import Outbox
from services.core.application import outbox
from services.core.domain import events
from services.core.domain.event_types import TenantConnectionStatusChanged, to_value

LEGACY_BATCH = 500


def _event(row: asyncpg.Record | dict[str, Any], event_id: str, at: datetime) -> TenantConnectionStatusChanged:
    return TenantConnectionStatusChanged(
        tenant_connection_id=str(row["tenant_connection_id"]), account_id=row["account_id"],
        tenant_id=row["tenant_id"], status=row["status"], reason=row["reason"], error_code=row["error_code"],
        event_id=event_id, occurred_at=at.astimezone(UTC).isoformat().replace("+00:00", "Z"))


def status_event(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    """The event of a change already given its `event_id` and `created_at`."""
    return to_value(_event(row, str(row["event_id"]), row["created_at"]))


async def record(conn: asyncpg.Connection, row: asyncpg.Record | dict[str, Any]) -> list[int]:
    """Inside the caller's transaction, with the connection as the change left it (`row`: tenant_connection_id,
    account_id, tenant_id, status, reason, error_code): its event in the outbox. Returns the outbox ids, for
    publish_now after the commit."""
    event = _event(row, str(uuid.uuid4()), datetime.now(UTC))
    return await Outbox(conn).add([outbox.entry(events.CONNECTION_STATUS, event.tenant_connection_id, event)])


async def move_legacy(pool: asyncpg.Pool, publisher: Publisher | None) -> int:
    """Until the release that drops tenant_status_outbox: what pods of the previous release queued there and
    left unpublished moves into the outbox (event_id and time kept; a status the outbox already holds a later
    one of is dropped), then is published. Returns how many rows were taken."""
    async with pool.acquire() as conn, conn.transaction():
        legacy = LegacyTenantStatusOutbox(conn)
        rows = await legacy.take(LEGACY_BATCH, events.CONNECTION_STATUS)
        ids = await Outbox(conn).add([
            outbox.entry(events.CONNECTION_STATUS, str(r["tenant_connection_id"]),
                         _event(r, str(r["event_id"]), r["created_at"])) for r in rows if not r["superseded"]])
        await legacy.mark_moved([r["outbox_id"] for r in rows])
    await outbox.publish_now(pool, publisher, ids)
    return len(rows)
