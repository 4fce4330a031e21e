"""match_decisions: why each mailbox's copy of an email is (not) an engagement; what re-matching and diagnose
read back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

import asyncpg

from services.core.adapters.store.base import Repository


class DecisionRow(NamedTuple):
    user_id: str
    message_key: str
    account_id: str
    connection_id: str
    message_id: str
    internet_message_id: str | None
    decision: str
    reasons: list[dict[str, str]]
    folder: str
    direction: str
    participants: list[dict[str, str]]
    occurred_at: datetime
    engagement_id: str | None  # None keeps the engagement already recorded
    source: str
    subject: str | None  # only when the account's tier keeps subjects
    conversation_id: str
    participant_addresses: list[str]
    participant_domains: list[str]


class UnseenRow(NamedTuple):
    user_id: str
    message_key: str
    account_id: str
    connection_id: str
    message_id: str
    reasons: list[dict[str, str]]
    source: str


class Position(NamedTuple):
    """Where a page of decisions ended (their keyset order)."""

    occurred_at: datetime
    user_id: str
    message_key: str


_DECISION = """INSERT INTO match_decisions (user_id, message_key, account_id, connection_id, message_id,
                  internet_message_id, decision, reasons, folder, direction, participants, occurred_at,
                  engagement_id, source, subject, conversation_id, participant_addresses, participant_domains)
           VALUES ($1, $2, $3, $4::uuid, $5, $6, $7, $8, $9, $10, $11, $12, $13::uuid, $14, $15, $16, $17, $18)
           ON CONFLICT (user_id, message_key) DO UPDATE SET message_id = $5, decision = $7, reasons = $8,
                  folder = $9, direction = $10, participants = $11, occurred_at = $12,
                  engagement_id = coalesce($13::uuid, match_decisions.engagement_id), source = $14,
                  subject = $15, conversation_id = $16, participant_addresses = $17, participant_domains = $18,
                  decided_at = now()"""
_UNSEEN = """INSERT INTO match_decisions (user_id, message_key, account_id, connection_id, message_id,
                  decision, reasons, source)
           VALUES ($1, $2, $3, $4::uuid, $5, 'not_seen', $6, $7)
           ON CONFLICT (user_id, message_key) DO UPDATE SET reasons = $6, decided_at = now()"""


class MatchDecisions(Repository):
    async def record(self, rows: Sequence[DecisionRow]) -> None:
        """In one round trip; rows in key order (see services/core/adapters/store/engagement/engagements.py)."""
        if rows:
            await self._db.executemany(_DECISION, rows)

    async def record_unseen(self, rows: Sequence[UnseenRow]) -> None:
        if rows:
            await self._db.executemany(_UNSEEN, rows)

    async def mentioning(self, account_id: str, *, window: timedelta, addresses: Sequence[str],
                         domains: Sequence[str], after: Position, limit: int) -> list[asyncpg.Record]:
        """Matched and not-matched decisions of the window whose participants include one of the addresses or
        domains, a page in keyset order after `after`."""
        rows: list[asyncpg.Record] = await self._db.fetch(
            """SELECT * FROM match_decisions
                WHERE account_id = $1 AND decision IN ('not_matched', 'matched')
                  AND occurred_at > now() - $2::interval
                  AND (participant_addresses && $3::text[] OR participant_domains && $4::text[])
                  AND (occurred_at, user_id, message_key) > ($5, $6, $7)
                ORDER BY occurred_at, user_id, message_key LIMIT $8""",
            account_id, window, list(addresses), list(domains), *after, limit)
        return rows

    async def of_message(self, user_id: str, account_id: str, message_key: str) -> asyncpg.Record | None:
        """The stored decision as diagnose explains it."""
        row: asyncpg.Record | None = await self._db.fetchrow(
            "SELECT decision, reasons, folder, engagement_id, decided_at, source FROM match_decisions"
            " WHERE user_id = $1 AND account_id = $2 AND message_key = $3", user_id, account_id, message_key)
        return row

