"""`mailsync purge-content --account ID`: trim what is stored to the account's current capture tier.

A new tier applies to mail decided from then on; an account that moves down a tier runs this to remove the
subjects and previews stored above it (engagements, and the subjects decisions keep for re-matching).
Bounded batches, each its own short transaction, so a large account never holds long row locks.
Events already published stay in Kafka's retention: the feed's consumers apply the tier on their side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from services.core.adapters.store.engagement.content import StoredContent
from services.core.adapters.store.policy import AccountPolicies
from services.core.domain.capture import Capture

BATCH = 2000


@dataclass(frozen=True)
class Purged:
    account_id: str
    capture: Capture
    engagements: int  # rows whose subject and/or preview were removed
    decisions: int  # decision rows whose subject was removed


class CaptureTiers(Protocol):
    async def capture_of(self, account_id: str) -> Capture | None: ...


class ContentTrims(Protocol):
    async def trim_engagements(self, account_id: str, above: Sequence[str], tier: Capture, limit: int) -> int: ...
    async def drop_decision_subjects(self, account_id: str, limit: int) -> int: ...


async def purge_content(pool: asyncpg.Pool, account_id: str, *, batch: int = BATCH) -> Purged:
    """Raises LookupError for an unknown account."""
    return await trim_to_tier(AccountPolicies(pool), StoredContent(pool), account_id, batch=batch)


async def trim_to_tier(tiers: CaptureTiers, content: ContentTrims, account_id: str, *, batch: int = BATCH) -> Purged:
    """Each batch its own statement (autocommit on a pool). Raises LookupError for an unknown account."""
    tier = await tiers.capture_of(account_id)
    if tier is None:
        raise LookupError(f"no account {account_id!r}")
    above = [c.value for c in Capture if c.level > tier.level]
    engagements = decisions = 0
    while above:
        count = await content.trim_engagements(account_id, above, tier, batch)
        engagements += count
        if count < batch:
            break
    while not tier.keeps_subject():
        count = await content.drop_decision_subjects(account_id, batch)
        decisions += count
        if count < batch:
            break
    return Purged(account_id, tier, engagements, decisions)
