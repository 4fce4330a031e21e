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
from datetime import timedelta

from prometheus_client import Counter

from services.core.adapters.graph.errors import GraphError, NotFound
from services.core.adapters.store.subscriptions import PendingDeletion
from services.core.application.connections import NotConnected
from services.renewer.subscriptions import RenewerDeps

log = logging.getLogger(__name__)

PENDING_DELETIONS = Counter("mailsync_subscription_deletions_total", "Pending subscription deletions by outcome",
                            ["outcome"])
LEASE = timedelta(minutes=2)


async def forget_expired(deps: RenewerDeps) -> int:
    """Past its expiry Graph has dropped the subscription itself: nothing left to delete."""
    forgotten = await deps.subscriptions.forget_expired_deletions()
    PENDING_DELETIONS.labels("expired").inc(forgotten)
    return forgotten


STRAY_GRACE = timedelta(minutes=10)


async def wipe_stray_tokens(deps: RenewerDeps) -> int:
    """Backstop: a token refresh that was in flight when the user disconnected can store fresh tokens on the
    disconnected row after the wipe. Such tokens are never used (every caller checks the status) and are
    wiped here. The grace leaves alone a reconnect in progress (tokens stored just before `connected`)."""
    wiped = await deps.upkeep.wipe_stray_tokens(STRAY_GRACE)
    for connection_id in wiped:
        log.warning("tokens stored after a disconnect wiped", extra={"connection_id": connection_id})
    return len(wiped)


async def delete_claimed(deps: RenewerDeps, row: PendingDeletion) -> bool:
    """With the mailbox's current grant (a 401 gets one forced refresh, as every Graph call does)."""
    async def delete(token: str) -> None:
        with contextlib.suppress(NotFound):  # already gone
            await deps.graph.delete_subscription(token, row.graph_user_id, row.subscription_id)

    try:
        await deps.tokens.call(row.connection_id, delete)
    except NotConnected:
        await deps.subscriptions.release_deletion(row.subscription_id)
        return False
    except GraphError as exc:
        PENDING_DELETIONS.labels("failed").inc()
        await deps.subscriptions.deletion_failed(row.subscription_id, exc.classified.error_code)
        return False
    PENDING_DELETIONS.labels("deleted").inc()
    await deps.subscriptions.deletion_done(row.subscription_id)
    return True


async def clean_up_deletions(deps: RenewerDeps, *, limit: int = 20) -> int:
    """One maintenance pass; returns how many subscriptions were deleted at Graph. Never raises."""
    deleted = 0
    try:
        await forget_expired(deps)
        # A subscription created while its mailbox was being disconnected (a race with the renewer's
        # self-healing) is moved to pending deletion as well, so it is never renewed nor trusted.
        await deps.subscriptions.sweep_disconnected()
        await wipe_stray_tokens(deps)
        claimed = await deps.subscriptions.claim_deletions(limit, LEASE)
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
