"""Refreshes access tokens ahead of expiry, so a revoked grant is noticed (and the user told)
within one refresh cycle even when no mail arrives."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import asyncpg

from services.core.adapters.graph.errors import GraphError
from services.core.adapters.store.mailbox.tokens import MailboxTokens
from services.core.application.connections import REFRESH_AHEAD, NotConnected, TokenService

log = logging.getLogger(__name__)

# Refreshes of different mailboxes are independent: a few at once keep a pass short when the identity
# platform answers in hundreds of milliseconds (serially, 100 refreshes at 200 ms took 20 s of every tick).
REFRESHES_IN_FLIGHT = 8


async def refresh_due(pool: asyncpg.Pool, tokens: TokenService, *, tick: timedelta, limit: int = 200) -> int:
    """Refresh every connected mailbox whose token expires before the next tick plus the margin; returns
    how many of them hold a fresh token now.

    A token something else refreshed after the SELECT (a poll or a renewal needing a fresh one, another
    replica) is taken as it is, not refreshed a second time; TokenService claims a refresh lease and
    re-checks the expiry, so replicas running this at the same time refresh each mailbox once."""
    horizon = REFRESH_AHEAD + tick * 2
    due = await MailboxTokens(pool).expiring(horizon, limit)
    gate = asyncio.Semaphore(REFRESHES_IN_FLIGHT)

    def beyond_horizon(expires_at: datetime) -> bool:
        return expires_at >= datetime.now(UTC) + horizon

    async def one(connection_id: str, seen: datetime) -> bool:
        async with gate:
            try:
                _, expires_at = await tokens.access_token_with_expiry(connection_id, accept=beyond_horizon)
                return expires_at != seen
            except NotConnected:
                return False  # the status change was recorded and published by the token service
            except GraphError as exc:
                log.warning("token refresh failed; will retry", extra={"connection_id": connection_id,
                                                                        "error_code": exc.classified.error_code})
            except Exception:
                # One mailbox's unexpected failure never stops the others' refreshes.
                log.exception("token refresh failed", extra={"connection_id": connection_id})
            return False

    done = await asyncio.gather(*(one(d.connection_id, d.access_expires_at) for d in due))
    return sum(done)
