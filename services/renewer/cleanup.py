"""Subscriptions pending deletion (left by a disconnect that Graph did not confirm): deleted at Graph once
the mailbox has a usable grant again, forgotten once past their expiry at Graph. Never renewed: they are
no longer in `subscriptions`. Also the backstops of a disconnect's races: subscriptions created while it
ran, tokens a refresh in flight stored after it.

Claimed with a short lease transaction; the Graph call runs outside any transaction; one row's failure
never stops the others.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
from prometheus_client import Counter

from services.core.connections import NotConnected
from services.core.graph.errors import GraphError, NotFound
from services.core.subscriptions import deletion_done, deletion_failed
from services.renewer.subscriptions import RenewerDeps

log = logging.getLogger(__name__)

PENDING_DELETIONS = Counter("mailsync_subscription_deletions_total", "Pending subscription deletions by outcome",
                            ["outcome"])
LEASE = timedelta(minutes=2)


@dataclass(frozen=True)
class Claimed:
    subscription_id: str
    connection_id: str
    graph_user_id: str


async def forget_expired(pool: asyncpg.Pool) -> int:
    """Past its expiry Graph has dropped the subscription itself: nothing left to delete."""
    rows = await pool.fetch("DELETE FROM subscription_deletions WHERE expires_at <= now() RETURNING 1")
    PENDING_DELETIONS.labels("expired").inc(len(rows))
    return len(rows)


async def sweep_disconnected(pool: asyncpg.Pool) -> int:
    """A subscription created while its mailbox was being disconnected (a race with the renewer's
    self-healing) is moved to pending deletion as well, so it is never renewed nor trusted."""
    rows = await pool.fetch(
        """WITH gone AS (DELETE FROM subscriptions s USING mailbox_connections c
                          WHERE c.connection_id = s.connection_id AND c.status = 'disconnected'
                         RETURNING s.subscription_id, s.connection_id, s.account_id, s.resource, s.expires_at,
                                   coalesce(c.graph_user_id, '') AS graph_user_id)
           INSERT INTO subscription_deletions (subscription_id, connection_id, account_id, graph_user_id,
                                               resource, expires_at)
           SELECT subscription_id, connection_id, account_id, graph_user_id, resource, expires_at FROM gone
           ON CONFLICT (subscription_id) DO NOTHING RETURNING 1""")
    return len(rows)


STRAY_GRACE = timedelta(minutes=10)


async def wipe_stray_tokens(pool: asyncpg.Pool) -> int:
    """Backstop: a token refresh that was in flight when the user disconnected can store fresh tokens on the
    disconnected row after the wipe. Such tokens are never used (every caller checks the status) and are
    wiped here. The grace leaves alone a reconnect in progress (tokens stored just before `connected`)."""
    rows = await pool.fetch(
        """UPDATE mailbox_connections SET access_token_enc = NULL, refresh_token_enc = NULL, access_expires_at = NULL
            WHERE status = 'disconnected' AND (access_token_enc IS NOT NULL OR refresh_token_enc IS NOT NULL)
              AND updated_at < now() - $1::interval
        RETURNING connection_id""", STRAY_GRACE)
    for row in rows:
        log.warning("tokens stored after a disconnect wiped", extra={"connection_id": str(row["connection_id"])})
    return len(rows)


async def claim(pool: asyncpg.Pool, *, limit: int) -> list[Claimed]:
    """Pending rows whose mailbox is connected again (same Graph user): the new grant may delete them."""
    rows = await pool.fetch(
        """UPDATE subscription_deletions d SET lease_until = now() + $2::interval
            WHERE d.subscription_id IN (
                  SELECT p.subscription_id FROM subscription_deletions p
                    JOIN mailbox_connections c ON c.connection_id = p.connection_id
                   WHERE c.status = 'connected' AND c.graph_user_id = p.graph_user_id
                     AND p.next_attempt_at <= now() AND (p.lease_until IS NULL OR p.lease_until < now())
                   ORDER BY p.next_attempt_at LIMIT $1 FOR UPDATE OF p SKIP LOCKED)
        RETURNING d.subscription_id, d.connection_id, d.graph_user_id""", limit, LEASE)
    return [Claimed(r["subscription_id"], str(r["connection_id"]), r["graph_user_id"]) for r in rows]


async def delete_claimed(deps: RenewerDeps, row: Claimed) -> bool:
    """With the mailbox's current grant (a 401 gets one forced refresh, as every Graph call does)."""
    async def delete(token: str) -> None:
        with contextlib.suppress(NotFound):  # already gone
            await deps.graph.delete_subscription(token, row.graph_user_id, row.subscription_id)

    try:
        await deps.tokens.call(row.connection_id, delete)
    except NotConnected:
        await deps.pool.execute("UPDATE subscription_deletions SET lease_until = NULL WHERE subscription_id = $1",
                                row.subscription_id)
        return False
    except GraphError as exc:
        PENDING_DELETIONS.labels("failed").inc()
        await deletion_failed(deps.pool, row.subscription_id, exc.classified.error_code)
        return False
    PENDING_DELETIONS.labels("deleted").inc()
    await deletion_done(deps.pool, row.subscription_id)
    return True


async def clean_up_deletions(deps: RenewerDeps, *, limit: int = 20) -> int:
    """One maintenance pass; returns how many subscriptions were deleted at Graph. Never raises."""
    deleted = 0
    try:
        await forget_expired(deps.pool)
        await sweep_disconnected(deps.pool)
        await wipe_stray_tokens(deps.pool)
        claimed = await claim(deps.pool, limit=limit)
    except Exception:
        log.exception("pending subscription deletions: pass skipped")
        return 0
    for row in claimed:
        try:
            deleted += await delete_claimed(deps, row)
        except Exception:
            # e.g. a token that cannot be decrypted: this row waits for its lease to run out, the others go on.
            log.exception("pending subscription deletion failed", extra={"subscription_id": row.subscription_id})
    return deleted
