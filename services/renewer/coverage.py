"""Push coverage, watched: a gauge of connections whose mail the poll is finding instead of notifications,
and the connection's status reason saying so (still `connected`: mail arrives, up to an hour late)."""

from __future__ import annotations

import asyncpg
from prometheus_client import Gauge

from services.core.adapters.store.engagement.activity import Activity
from services.core.application.connections import StatusReporter
from services.core.application.coverage import DEGRADED_CODE, DEGRADED_REASON, WINDOW, Coverage
from services.core.domain.model import ConnectionStatus

PUSH_DEGRADED = Gauge("mailsync_push_degraded_connections",
                      "Connected mailboxes whose new mail the hourly poll found more than notifications did (24 h)")


async def watch_coverage(pool: asyncpg.Pool, status: StatusReporter) -> int:
    """One pass over the connected mailboxes; returns how many are degraded now."""
    rows = await Activity(pool).connected_push_coverage(WINDOW)
    degraded = 0
    for row in rows:
        now_degraded = Coverage(row["announced"], row["poll_only"]).degraded
        degraded += now_degraded
        marked = row["error_code"] == DEGRADED_CODE
        if now_degraded and not marked:
            await status.set_status(str(row["connection_id"]), ConnectionStatus.CONNECTED, DEGRADED_REASON,
                                    DEGRADED_CODE)
        elif marked and not now_degraded:
            await status.set_status(str(row["connection_id"]), ConnectionStatus.CONNECTED, None, None)
    PUSH_DEGRADED.set(degraded)
    return degraded
