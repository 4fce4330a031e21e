"""subscriptions and subscription_deletions: the Graph change-notification subscriptions of each mailbox, and
those a disconnect left to delete at Graph. The renewer claims renewals and deletions here under leases (one
short statement each); the Graph calls run after, outside any transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from services.core.adapters.store.base import Repository


@dataclass(frozen=True)
class RenewalClaim:
    subscription_id: str
    connection_id: str


@dataclass(frozen=True)
class SubscriptionState:
    """What mailsync knew of a subscription when a reauthorizationRequired for it arrived."""

    expires_at: datetime  # the subscription's own expiry
    authorized_until: datetime | None  # expiry of the token it was created or last PATCHed with; None: unknown
    reauth_failed_at: datetime | None  # a PATCH of it failed since its last success


@dataclass(frozen=True)
class PendingDeletion:
    subscription_id: str
    connection_id: str
    graph_user_id: str


class Subscriptions(Repository):
    # --- as the API and the webhook's trust read them ---------------------------------------------------

    async def of_connection(self, connection_id: object, account_id: str) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._db.fetch(
            "SELECT subscription_id, resource, expires_at FROM subscriptions WHERE connection_id = $1"
            " AND account_id = $2 ORDER BY expires_at", connection_id, account_id)
        return rows

    async def pending_deletions(self, connection_id: object, account_id: str) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._db.fetch(
            "SELECT subscription_id, resource, expires_at, pending_since, attempts, last_error"
            " FROM subscription_deletions WHERE connection_id = $1 AND account_id = $2 ORDER BY pending_since",
            connection_id, account_id)
        return rows

    async def live(self, subscription_id: str) -> asyncpg.Record | None:
        """A subscription notifications may be trusted for: not pending deletion (moved to
        `subscription_deletions` by a disconnect) and its mailbox not disconnected (one created in a race
        with the disconnect is refused as well)."""
        row: asyncpg.Record | None = await self._db.fetchrow(
            "SELECT s.subscription_id, s.connection_id, s.account_id, s.tenant_id, s.client_state"
            " FROM subscriptions s JOIN mailbox_connections c ON c.connection_id = s.connection_id"
            " WHERE s.subscription_id = $1 AND c.status <> 'disconnected'", subscription_id)
        return row

    # --- created and forgotten --------------------------------------------------------------------------

    async def add(self, *, subscription_id: str, connection_id: str, account_id: str, tenant_id: str,
                  resource: str, client_state: str, expires_at: datetime,
                  authorized_until: datetime | None) -> None:
        await self._db.execute(
            """INSERT INTO subscriptions (subscription_id, connection_id, account_id, tenant_id, resource,
                                          client_state, expires_at, authorized_until)
               VALUES ($1, $2::uuid, $3, $4, $5, $6, $7, $8)""",
            subscription_id, connection_id, account_id, tenant_id, resource, client_state, expires_at,
            authorized_until)

    async def known(self, subscription_id: str) -> bool:
        return bool(await self._db.fetchval("SELECT 1 FROM subscriptions WHERE subscription_id = $1",
                                            subscription_id))

    async def ids_of_connection(self, connection_id: str) -> list[str]:
        rows = await self._db.fetch("SELECT subscription_id FROM subscriptions WHERE connection_id = $1::uuid",
                                    connection_id)
        return [str(r["subscription_id"]) for r in rows]

    async def has_live(self, connection_id: str) -> bool:
        """The mailbox has a subscription that has not expired."""
        return bool(await self._db.fetchval(
            "SELECT 1 FROM subscriptions WHERE connection_id = $1::uuid AND expires_at > now()", connection_id))

    async def forget(self, subscription_id: str) -> None:
        await self._db.execute("DELETE FROM subscriptions WHERE subscription_id = $1", subscription_id)

    async def forget_all_of(self, connection_id: str) -> None:
        """Every subscription of the mailbox (expired ones, before a new one is created)."""
        await self._db.execute("DELETE FROM subscriptions WHERE connection_id = $1::uuid", connection_id)

    async def mailboxes_without_one(self, limit: int) -> list[str]:
        """Connected mailboxes with no live subscription whose subscribe back-off is over, the least recently
        changed first."""
        rows = await self._db.fetch(
            """SELECT c.connection_id FROM mailbox_connections c
                WHERE c.status = 'connected' AND c.graph_user_id IS NOT NULL
                  AND (c.subscribe_retry_at IS NULL OR c.subscribe_retry_at <= now())
                  AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.connection_id = c.connection_id
                                   AND s.expires_at > now())
                ORDER BY c.updated_at LIMIT $1""", limit)
        return [str(r["connection_id"]) for r in rows]

    # --- renewals, under a lease ------------------------------------------------------------------------

    async def count_expiring(self, window: timedelta) -> int:
        return int(await self._db.fetchval(
            "SELECT count(*) FROM subscriptions WHERE expires_at < now() + $1::interval", window))

    async def claim_due(self, window: timedelta, limit: int, lease: timedelta) -> list[RenewalClaim]:
        """Subscriptions expiring inside `window`, soonest first, leased for `lease` (SKIP LOCKED: replicas
        claiming at once split them). Only connected mailboxes' subscriptions: the others can never be
        renewed, and claiming them first (they expire first) would starve the renewable ones behind them."""
        rows = await self._db.fetch(
            """UPDATE subscriptions s SET renew_lease_until = now() + $3::interval
                 FROM (SELECT s2.subscription_id FROM subscriptions s2
                         JOIN mailbox_connections c ON c.connection_id = s2.connection_id
                                                   AND c.status = 'connected'
                        WHERE s2.expires_at < now() + $1::interval
                          AND (s2.renew_lease_until IS NULL OR s2.renew_lease_until < now())
                        ORDER BY s2.expires_at LIMIT $2 FOR UPDATE OF s2 SKIP LOCKED) due
                WHERE s.subscription_id = due.subscription_id
            RETURNING s.subscription_id, s.connection_id""", window, limit, lease)
        return [RenewalClaim(str(r["subscription_id"]), str(r["connection_id"])) for r in rows]

    async def claim_renewal(self, subscription_id: str, lease: timedelta) -> bool:
        """The same lease for one subscription; False while another holds it."""
        return bool(await self._db.fetchval(
            """UPDATE subscriptions SET renew_lease_until = now() + $2::interval
                WHERE subscription_id = $1 AND (renew_lease_until IS NULL OR renew_lease_until < now())
            RETURNING true""", subscription_id, lease))

    async def release_renewal(self, subscription_id: str, hold: timedelta = timedelta(0)) -> None:
        """`hold` > 0 keeps it unclaimable that long (a failed renewal waits before its next try)."""
        await self._db.execute(
            "UPDATE subscriptions SET renew_lease_until = CASE WHEN $2::interval > interval '0' THEN now() + $2 END"
            " WHERE subscription_id = $1", subscription_id, hold)

    async def authorized_until(self, subscription_id: str) -> datetime | None:
        value: datetime | None = await self._db.fetchval(
            "SELECT authorized_until FROM subscriptions WHERE subscription_id = $1", subscription_id)
        return value

    async def renewal_state(self, subscription_id: str) -> SubscriptionState | None:
        row = await self._db.fetchrow(
            "SELECT expires_at, authorized_until, reauth_failed_at FROM subscriptions WHERE subscription_id = $1",
            subscription_id)
        if row is None:
            return None
        return SubscriptionState(row["expires_at"], row["authorized_until"], row["reauth_failed_at"])

    async def renewed(self, subscription_id: str, expires_at: datetime, authorized_until: datetime) -> None:
        """A PATCH succeeded: Graph's expiry and the token's, any earlier failure answered."""
        await self._db.execute(
            """UPDATE subscriptions SET expires_at = $2, renewed_at = now(), authorized_until = $3,
                      reauth_failed_at = NULL
                WHERE subscription_id = $1""", subscription_id, expires_at, authorized_until)

    async def renewal_failed(self, subscription_id: str) -> None:
        """The first failure since the last success is kept (the lifecycle handler's catch-up decision)."""
        await self._db.execute(
            "UPDATE subscriptions SET reauth_failed_at = coalesce(reauth_failed_at, now())"
            " WHERE subscription_id = $1", subscription_id)

    # --- pending deletion -------------------------------------------------------------------------------

    async def mark_for_deletion(self, connection_id: str) -> list[str]:
        """Inside the caller's transaction: every subscription of the connection becomes pending deletion."""
        rows = await self._db.fetch(
            """WITH gone AS (DELETE FROM subscriptions WHERE connection_id = $1::uuid
                             RETURNING subscription_id, connection_id, account_id, resource, expires_at)
               INSERT INTO subscription_deletions (subscription_id, connection_id, account_id, graph_user_id,
                                                   resource, expires_at)
               SELECT g.subscription_id, g.connection_id, g.account_id, coalesce(c.graph_user_id, ''),
                      g.resource, g.expires_at
                 FROM gone g JOIN mailbox_connections c ON c.connection_id = g.connection_id
               ON CONFLICT (subscription_id) DO NOTHING
               RETURNING subscription_id""", connection_id)
        return [str(r["subscription_id"]) for r in rows]

    async def sweep_disconnected(self) -> int:
        """Subscriptions of disconnected mailboxes (created in a race with the disconnect) become pending
        deletion too."""
        rows = await self._db.fetch(
            """WITH gone AS (DELETE FROM subscriptions s USING mailbox_connections c
                              WHERE c.connection_id = s.connection_id AND c.status = 'disconnected'
                             RETURNING s.subscription_id, s.connection_id, s.account_id, s.resource,
                                       s.expires_at, coalesce(c.graph_user_id, '') AS graph_user_id)
               INSERT INTO subscription_deletions (subscription_id, connection_id, account_id, graph_user_id,
                                                   resource, expires_at)
               SELECT subscription_id, connection_id, account_id, graph_user_id, resource, expires_at FROM gone
               ON CONFLICT (subscription_id) DO NOTHING RETURNING 1""")
        return len(rows)

    async def forget_expired_deletions(self) -> int:
        """Past its expiry Graph has dropped the subscription itself: nothing left to delete."""
        rows = await self._db.fetch("DELETE FROM subscription_deletions WHERE expires_at <= now() RETURNING 1")
        return len(rows)

    async def claim_deletions(self, limit: int, lease: timedelta) -> list[PendingDeletion]:
        """Pending rows whose mailbox is connected again (same Graph user), due, leased for `lease`."""
        rows = await self._db.fetch(
            """UPDATE subscription_deletions d SET lease_until = now() + $2::interval
                WHERE d.subscription_id IN (
                      SELECT p.subscription_id FROM subscription_deletions p
                        JOIN mailbox_connections c ON c.connection_id = p.connection_id
                       WHERE c.status = 'connected' AND c.graph_user_id = p.graph_user_id
                         AND p.next_attempt_at <= now() AND (p.lease_until IS NULL OR p.lease_until < now())
                       ORDER BY p.next_attempt_at LIMIT $1 FOR UPDATE OF p SKIP LOCKED)
            RETURNING d.subscription_id, d.connection_id, d.graph_user_id""", limit, lease)
        return [PendingDeletion(str(r["subscription_id"]), str(r["connection_id"]), str(r["graph_user_id"]))
                for r in rows]

    async def release_deletion(self, subscription_id: str) -> None:
        await self._db.execute("UPDATE subscription_deletions SET lease_until = NULL WHERE subscription_id = $1",
                               subscription_id)

    async def deletion_failed(self, subscription_id: str, error_code: str) -> None:
        """The first failure is retried as soon as a usable grant exists; later ones back off up to an hour."""
        await self._db.execute(
            """UPDATE subscription_deletions SET attempts = attempts + 1, last_error = $2, lease_until = NULL,
                      next_attempt_at = now() + least(interval '30 seconds'
                                                      * (power(2, least(attempts, 10)) - 1), interval '1 hour')
                WHERE subscription_id = $1""", subscription_id, error_code[:200])

    async def deletion_done(self, subscription_id: str) -> None:
        await self._db.execute("DELETE FROM subscription_deletions WHERE subscription_id = $1", subscription_id)

    # --- one writer of a mailbox's subscriptions at a time ----------------------------------------------

    async def lock_subscribing(self, connection_id: str, *, wait: bool) -> bool:
        """On a held connection, outside any transaction: the session advisory lock of the mailbox's
        subscribe (see services/core/subscriptions.subscribing). wait=False: False when another holds it."""
        key = _subscribe_key(connection_id)
        if wait:
            await self._db.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", key)
            return True
        return bool(await self._db.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", key))

    async def unlock_subscribing(self, connection_id: str) -> None:
        await self._db.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", _subscribe_key(connection_id))


def _subscribe_key(connection_id: str) -> str:
    return f"mailsync:subscribe:{connection_id}"
