"""`mailsync purge-content --account ID`: trim what is stored to the account's current capture tier.

A new tier applies to mail decided from then on; an account that moves down a tier runs this to remove the
subjects and previews stored above it (engagements, and the subjects decisions keep for re-matching).
Bounded batches, each its own short transaction, so a large account never holds long row locks.
Events already published stay in Kafka's retention: the feed's consumers apply the tier on their side.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from services.core import capture
from services.core.capture import Capture

BATCH = 2000


@dataclass(frozen=True)
class Purged:
    account_id: str
    capture: Capture
    engagements: int  # rows whose subject and/or preview were removed
    decisions: int  # decision rows whose subject was removed


async def purge_content(pool: asyncpg.Pool, account_id: str, *, batch: int = BATCH) -> Purged:
    """Raises LookupError for an unknown account."""
    raw = await pool.fetchval("SELECT capture FROM accounts WHERE account_id = $1", account_id)
    if raw is None:
        raise LookupError(f"no account {account_id!r}")
    tier = capture.parse(raw)
    above = [c.value for c in Capture if c.level > tier.level]
    engagements = decisions = 0
    while above:
        done = await pool.execute(
            """UPDATE engagements SET subject = CASE WHEN $3 THEN subject END, preview = NULL, capture = $4
                WHERE engagement_id IN (SELECT engagement_id FROM engagements
                                         WHERE account_id = $1 AND capture = ANY($2::text[]) LIMIT $5)""",
            account_id, above, tier.keeps_subject(), tier.value, batch)
        count = int(done.split()[-1])
        engagements += count
        if count < batch:
            break
    while not tier.keeps_subject():
        done = await pool.execute(
            """UPDATE match_decisions SET subject = NULL
                WHERE (user_id, message_key) IN (SELECT user_id, message_key FROM match_decisions
                                                  WHERE account_id = $1 AND subject IS NOT NULL LIMIT $2)""",
            account_id, batch)
        count = int(done.split()[-1])
        decisions += count
        if count < batch:
            break
    return Purged(account_id, tier, engagements, decisions)
