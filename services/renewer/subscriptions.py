"""Keeps subscriptions alive: renew ahead of expiry (claimed with leases), recreate what Graph lost."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge

from services.core.adapters.config import Settings
from services.core.adapters.graph.client import GraphClient
from services.core.adapters.graph.errors import GraphError, NotFound
from services.core.adapters.store.mailbox.connections import MailboxConnections
from services.core.adapters.store.mailbox.upkeep import ConnectionUpkeep
from services.core.adapters.store.subscriptions import RenewalClaim, Subscriptions
from services.core.application.connections import NotConnected, TokenService, get_connection
from services.core.application.subscriptions import (
    create_mailbox_subscription,
    expiry_iso,
    parse_graph_time,
    subscribing,
)

log = logging.getLogger(__name__)

RENEWALS = Counter("mailsync_subscription_renewals_total", "Subscription renewals by outcome", ["outcome"])
EXPIRING_SOON = Gauge("mailsync_subscriptions_expiring_soon", "Subscriptions inside the renewal window")
RENEW_LEASE = timedelta(minutes=5)  # longer than a renewal's calls with their retries
RETRY_FAILED_RENEWAL = timedelta(seconds=30)
RENEWALS_IN_FLIGHT = 8
CONNECTIONS = Gauge("mailsync_connections", "Mailbox connections by status", ["status"])


@dataclass
class RenewerDeps:
    pool: asyncpg.Pool
    graph: GraphClient
    tokens: TokenService
    settings: Settings
    # The repositories the renewer's passes use, on the pool (one short statement each, never a transaction
    # around a Graph call); a unit test puts in-memory fakes in their place.
    subscriptions: Subscriptions = field(init=False)
    connections: MailboxConnections = field(init=False)
    upkeep: ConnectionUpkeep = field(init=False)

    def __post_init__(self) -> None:
        self.subscriptions = Subscriptions(self.pool)
        self.connections = MailboxConnections(self.pool)
        self.upkeep = ConnectionUpkeep(self.pool)


# Renew or create one mailbox's subscription (renew_one, ensure_one; a unit test passes its own).
Renew = Callable[["RenewerDeps", str, str], Awaitable[bool]]
Ensure = Callable[["RenewerDeps", str], Awaitable[bool]]


def renew_window(lifetime_min: int) -> timedelta:
    """Renew when a third of the lifetime is left, so two failed attempts still leave time."""
    return timedelta(minutes=max(15, lifetime_min // 3))


async def renew_due(deps: RenewerDeps, *, limit: int = 50) -> int:
    """Renew subscriptions inside the window. Each is claimed with a lease in one short statement, so
    replicas never renew the same one and no transaction stays open across the Graph calls; a failure
    is isolated to its subscription. Rounds of RENEWALS_IN_FLIGHT run at once, so one mailbox Graph
    throttles (Retry-After, retries) never holds the others back, and each round fits in its lease."""
    window = renew_window(deps.settings.subscription_lifetime_min)
    EXPIRING_SOON.set(await deps.subscriptions.count_expiring(window))
    renewed = 0
    while limit > 0:
        claimed = await deps.subscriptions.claim_due(window, min(limit, RENEWALS_IN_FLIGHT), RENEW_LEASE)
        if not claimed:
            break
        limit -= len(claimed)
        renewed += sum(await asyncio.gather(*(_renew_claimed(deps, row) for row in claimed)))
    return renewed


async def _renew_claimed(deps: RenewerDeps, claim: RenewalClaim) -> bool:
    done = False
    try:
        done = await renew_one(deps, claim.subscription_id, claim.connection_id)
    except Exception:
        RENEWALS.labels("error").inc()
        log.exception("renewal failed", extra={"subscription_id": claim.subscription_id})
    finally:
        # A failed renewal waits a little before its next try, so the other due ones get their turn.
        await deps.subscriptions.release_renewal(claim.subscription_id,
                                                 timedelta(0) if done else RETRY_FAILED_RENEWAL)
    return done


# A PATCH reauthorizes the subscription until the expiry of the token it is sent with. A token that
# expires no later than the subscription's current authorization would change nothing (Graph would keep
# sending reauthorizationRequired), and one about to expire would buy little: either way refresh first.
PATCH_TOKEN_MIN_LIFETIME = timedelta(minutes=30)


def token_fresh_enough(token_expires_at: datetime, authorized_until: datetime | None, now: datetime) -> bool:
    """Pure: may a PATCH (or create) use this token, or must it be refreshed first?"""
    if token_expires_at < now + PATCH_TOKEN_MIN_LIFETIME:
        return False
    return authorized_until is None or token_expires_at > authorized_until


async def renew_one(deps: RenewerDeps, subscription_id: str, connection_id: str) -> bool:
    """PATCH a new expiry with a fresh token, which also reauthorizes the subscription until that token
    expires (stored as authorized_until); no transaction is open during the calls. A token Graph refuses
    (claims challenge) is refreshed with the challenge's claims by the token service, whose outcome
    decides the mailbox's status. A failed PATCH is recorded (reauth_failed_at) for the lifecycle
    handler's catch-up decision. Returns whether the subscription was renewed or recreated."""
    connection = await get_connection(deps.pool, connection_id)
    if connection is None or connection.graph_user_id is None or connection.status != "connected":
        return False
    user = connection.graph_user_id
    authorized_until = await deps.subscriptions.authorized_until(subscription_id)

    async def patch(token: str, token_expires_at: datetime) -> tuple[dict[str, Any], datetime]:
        # Jitter spreads renewals of subscriptions created together.
        minutes = deps.settings.subscription_lifetime_min - random.randint(0, 10)
        return await deps.graph.renew_subscription(token, user, subscription_id, expiry_iso(minutes)), \
            token_expires_at

    try:
        granted, token_expires_at = await deps.tokens.call_with_expiry(
            connection_id, patch,
            fresh=lambda expires_at: token_fresh_enough(expires_at, authorized_until, datetime.now(UTC)))
    except NotConnected:
        RENEWALS.labels("not_connected").inc()
        return False
    except NotFound:
        # Expired or removed at Graph: create a new one (ensure_one schedules the catch-up poll).
        await deps.subscriptions.forget(subscription_id)
        try:
            await ensure_one(deps, connection_id)
        except NotConnected:
            RENEWALS.labels("not_connected").inc()
            return False
        except GraphError as exc:
            # The mailbox has no subscription now: ensure_subscriptions tries again on a later tick.
            RENEWALS.labels("failed").inc()
            log.warning("subscription not recreated", extra={"connection_id": connection_id,
                                                              "error_code": exc.classified.error_code})
            return False
        RENEWALS.labels("recreated").inc()
        return True
    except GraphError as exc:
        RENEWALS.labels("failed").inc()
        log.warning("renewal failed", extra={"subscription_id": subscription_id,
                                              "error_code": exc.classified.error_code})
        await deps.subscriptions.renewal_failed(subscription_id)
        return False
    await deps.subscriptions.renewed(subscription_id, parse_graph_time(granted["expirationDateTime"]),
                                     token_expires_at)
    RENEWALS.labels("renewed").inc()
    return True


async def recreate(deps: RenewerDeps, connection_id: str) -> None:
    """Create the mailbox's subscription. A token Graph refuses on the way (after a password reset, with
    cp1 declared: a claims challenge) is refreshed once with the challenge's claims; when the grant is
    revoked that refresh fails, the token service records one status change (reconnect_required,
    AADSTS50173) and NotConnected is raised. ensure_subscriptions only looks at connected mailboxes, so
    nothing tries again until the user reconnects."""
    connection = await get_connection(deps.pool, connection_id)
    if connection is None or connection.graph_user_id is None or connection.status != "connected":
        return  # a mailbox that is not connected gets no subscription
    user = connection.graph_user_id

    async def create(token: str, token_expires_at: datetime) -> None:
        await create_mailbox_subscription(deps.pool, deps.graph, deps.settings, token=token,
                                          connection_id=connection_id, account_id=connection.account_id,
                                          tenant_id=connection.tenant_id or "", graph_user_id=user,
                                          token_expires_at=token_expires_at)

    await deps.tokens.call_with_expiry(
        connection_id, create, fresh=lambda expires_at: token_fresh_enough(expires_at, None, datetime.now(UTC)))


async def count_connections(pool: asyncpg.Pool) -> None:
    counts = await ConnectionUpkeep(pool).count_by_status()
    for status in ("never_connected", "connected", "reconnect_required", "consent_required", "disconnected"):
        CONNECTIONS.labels(status).set(counts.get(status, 0))


async def ensure_subscriptions(deps: RenewerDeps, *, limit: int = 20, ensure: Ensure | None = None) -> int:
    """Connected mailboxes without a live subscription (its creation failed, or Graph lost it) get one,
    and a catch-up poll for whatever arrived meanwhile. A failure is isolated to its mailbox.

    Only connected mailboxes are candidates: one whose grant was revoked (reconnect_required) is never
    tried again until the user reconnects. A connected one whose create keeps failing backs off (the
    first failure is retried on the next tick, later ones after 30 s, 90 s, ... at most an hour)."""
    ensure = ensure or ensure_one
    created = 0
    for connection_id in await deps.subscriptions.mailboxes_without_one(limit):
        try:
            created += await ensure(deps, connection_id)
        except NotConnected as exc:
            log.info("no subscription for a mailbox that is not connected",
                     extra={"connection_id": connection_id, "status": exc.status})
        except GraphError as exc:
            await deps.upkeep.subscribe_failed(connection_id)
            log.warning("could not create a subscription", extra={"connection_id": connection_id,
                                                                   "error_code": exc.classified.error_code})
        except Exception:
            await deps.upkeep.subscribe_failed(connection_id)
            log.exception("could not create a subscription", extra={"connection_id": connection_id})
    return created


async def ensure_one(deps: RenewerDeps, connection_id: str) -> bool:
    """Create the mailbox's subscription unless a live one exists; returns whether one was created.

    One replica at a time per mailbox, through a session advisory lock (no transaction, no row lock:
    creating the subscription may refresh the mailbox's token, which writes the connection row)."""
    async with subscribing(deps.pool, connection_id, wait=False) as mine:
        if not mine:
            return False  # another replica, or the connect flow, is on it
        if await deps.subscriptions.has_live(connection_id):
            return False  # created meanwhile
        await deps.subscriptions.forget_all_of(connection_id)
        await recreate(deps, connection_id)
        await deps.upkeep.subscribed(connection_id)
        RENEWALS.labels("created").inc()
        return True
