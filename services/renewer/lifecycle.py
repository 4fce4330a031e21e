"""Lifecycle events from Graph (via mailsync.lifecycle.v1)."""

from __future__ import annotations

import logging
from typing import Any

from services.core.connections import NotConnected
from services.core.consuming import Record
from services.core.events import BadEvent, require_str
from services.core.graph.errors import GraphError
from services.renewer.subscriptions import RenewerDeps, ensure_one, renew_one

log = logging.getLogger(__name__)


async def handle_lifecycle(event: dict[str, Any], deps: RenewerDeps) -> None:
    """No transaction is open across the Graph calls: renew_one and ensure_one claim what they change."""
    connection_id = require_str(event, "connection_id")
    subscription_id = require_str(event, "subscription_id")
    kind = event.get("lifecycle_event")
    if kind == "reauthorizationRequired":
        if await deps.pool.fetchval("SELECT 1 FROM subscriptions WHERE subscription_id = $1", subscription_id):
            # PATCH with a fresh token reauthorizes and renews in one call; delivery paused meanwhile.
            await renew_one(deps, subscription_id, connection_id)
            await _catch_up(deps.pool, connection_id)
    elif kind == "subscriptionRemoved":
        await deps.pool.execute("DELETE FROM subscriptions WHERE subscription_id = $1", subscription_id)
        try:
            await ensure_one(deps, connection_id)
        except (NotConnected, GraphError) as exc:
            # ensure_subscriptions retries on the next tick.
            log.warning("could not recreate subscription", extra={"connection_id": connection_id,
                                                                   "error": type(exc).__name__})
        await _catch_up(deps.pool, connection_id)
    elif kind == "missed":
        await _catch_up(deps.pool, connection_id)
    else:
        raise BadEvent(f"unknown lifecycle_event {str(kind)[:40]!r}")


async def _catch_up(conn: Any, connection_id: str) -> None:
    """Mail that changed while push was paused or lost is found by a delta poll, run now."""
    await conn.execute("UPDATE mailbox_connections SET next_poll_at = now() WHERE connection_id = $1::uuid",
                       connection_id)


class LifecycleBatch:
    def __init__(self, deps: RenewerDeps) -> None:
        self._deps = deps

    async def __call__(self, records: list[Record]) -> list[tuple[Record, str]]:
        poison = []
        for record in records:
            try:
                await handle_lifecycle(record.value, self._deps)
            except BadEvent as exc:
                poison.append((record, str(exc)))
        return poison
