"""Which notifications to trust: the subscription must exist (not pending deletion, its mailbox not
disconnected) and its stored clientState must match.

Lookups are cached per (tenant, subscription) so a burst of notifications costs one query; unknown
subscriptions are cached only briefly, because a subscription's row is written just after Graph
confirms it and its first notifications can race that write.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

import asyncpg

from services.core.adapters.store.subscriptions import Subscriptions


@dataclass(frozen=True)
class KnownSubscription:
    subscription_id: str
    connection_id: str
    account_id: str
    tenant_id: str
    client_state: str


class SubscriptionTrust:
    def __init__(self, pool: asyncpg.Pool, *, ttl_s: float = 60.0, negative_ttl_s: float = 1.0,
                 max_entries: int = 100_000) -> None:
        self._subscriptions = Subscriptions(pool)
        self._ttl = ttl_s
        self._negative_ttl = negative_ttl_s
        self._max = max_entries
        self._cache: dict[tuple[str, str], tuple[float, KnownSubscription | None]] = {}

    async def lookup(self, tenant_id: str, subscription_id: str) -> KnownSubscription | None:
        key = (tenant_id, subscription_id)
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        # Pending deletion or of a disconnected mailbox: not found (Subscriptions.live).
        row = await self._subscriptions.live(subscription_id)
        found = None
        if row is not None and (not row["tenant_id"] or row["tenant_id"] == tenant_id):
            found = KnownSubscription(row["subscription_id"], str(row["connection_id"]), row["account_id"],
                                      row["tenant_id"], row["client_state"])
        if len(self._cache) >= self._max:
            self._cache.clear()
        self._cache[key] = (now + (self._ttl if found else self._negative_ttl), found)
        return found

    def forget(self, subscription_id: str) -> None:
        for key in [k for k in self._cache if k[1] == subscription_id]:
            del self._cache[key]

    async def trusted(self, tenant_id: str, subscription_id: str, client_state: str) -> KnownSubscription | None:
        known = await self.lookup(tenant_id, subscription_id)
        if known is None:
            return None
        if not hmac.compare_digest(known.client_state.encode(), client_state.encode()):
            return None
        return known
