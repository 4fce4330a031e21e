"""Refreshes access tokens ahead of expiry, so a revoked grant is noticed (and the user told)
within one refresh cycle even when no mail arrives."""

from __future__ import annotations

import logging
from datetime import timedelta

import asyncpg

from services.core.connections import REFRESH_AHEAD, NotConnected, TokenService
from services.core.graph.errors import GraphError

log = logging.getLogger(__name__)


async def refresh_due(pool: asyncpg.Pool, tokens: TokenService, *, tick: timedelta, limit: int = 100) -> int:
    """Refresh every connected mailbox whose token expires before the next tick plus the margin.

    TokenService claims a refresh lease and re-checks the expiry, so replicas running this at the same
    time refresh each mailbox once."""
    rows = await pool.fetch(
        """SELECT connection_id FROM mailbox_connections
            WHERE status = 'connected' AND access_expires_at < now() + $1::interval
            ORDER BY access_expires_at LIMIT $2""", REFRESH_AHEAD + tick * 2, limit)
    refreshed = 0
    for row in rows:
        try:
            await tokens.access_token(str(row["connection_id"]), force_refresh=True)
            refreshed += 1
        except NotConnected:
            continue  # the status change was recorded and published by the token service
        except GraphError as exc:
            log.warning("token refresh failed; will retry", extra={"connection_id": str(row["connection_id"]),
                                                                    "error_code": exc.classified.error_code})
        except Exception:
            # One mailbox's unexpected failure never stops the others' refreshes.
            log.exception("token refresh failed", extra={"connection_id": str(row["connection_id"])})
    return refreshed
