"""Late contacts: when the directory learns an address, alias or domain, recent mail that mentioned
it is decided again; new engagements are created and new contact links published."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from prometheus_client import Counter

from services.core import engagements, events
from services.core.directory_lookup import load_snapshot, owner_addresses
from services.core.domain import Decision, EmailAddress, MailboxOwner, MailMessage
from services.core.event_types import EngagementLinked, to_value
from services.core.kafka import Publisher
from services.core.mail_policy import load_policy
from services.core.matching import addresses_to_look_up, decide
from services.matcher.directory import DirectoryChange

log = logging.getLogger(__name__)

REMATCH_PAGE = 500
REMATCHED = Counter("mailsync_rematch_total", "Re-matching outcomes", ["outcome"])


def rebuild_message(row: asyncpg.Record) -> MailMessage:
    """The decision row holds every participant with its role: enough to decide again. It holds the subject
    only when the account's tier kept it, and never the body preview: mail that becomes an engagement through
    a late contact carries no preview (previews are read only for mail that matches when it arrives)."""
    by_role: dict[str, list[EmailAddress]] = {}
    for p in row["participants"]:
        by_role.setdefault(p["role"], []).append(EmailAddress(p["address"], p.get("name", "")))

    def first(role: str) -> EmailAddress | None:
        return by_role[role][0] if by_role.get(role) else None

    return MailMessage(
        message_id=row["message_id"], internet_message_id=row["internet_message_id"] or "",
        conversation_id=row["conversation_id"], subject=row["subject"] or "", folder=row["folder"] or "other",
        is_draft=False, received_at=row["occurred_at"], sent_at=row["occurred_at"], from_=first("from"),
        sender=first("sender"), to=tuple(by_role.get("to", ())), cc=tuple(by_role.get("cc", ())),
        bcc=tuple(by_role.get("bcc", ())), reply_to=tuple(by_role.get("reply_to", ())))


class Rematcher:
    def __init__(self, pool: asyncpg.Pool, publisher: Publisher, *, window: timedelta) -> None:
        self._pool = pool
        self._publisher = publisher
        self._window = window

    async def apply(self, change: DirectoryChange) -> None:
        if change.deleted_contact:
            await self._unlink(change.account_id, change.deleted_contact)
        if change.addresses or change.domains:
            await self._rematch(change)

    async def _rematch(self, change: DirectoryChange) -> None:
        created: list[str] = []
        known: dict[str, dict[str, Any]] = {}  # engagement.created of the rows this pass inserted
        linked: dict[str, list[str]] = {}
        async for row in self._candidates(change):
            outcome = await self._decide_again(row)
            if outcome is None:
                continue
            engagement_id, new_engagement, new_contacts, event = outcome
            if new_engagement:
                if engagement_id in created:
                    known.pop(engagement_id, None)  # another mailbox's copy too: rebuilt from the rows
                elif event is not None:
                    known[engagement_id] = event
                created.append(engagement_id)
            elif new_contacts:
                linked[engagement_id] = new_contacts
        if created:
            await engagements.publish_created(self._pool, self._publisher, sorted(set(created)), known=known)
            REMATCHED.labels("created").inc(len(set(created)))
        if linked:
            await self._publish_linked(sorted(linked))
            REMATCHED.labels("linked").inc(len(linked))

    async def _candidates(self, change: DirectoryChange) -> AsyncIterator[asyncpg.Record]:
        """The window's decisions that mention the change, a bounded page at a time (keyset order), so a
        directory record about a busy domain never loads 90 days of mail into memory at once."""
        after: tuple[Any, str, str] = (datetime.min.replace(tzinfo=UTC), "", "")
        while True:
            rows = await self._pool.fetch(
                """SELECT * FROM match_decisions
                    WHERE account_id = $1 AND decision IN ('not_matched', 'matched')
                      AND occurred_at > now() - $2::interval
                      AND (participant_addresses && $3::text[] OR participant_domains && $4::text[])
                      AND (occurred_at, user_id, message_key) > ($5, $6, $7)
                    ORDER BY occurred_at, user_id, message_key LIMIT $8""",
                change.account_id, self._window, sorted(change.addresses), sorted(change.domains), *after,
                REMATCH_PAGE)
            for row in rows:
                yield row
            if len(rows) < REMATCH_PAGE:
                return
            last = rows[-1]
            after = (last["occurred_at"], last["user_id"], last["message_key"])

    async def _decide_again(self, row: asyncpg.Record) -> tuple[str, bool, list[str], dict[str, Any] | None] | None:
        message = rebuild_message(row)
        connection = await self._pool.fetchrow(
            "SELECT mailbox_addresses, mailbox_address FROM mailbox_connections WHERE connection_id = $1",
            row["connection_id"])
        policy = await load_policy(self._pool, row["account_id"], row["user_id"])
        owner = MailboxOwner(row["user_id"], row["account_id"], await owner_addresses(
            self._pool, row["user_id"], tuple(connection["mailbox_addresses"]) if connection else ()),
            never_log=policy.never_log)
        snapshot = await load_snapshot(self._pool, row["account_id"], addresses_to_look_up(message, owner))
        # Headers were read (and automated mail excluded) when the mail arrived; excluded decisions are never
        # re-matched, so the rebuilt message needs no header verdict.
        result = decide(message, owner, replace(snapshot, exclude_automated=policy.exclude_automated))
        common: dict[str, Any] = {"account_id": row["account_id"], "user_id": row["user_id"],
                                  "connection_id": str(row["connection_id"]), "message": message, "result": result,
                                  "capture": policy.capture}
        async with self._pool.acquire() as conn, conn.transaction():
            if result.decision is not Decision.MATCHED:
                if row["decision"] != result.decision.value:
                    await engagements.record_decision(conn, **common, source=row["source"], engagement_id=None)
                return None
            engagement_id = engagements.engagement_id_for(row["account_id"], engagements.message_key(message))
            before = {r["contact_id"] for r in await conn.fetch(
                "SELECT contact_id FROM engagement_contacts WHERE engagement_id = $1::uuid", engagement_id)}
            stored = await engagements.store_engagement(
                conn, **common, source="rematch",
                mailbox_address=connection["mailbox_address"] if connection else None)
        new_contacts = sorted(set(result.contact_ids) - before)
        return stored.engagement_id, stored.needs_publish, new_contacts, stored.event

    async def _unlink(self, account_id: str, contact_id: str) -> None:
        rows = await self._pool.fetch(
            "DELETE FROM engagement_contacts WHERE contact_id = $1 AND account_id = $2 RETURNING engagement_id",
            contact_id, account_id)
        if rows:
            await self._publish_linked(sorted({str(r["engagement_id"]) for r in rows}))
            REMATCHED.labels("unlinked").inc(len(rows))

    async def _publish_linked(self, engagement_ids: list[str]) -> None:
        """engagement.linked carries the engagement's full, current contact list."""
        records = []
        for engagement_id in engagement_ids:
            row = await self._pool.fetchrow(
                """SELECT e.account_id, array(SELECT contact_id FROM engagement_contacts c
                          WHERE c.engagement_id = e.engagement_id ORDER BY contact_id) AS contact_ids
                     FROM engagements e WHERE e.engagement_id = $1::uuid""", engagement_id)
            contact_ids = list(row["contact_ids"])
            records.append((row["account_id"], to_value(EngagementLinked(
                engagement_id=engagement_id, account_id=row["account_id"], contact_ids=contact_ids,
                event_id=events.stable_event_id("engagement.linked", engagement_id, *contact_ids)))))
        await self._publisher.publish_many(events.ENGAGEMENTS, records)
