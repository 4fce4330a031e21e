"""The mail content an account's capture tier allows to be stored: the trims of `mailsync purge-content` over
engagements (subject, preview) and match_decisions (the subject kept for re-matching)."""

from __future__ import annotations

from collections.abc import Sequence

from services.core.adapters.store.base import Repository
from services.core.domain.capture import Capture


def _count(status: str) -> int:
    """Rows an UPDATE changed, from asyncpg's status ('UPDATE 12')."""
    return int(status.split()[-1])


class StoredContent(Repository):
    async def trim_engagements(self, account_id: str, above: Sequence[str], tier: Capture, limit: int) -> int:
        """Up to `limit` of the account's engagements stored under a tier in `above` are trimmed to `tier`
        (the preview dropped, the subject too unless the tier keeps it); returns how many."""
        status = await self._db.execute(
            """UPDATE engagements SET subject = CASE WHEN $3 THEN subject END, preview = NULL, capture = $4
                WHERE engagement_id IN (SELECT engagement_id FROM engagements
                                         WHERE account_id = $1 AND capture = ANY($2::text[]) LIMIT $5)""",
            account_id, list(above), tier.keeps_subject(), tier.value, limit)
        return _count(status)

    async def drop_decision_subjects(self, account_id: str, limit: int) -> int:
        """Up to `limit` of the account's decisions lose their subject; returns how many."""
        status = await self._db.execute(
            """UPDATE match_decisions SET subject = NULL
                WHERE (user_id, message_key) IN (SELECT user_id, message_key FROM match_decisions
                                                  WHERE account_id = $1 AND subject IS NOT NULL LIMIT $2)""",
            account_id, limit)
        return _count(status)
